"""bench/peers.py: a quick run against torchensemble (skipped without it) and its user errors."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
# tiny: 200 MNIST-1D examples (2 batches of 128), 2 nets, a 2-epoch budget, one repeat
TINY = ["--train-size", "200", "--test-size", "100", "--epochs", "2", "--estimators", "2",
        "--repeats", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peers", ROOT / "bench/peers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module
    spec.loader.exec_module(module)
    return module


def test_smoke(peers: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torchensemble")
    report = tmp_path / "peers.json"
    rc = peers.main([*TINY, "--profile", "--profile-epochs", "1", "--out", str(tmp_path / "runs"),
                     "--json", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "torchensemble 0.2" in out and "1 thread(s)" in out and "200 train / 100 test" in out
    assert "repeat: " in out and "--estimators 2" in out
    for row in ("full-data / VotingClassifier", "snapshot / SnapshotEnsembleClassifier",
                "fge / FastGeometricClassifier", "ours: checkpoint writing", "theirs: saving",
                "ours: save_checkpoint, one net", "theirs: io.save"):
        assert row in out, row
    doc = json.loads(report.read_text())
    # epochs: voting 2 each; snapshot 2 cycles of 1; fge 2 pre-training + 2 cycles of 2 (theirs stops
    # half-way through the last cycle)
    expected = {"voting": (2, 2), "snapshot": (2, 2), "fge": (6, 5)}
    for kind, (ours_epochs, their_epochs) in expected.items():
        m = doc["methods"][kind]
        ours, theirs = m["ours"][0], m["theirs"][0]
        assert (ours["epochs"], theirs["epochs"]) == (ours_epochs, their_epochs), kind
        assert ours["members"] == theirs["members"] == 2
        assert 0.0 <= ours["error"] <= 1.0 and 0.0 <= theirs["error"] <= 1.0
        assert 0 < ours["train_s"] <= ours["ckpt_s"] <= ours["wall_s"]
        assert all(math.isfinite(r) and r > 0 for r in m["ratio_per_epoch"])
    # torchensemble's own checkpoint of the whole ensemble, in its save_dir
    assert doc["methods"]["voting"]["theirs"][0]["saved"] == ["VotingClassifier_C32_1_2_ckpt.pth"]
    assert doc["methods"]["snapshot"]["recipe"]["lr"] == 0.2
    assert doc["methods"]["fge"]["recipe"]["lr1"] == 0.05 and doc["methods"]["fge"]["recipe"]["cycle"] == 2
    # our runs got no validation split: every example trained on, as on torchensemble's side
    run = json.loads((tmp_path / "runs" / "runs" / "voting" / "ours1" / "results.json").read_text())
    assert run["info"]["train_size"] == 200 and run["info"].get("val_size", 0) == 0


@pytest.mark.parametrize("argv, message", [
    (["--methods", "bagging"], "unknown method 'bagging'"),
    (["--member", "nosuch"], "--member 'nosuch' is not a net"),
    (["--repeats", "0"], "must be at least 1"),
    (["--methods", "none"], "nothing to do"),
    (["--spec", "no/such.mnet"], "no/such.mnet"),
])
def test_bad_options(peers: ModuleType, capsys: pytest.CaptureFixture[str], argv: list[str],
                     message: str) -> None:
    assert peers.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_without_torchensemble(peers: ModuleType, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "torchensemble", None)  # import fails as if not installed
    assert peers.main(TINY) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps torchensemble==0.2.0" in err and "Traceback" not in err
