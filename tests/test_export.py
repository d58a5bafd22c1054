"""`mncompile export`: the ensemble as a torch.export program (and ONNX) that runs without mncompile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mncompile.cli import main as cli_main
from mncompile.runtime.ensemble import load_ensemble

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a Shared-MotherNet (a, b, c hatched from one MotherNet) beside a member of its own class (m)
SPEC = """ensemble x { input 1x16 classes 3
    train { batch 16 max_epochs 2 hatched_max_epochs 1 patience 50 }
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 3:6 } block { 3:8 } dense 8 }
    net c plain { block { 3:4 3:4 } block { 3:6 } dense 8 }
    net m mlp { dense 12 }
}
"""
RUN = ["--data", "synthetic", "--train-size", "120", "--test-size", "40", "--quiet"]
# run in a fresh interpreter where mncompile cannot be imported
WITHOUT_MNCOMPILE = """
import sys
sys.modules["mncompile"] = None  # any import of mncompile now fails
import numpy as np, torch
program = torch.export.load(sys.argv[1]).module()
probs, logits = program(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], probs.detach().numpy())
np.save(sys.argv[4], logits.detach().numpy())
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export")
    spec = work / "x.mnet"
    spec.write_text(SPEC)
    assert cli_main(["run", str(spec), *RUN, "-g", "2", "--method", "shared-mothernets", "-o",
                     str(work / "gen"), "--out", str(work / "run"), "--calibrate-temperature", "member"]) == 0
    return work / "run"


def test_the_program_runs_without_mncompile_and_matches_load_ensemble(trained: Path, tmp_path: Path) -> None:
    ens = load_ensemble(trained)
    assert ens.kind == "mixed" and isinstance(ens.temperature, dict)
    assert cli_main(["export", str(trained), "--to", str(tmp_path / "e"), "--onnx", "no"]) == 0
    info = json.loads((tmp_path / "e" / "export.json").read_text())
    assert info["members"] == ens.members and info["input"] == [1, 16] and info["classes"] == 3
    assert not (tmp_path / "e" / "ensemble.onnx").exists()
    x = torch.randn(37, 1, 16, generator=torch.Generator().manual_seed(3))  # a batch size it never saw
    np.save(tmp_path / "x.npy", x.numpy())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", WITHOUT_MNCOMPILE, str(tmp_path / "e" / "ensemble.pt2"),
                    str(tmp_path / "x.npy"), str(tmp_path / "p.npy"), str(tmp_path / "l.npy")],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    probs, logits = np.load(tmp_path / "p.npy"), np.load(tmp_path / "l.npy")
    assert probs.shape == (37, 3) and logits.shape == (37, len(ens.members), 3)
    assert np.abs(probs - ens.predict_proba(x).numpy()).max() <= 1e-5  # the temperatures applied
    assert np.abs(logits - ens.logits(x).numpy()).max() <= 1e-5


def test_onnx_matches_too(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    assert cli_main(["export", str(trained), "--to", str(tmp_path / "e")]) == 0
    session = ort.InferenceSession(str(tmp_path / "e" / "ensemble.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 16, generator=torch.Generator().manual_seed(4))
    probs, _ = session.run(None, {"x": x.numpy()})
    assert np.abs(probs - load_ensemble(trained).predict_proba(x).numpy()).max() <= 1e-5
    checked = json.loads((tmp_path / "e" / "export.json").read_text())["checked"]
    assert checked["ensemble.onnx"]["probs_max_abs_diff"] <= 1e-5


def test_an_existing_folder_is_refused_without_force(trained: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "e"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    assert cli_main(["export", str(trained), "--to", str(dest), "--onnx", "no"]) == 2
    assert "exists" in capsys.readouterr().err and (dest / "mine.txt").read_text() == "keep"


def test_a_folder_without_an_ensemble_is_a_clear_error(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["export", str(tmp_path), "--to", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and not (tmp_path / "e").exists()


def test_onnx_yes_without_onnx_is_an_error(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import mncompile.runtime.export as export

    monkeypatch.setattr(export, "onnx_available", lambda: "onnx not installed (test)")
    assert cli_main(["export", str(trained), "--to", str(tmp_path / "e"), "--onnx", "yes"]) == 2
    assert "cannot write ensemble.onnx" in capsys.readouterr().err and not (tmp_path / "e").exists()
