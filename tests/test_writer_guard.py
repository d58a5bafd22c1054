"""`mncompile SPEC -o DIR` never silently replaces another ensemble's folder or the golden record."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mncompile.cli import main

ROOT = Path(__file__).resolve().parent.parent
MNIST1D = ROOT / "examples" / "mnist1d.mnet"
MLP = ROOT / "examples" / "mlp.mnet"


def test_another_ensembles_folder_is_refused_without_force(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "same"
    assert main([str(MNIST1D), "-o", str(out)]) == 0
    before = (out / "models.py").read_text()
    capsys.readouterr()
    assert main([str(MLP), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds the generated folder of ensemble 'mnist1d', not 'mlp'" in err and "--force" in err
    assert (out / "models.py").read_text() == before
    assert main([str(MLP), "-o", str(out), "--force"]) == 0
    assert '"ensemble": "mlp"' in (out / "plan.json").read_text()
    assert main([str(MLP), "-o", str(out), "--seed", "3"]) == 0  # the same ensemble: recompiled


def test_the_golden_record_keeps_its_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """In the repository, `mncompile examples/mnist1d.mnet --clusters 2` would rewrite generated/."""
    shutil.copytree(ROOT / "generated" / "mnist1d", tmp_path / "generated" / "mnist1d")
    shutil.copy(ROOT / "generated" / ".mncompile-golden.json", tmp_path / "generated")
    monkeypatch.chdir(tmp_path)
    record = tmp_path / "generated" / "mnist1d"
    assert main([str(MNIST1D), "--clusters", "2"]) == 2
    err = capsys.readouterr().err
    assert "is the golden record of mnist1d.mnet (g 1, seed 0" in err and "this compile has g 2" in err
    assert "-o DIR" in err
    # the golden options rewrite it byte for byte: the record is exactly what a compile writes
    assert main([str(MNIST1D)]) == 0
    golden = ROOT / "generated" / "mnist1d"
    assert sorted(p.relative_to(record) for p in record.rglob("*")) == \
        sorted(p.relative_to(golden) for p in golden.rglob("*"))
    for path in golden.rglob("*"):
        if path.is_file():
            assert (record / path.relative_to(golden)).read_bytes() == path.read_bytes()
    assert main([str(MNIST1D), "--clusters", "2", "-o", str(tmp_path / "g2")]) == 0
    assert main([str(MNIST1D), "--clusters", "2", "--force"]) == 0  # forced: replaced all the same
    assert '"g": 2' in (record / "plan.json").read_text()
