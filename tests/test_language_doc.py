"""docs/language.md is real: its specs check, its errors and warnings are what mncompile prints.

Fenced blocks marked ```` ```mnet ```` must parse and check; ```` ```mnet exact ```` ones must
also hatch exactly with the default clustering; ```` ```mnet inexact ```` and
```` ```mnet error ```` ones are followed by a ```` ```text ```` block that must be exactly what
`mncompile check spec.mnet` prints on stderr (the warnings, or the error). The tables of train
keys and datasets must be the code's, and the links must lead somewhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from mncompile.api import loads
from mncompile.cli import main
from mncompile.commands.hatching import tables_for
from mncompile.diagnostics import MNError
from mncompile.fmt import format_net
from mncompile.formats.settings import DATASETS, TRAIN_DEFAULTS
from mncompile.passes.cluster import plan_ensemble
from mncompile.runtime.options import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "language.md"
TEXT = DOC.read_text(encoding="utf-8")
KINDS = ("mnet", "mnet exact", "mnet inexact", "mnet error")


@dataclass(frozen=True)
class Fence:
    info: str
    body: str
    line: int


def fences(text: str) -> list[Fence]:
    """Every fenced block: its info string, its text and the line its opening fence is on."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^```(.*)$", lines[i])
        if m is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"docs/language.md:{start + 1}: a fence that is never closed"
        out.append(Fence(m.group(1).strip(), "\n".join(body) + "\n", start + 1))
        i += 1
    return out


FENCES = fences(TEXT)
SPECS = [(k, f) for k, f in enumerate(FENCES) if f.info.startswith("mnet")]


def _id(case: tuple[int, Fence]) -> str:
    return f"line{case[1].line}-{case[1].info.replace(' ', '-')}"


def test_the_doc_has_examples_of_every_kind() -> None:
    kinds = [f.info for _, f in SPECS]
    assert set(kinds) == set(KINDS), set(kinds) ^ set(KINDS)
    assert kinds.count("mnet error") >= 15 and kinds.count("mnet inexact") >= 3


def test_every_whole_spec_on_the_page_is_a_checked_example() -> None:
    """A spec shown in a plain block would escape the checks below."""
    unchecked = [f.line for f in FENCES if not f.info.startswith("mnet")
                 and re.search(r"^\s*ensemble\s+\w+\s*\{", f.body, re.M)]
    assert unchecked == [], f"specs in blocks not marked ```mnet at lines {unchecked}"


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
           body: str) -> tuple[int, str, str]:
    (tmp_path / "spec.mnet").write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    rc = main(["check", "spec.mnet"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", SPECS, ids=[_id(c) for c in SPECS])
def test_each_example(case: tuple[int, Fence], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    k, fence = case
    if fence.info not in KINDS:
        pytest.fail(f"line {fence.line}: unknown block kind {fence.info!r}; use one of {KINDS}")
    where = f"docs/language.md:{fence.line}"
    if fence.info == "mnet error":
        with pytest.raises(MNError):
            loads(fence.body, "spec.mnet")
    else:
        e = loads(fence.body, "spec.mnet")
        tables = tables_for(e)
        inexact = {m: t.reasons for m, t in tables.items() if not t.exact}
        if fence.info == "mnet exact":
            assert inexact == {}, f"{where}: marked exact, but {inexact}"
        if fence.info == "mnet inexact":
            assert inexact, f"{where}: marked inexact, but every member hatches exactly"
    rc, out, err = _check(tmp_path, monkeypatch, capsys, fence.body)
    if fence.info in ("mnet", "mnet exact"):
        assert rc == 0 and out.startswith("spec.mnet: ensemble ") and "error" not in err, err
        if fence.info == "mnet exact":
            assert err == ""
        return
    shown = FENCES[k + 1] if k + 1 < len(FENCES) else None
    assert shown is not None and shown.info == "text", (
        f"{where}: a ```{fence.info} block must be followed by a ```text block with the output")
    assert rc == (2 if fence.info == "mnet error" else 0)
    assert err == shown.body, f"{where}: the doc shows\n{shown.body}\nmncompile prints\n{err}"
    if fence.info == "mnet error":
        assert out == ""


def _table(heading: str) -> list[list[str]]:
    """The rows (cells, stripped) of the first table after `heading`."""
    after = TEXT[TEXT.index(heading):]
    rows = []
    for line in after.split("\n")[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            break
    return rows[2:]  # without the header and the --- line


def test_the_train_key_table_is_the_code_s() -> None:
    rows = _table("## Training settings")
    keys = [r[0].strip("`") for r in rows]
    assert keys == list(TRAIN_DEFAULTS)
    help_text = build_parser({"ensemble": "e"}).format_help()
    for key, row in zip(keys, rows, strict=True):
        default = TRAIN_DEFAULTS[key]
        written = row[2]
        if isinstance(default, str):
            assert written == default
        else:
            assert float(written) == float(default), (key, written)
        kind = {"schedule": "name"}.get(key, "integer" if isinstance(default, int) else "number")
        assert row[1] == kind, key
        option = "--" + key.replace("_", "-")
        assert row[5].startswith(f"`{option}") and option in help_text, key


def test_the_dataset_table_is_the_code_s() -> None:
    rows = _table("Built-in datasets")
    assert [r[0].strip("`") for r in rows] == list(DATASETS)
    for row in rows:
        features, classes, _ = DATASETS[row[0].strip("`")]
        assert row[2] == (str(classes) if classes is not None else "any")
        shapes = re.findall(r"`([0-9x]+)`", row[1])
        assert features is None or (shapes and all(
            math.prod(int(d) for d in s.split("x")) == features for s in shapes)), row


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def test_links_lead_somewhere() -> None:
    headings = {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", TEXT, re.M)}
    for target in re.findall(r"\]\(([^)]+)\)", TEXT):
        path, _, anchor = target.partition("#")
        if path.startswith("http"):
            continue
        if not path:
            assert anchor in headings, f"no heading for #{anchor}"
            continue
        assert (DOC.parent / path).resolve().exists(), target
        if anchor and path.endswith(".md"):
            other = (DOC.parent / path).read_text(encoding="utf-8")
            assert anchor in {_slug(m) for m in re.findall(r"^#+ (.+)$", other, re.M)}, target


def test_the_readme_points_here() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## A spec"):readme.index("## Commands")]
    assert "(docs/language.md)" in section


def test_the_mothernet_shown_is_the_one_built() -> None:
    m = re.search(r"Here the MotherNet is `([^`]+)`", TEXT)
    assert m is not None
    line = TEXT[:m.start()].count("\n") + 1
    spec = max((f for _, f in SPECS if f.line < line), key=lambda f: f.line)
    (cluster,) = plan_ensemble(loads(spec.body)).clusters
    inner = format_net(cluster.mother).strip().split("\n")[1:-1]
    assert " ".join(x.strip() for x in inner) == m.group(1)


def test_the_option_errors_quoted_are_real(capsys: pytest.CaptureFixture[str]) -> None:
    quoted = re.findall(r"`((?:SPEC: |mncompile compile: )error: [^`]+)`", " ".join(TEXT.split()))
    assert len(quoted) == 2
    spec = str(ROOT / "examples" / "mlp.mnet")
    assert main(["plan", spec, "--clusters", "9"]) == 2
    assert quoted[0].replace("SPEC", spec) in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([spec, "--clusters", "0"])
    assert info.value.code == 2
    assert quoted[1] in " ".join(capsys.readouterr().err.split())


def rewrite_outputs(path: Path = DOC) -> int:
    """Put what `mncompile check` prints now into the ```text block after every error and
    warning example (after a deliberate change of a message; review the diff). Returns how many
    blocks changed."""
    import contextlib
    import io
    import os
    import tempfile

    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    found = fences(text)
    changed = 0
    for k, fence in reversed(list(enumerate(found))):
        if fence.info not in ("mnet error", "mnet inexact") or k + 1 >= len(found):
            continue
        shown = found[k + 1]
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "spec.mnet").write_text(fence.body, encoding="utf-8")
            err, here = io.StringIO(), os.getcwd()
            os.chdir(tmp)
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    main(["check", "spec.mnet"])
            finally:
                os.chdir(here)
        if shown.info == "text" and err.getvalue() != shown.body:
            start = shown.line  # the body starts on the line after the opening fence
            end = start + len(shown.body.split("\n")) - 1
            lines[start:end] = err.getvalue().rstrip("\n").split("\n")
            changed += 1
    path.write_text("\n".join(lines), encoding="utf-8")
    return changed


if __name__ == "__main__":  # python tests/test_language_doc.py --update
    import sys

    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_language_doc.py --update")
    print(f"{rewrite_outputs()} output blocks of {DOC.relative_to(ROOT)} rewritten")
