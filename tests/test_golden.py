"""The golden record in generated/ is exactly what the current compiler writes for examples/."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from mncompile.api import load
from mncompile.golden import GENERATED, example_specs, regenerate

FIX = "the golden record is stale: run `python -m mncompile.golden` and commit generated/"


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every example compiled again, by the same command that writes the record."""
    out = tmp_path_factory.mktemp("golden")
    regenerate(generated=out)
    return out


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.stem)
def test_golden_record_is_current(spec: Path, fresh: Path) -> None:
    name = load(spec).name
    recorded_dir = GENERATED / name
    assert recorded_dir.is_dir(), f"{recorded_dir} is missing; {FIX}"
    recorded, compiled = _tree(recorded_dir), _tree(fresh / name)
    assert sorted(recorded) == sorted(compiled), f"the files in {recorded_dir} differ; {FIX}"
    for path, data in compiled.items():
        if recorded[path] != data:
            diff = "".join(list(difflib.unified_diff(
                recorded[path].decode().splitlines(True), data.decode().splitlines(True),
                f"recorded/{name}/{path}", f"compiled/{name}/{path}"))[:40])
            pytest.fail(f"{name}/{path} differs; {FIX}\n{diff}")


def test_no_stale_folders_in_the_record(fresh: Path) -> None:
    expected = {p.name for p in fresh.iterdir() if p.is_dir()}
    assert not [p for p in expected if p.startswith(".")], "temporary folders left behind"
    assert {p.name for p in GENERATED.iterdir() if p.is_dir()} == expected, FIX
    # the index of the record's folders, their specs and options, is current too
    index = ".mncompile-golden.json"
    assert (GENERATED / index).read_text() == (fresh / index).read_text(), FIX


def test_golden_record_has_no_weights_and_stays_small() -> None:
    files = [p for p in GENERATED.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    # eleven examples of tables and code (D5's tables are the largest, 1.7 MB): no weights
    assert total < 6_000_000, f"generated/ holds {total} bytes"
    assert not {p.suffix for p in files} & {".pt", ".pth", ".bin", ".npz", ".safetensors", ".ckpt"}
