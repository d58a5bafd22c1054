"""A generated folder edited by hand: every edit is one clear message naming the file, exit 2.

Each case compiles the MNIST-1D ensemble, makes one edit, and runs train.py's pipeline on it:
never a traceback, and nothing trained or written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mncompile.cli import main as cli_main
from mncompile.runtime.pipeline import main as pipeline_main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--data", "synthetic", "--train-size", "64", "--test-size", "32", "--epochs-scale", "0.02", "--quiet"]


def _widened(gen: Path) -> tuple[Path, dict, str]:
    """A member table with a map that adds units, and that map's name."""
    for path in sorted((gen / "hatch").glob("*.json")):
        table = json.loads(path.read_text())
        for name, m in table["maps"].items():
            if m["extra"]:
                return path, table, name
    raise AssertionError("no widening map")


def _map_index(gen: Path, value: int) -> str:
    path, table, name = _widened(gen)
    table["maps"][name]["extra"][0] = value
    path.write_text(json.dumps(table))
    return path.name


def _entry_shape(gen: Path) -> str:
    path, table, _ = _widened(gen)
    table["entries"][1]["shape"] = [7, 7]
    path.write_text(json.dumps(table))
    return path.name


def _models(gen: Path, edit: Callable[[str], str]) -> str:
    path = gen / "models.py"
    text = path.read_text()
    new = edit(text)
    assert new != text
    path.write_text(new)
    return "models.py"


def _width(text: str) -> str:
    # the first member class after the MotherNet: its first block one filter wider
    i = text.index("class C32w(")
    return text[:i] + re.sub(r"PlainBlock\(1, \[\(5, (\d+)\)\]\)",
                             lambda m: f"PlainBlock(1, [(5, {int(m.group(1)) + 1})])", text[i:], count=1)


def _classes(text: str) -> str:
    i = text.index("class C32w(")
    return text[:i] + re.sub(r"Head\((\d+), \[(\d+)\], 10\)", r"Head(\1, [\2], 11)", text[i:], count=1)


def _raising(text: str) -> str:
    i = text.index("class C24(")
    line = "        self.block1 = PlainBlock(1"
    return text[:i] + text[i:].replace(line, "        1 / 0\n" + line, 1)


EDITS: dict[str, tuple[Callable[[Path], str], str]] = {
    "map index out of range": (lambda g: _map_index(g, 999), "holds indices outside"),
    "negative map index": (lambda g: _map_index(g, -1), "holds indices outside"),
    "entry shape": (_entry_shape, "has shape (7, 7)"),
    "member width in models.py": (lambda g: _models(g, _width), "but models.py's 'c32w' has (33"),
    "class count in models.py": (lambda g: _models(g, _classes), "but models.py's 'c32w' has (11"),
    "syntax error in models.py": (lambda g: _models(g, lambda t: t + "\ndef broken(:\n"),
                                  "syntax error at line"),
    "models.py that raises": (lambda g: _models(g, lambda t: t + "\nraise RuntimeError('edited')\n"),
                              "fails when it is loaded: RuntimeError: edited"),
    "class that raises": (lambda g: _models(g, _raising), "building 'C24' fails: ZeroDivisionError"),
    "hatch table not JSON": (lambda g: (next((g / "hatch").glob("*.json")).write_text("{"), "hatch")[1],
                             "not valid JSON"),
    "plan.json damaged": (lambda g: ((g / "plan.json").write_text('{"members": 3}'), "plan.json")[1],
                          "plan.json"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_an_edited_folder_is_one_clear_message(case: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    gen = tmp_path / "gen"
    assert cli_main([str(ROOT / "examples" / "mnist1d.mnet"), "-o", str(gen)]) == 0
    edit, message = EDITS[case]
    named = edit(gen)
    capsys.readouterr()
    out = tmp_path / "out"
    defaults = {"ensemble": "mnist1d", "data": None, "train": {}}
    assert pipeline_main(gen, defaults, [*TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err and named in err, err
    assert not out.exists()
