"""Temperature scaling: the fit, what a run reports and stores, and ECE beside torchmetrics'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.cli import main as cli_main
from mncompile.diagnostics import MNError
from mncompile.runtime.calibration import fit_temperature, tempered_probs
from mncompile.runtime.checkpoint import digest
from mncompile.runtime.ensemble import load_ensemble
from mncompile.runtime.metrics import ece, nll
from tests.conftest import spec_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = """ensemble p1 { input 1x16 classes 3
    train { batch 16 max_epochs 4 hatched_max_epochs 2 patience 50 }
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
}
"""
RUN = ["--data", "synthetic", "--train-size", "300", "--test-size", "200", "--quiet"]


def test_the_fit_finds_the_temperature_the_labels_were_drawn_at() -> None:
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(1, 20000, 4, generator=g)
    labels = torch.multinomial(torch.softmax(z[0] / 2.5, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(z, labels)
    assert float(t) == pytest.approx(2.5, rel=0.05)
    per = fit_temperature(torch.cat([z, z / 2.5]), labels, per_member=True)
    assert per.tolist() == pytest.approx([2.5, 1.0], rel=0.05)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 4), st.floats(0.2, 5.0))
def test_the_fitted_temperature_never_raises_the_nll_it_minimises(seed: int, k: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(k, 300, 5, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    t = fit_temperature(logits, labels)
    before = nll(torch.softmax(logits, 2).mean(0), labels)
    after = nll(tempered_probs(logits, t).mean(0), labels)
    assert after <= before + 1e-6
    assert 0.01 <= float(t) <= 100.0


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")


@pytest.mark.parametrize("mode", ["ensemble", "member"])
def test_a_run_fits_reports_and_stores_the_temperature(spec: Path, mode: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    flag = ["--calibrate-temperature"] + ([] if mode == "ensemble" else ["member"])
    assert cli_main(["run", str(spec), *RUN, "--val-fraction", "0.2", *flag, "--out", "o"]) == 0
    out = capsys.readouterr().out
    assert "temperature scaling: T" in out and "15 equal-width bins of (0, 1]" in out
    doc = json.loads(Path("o/results.json").read_text())
    cal = doc["calibration"]
    assert cal["mode"] == mode and cal["val_examples"] == doc["info"]["val_size"] == 60
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"] + 1e-9
    assert cal["test"]["before"]["error"] == pytest.approx(doc["ensemble"]["error"])
    assert cal["test"]["before"]["nll"] == pytest.approx(doc["ensemble"]["nll"])
    ens = load_ensemble("o")
    t = cal["temperature"]
    assert ens.temperature == t
    if mode == "member":
        assert set(t) == set(doc["members"])
    # predict_proba applies it: the tempered test probabilities give the reported NLL
    from mncompile.runtime.data import load_dataset

    data = load_dataset("synthetic", (1, 16), 3, seed=0, train_size=300, test_size=200, val_fraction=0.2)
    after = cal["test"]["after"]["nll"]
    assert nll(ens.predict_proba(data.x_test), data.y_test) == pytest.approx(after, rel=1e-5)
    plain = torch.softmax(ens.logits(data.x_test), 2).mean(1)
    assert nll(plain, data.y_test) == pytest.approx(doc["ensemble"]["nll"], rel=1e-5)


def test_calibration_without_a_validation_split_is_refused_before_anything(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", str(spec), *RUN, "--val-fraction", "0", "--calibrate-temperature", "-o", "gen",
                     "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "--calibrate-temperature fits on the validation split" in err and "--val-fraction" in err
    assert not Path("o").exists() and not Path("gen").exists()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), 0.0, 1e9, "2", {"a": 1.0}, {"a": 1.0, "b": -2.0}])
def test_a_damaged_temperature_in_the_file_is_refused(spec: Path, bad: object) -> None:
    assert cli_main(["run", str(spec), *RUN, "--calibrate-temperature", "--out", "o"]) == 0
    path = Path("o/ensemble.pt")
    payload = torch.load(path, weights_only=True)
    payload["temperature"] = bad
    payload["checksum"] = digest({k: v for k, v in payload.items() if k != "checksum"})
    torch.save(payload, path)
    with pytest.raises(MNError, match="temperature"):
        load_ensemble(path)


def test_ece_agrees_with_torchmetrics_except_on_a_bin_edge() -> None:
    tm = pytest.importorskip("torchmetrics.functional")
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(5000, 10, generator=g, dtype=torch.float64), 1)
    labels = torch.randint(0, 10, (5000,), generator=g)
    theirs = float(tm.calibration_error(probs, labels, task="multiclass", num_classes=10, n_bins=15,
                                        norm="l1"))
    assert ece(probs, labels) == pytest.approx(theirs, abs=1e-6)
    def theirs_of(p: torch.Tensor, y: torch.Tensor) -> float:
        return float(tm.calibration_error(p, y, task="multiclass", num_classes=3, n_bins=15, norm="l1"))

    # off the edges b/15 the bins are the same
    two = torch.tensor([[0.402, 0.3, 0.298], [0.41, 0.3, 0.29]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    assert ece(two, y) == pytest.approx(abs(0.5 - 0.406)) == pytest.approx(theirs_of(two, y), abs=1e-6)
    # a confidence of 1.0 shares (14/15, 1] with 0.95 for us; it has a bin of its own for them
    top = torch.tensor([[1.0, 0.0, 0.0], [0.95, 0.05, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    assert ece(top, y) == pytest.approx(abs(0.5 - 0.975))
    assert theirs_of(top, y) == pytest.approx(0.5 * 1.0 + 0.5 * 0.05, abs=1e-6)
