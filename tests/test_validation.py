"""The validation split (`--val-fraction`), its per-epoch records, and early stopping on it (`--stop`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.cli import main as cli_main
from mncompile.diagnostics import MNError
from mncompile.runtime.data import load_dataset, validation_split
from mncompile.runtime.jobs import ModelResult, TrainSettings
from mncompile.runtime.train import record_epoch

ROOT = Path(__file__).resolve().parent.parent
MNIST1D = ROOT / "examples" / "mnist1d.mnet"
QUICK = ["--train-size", "400", "--test-size", "128", "--epochs-scale", "0.04", "--quiet"]


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(2, 40), min_size=1, max_size=6),
       fraction=st.floats(0.05, 0.5), seed=st.integers(0, 2**32 - 1))
def test_the_split_is_stratified_disjoint_and_seeded(counts: list[int], fraction: float, seed: int) -> None:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    np.random.default_rng(seed).shuffle(y)
    try:
        train, val = validation_split(y, fraction, seed, len(counts))
    except MNError as err:
        # refused only when a class would go wholly to validation
        ks = [int(np.floor(fraction * n + 0.5)) for n in counts]
        assert any(k >= n for k, n in zip(ks, counts, strict=True)), err.message
        return
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(y)
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    for c, n in enumerate(counts):
        assert int((y[val] == c).sum()) == int(np.floor(fraction * n + 0.5))
        assert (y[train] == c).any()
    again = validation_split(y, fraction, seed, len(counts))
    assert (again[1] == val).all()


def test_the_split_is_a_function_of_the_data_seed() -> None:
    a = load_dataset("mnist1d", (1, 40), 10, seed=0, val_fraction=0.1)
    b = load_dataset("mnist1d", (1, 40), 10, seed=0, val_fraction=0.1)
    assert a.x_val is not None and b.x_val is not None and a.y_val is not None
    assert (a.x_val == b.x_val).all() and len(a.y_val) == 400 and len(a.y_train) == 3600
    assert a.val_size == 400
    y = np.repeat(np.arange(10), 40)
    assert not (validation_split(y, 0.1, 0, 10)[1] == validation_split(y, 0.1, 1, 10)[1]).all()
    assert a.y_val.bincount().min() >= 39  # stratified: about 40 of each class
    whole = load_dataset("mnist1d", (1, 40), 10, seed=0)
    assert not whole.has_val and len(whole.y_train) == 4000
    # too few examples to hold out any: no split, and training goes on without one
    tiny = load_dataset("synthetic", (4,), 3, seed=0, train_size=6, val_fraction=0.1)
    assert not tiny.has_val and len(tiny.y_train) == 6
    # held-out examples are not trained on, and the test set is untouched
    assert (a.x_test == whole.x_test).all()
    rows = {tuple(r) for r in whole.x_train.reshape(4000, -1).tolist()}
    assert all(tuple(r) in rows for r in a.x_val.reshape(400, -1).tolist()[:50])
    train_rows = {tuple(r) for r in a.x_train.reshape(3600, -1).tolist()}
    assert not any(tuple(r) in train_rows for r in a.x_val.reshape(400, -1).tolist())


def test_standardised_data_is_scaled_by_the_examples_trained_on() -> None:
    d = load_dataset("digits", (1, 8, 8), 10, val_fraction=0.2)
    assert abs(float(d.x_train.mean())) < 1e-5 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert d.has_val and len(d.y_val) > 0 and abs(float(d.x_val.mean())) > 1e-6


def _state() -> ModelResult:
    class S:
        result = ModelResult("m")
        best = -float("inf")
        stale = 0

    return S()  # type: ignore[return-value]


def test_val_loss_stopping_watches_the_validation_loss_not_training_accuracy() -> None:
    s = TrainSettings(patience=2, max_epochs=50, stop="val-loss")
    st_ = _state()
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.91]):
        # training accuracy keeps rising: the paper's rule would not stop
        record_epoch(st_, s, epoch, 0.1, 0.5, 0.5 + epoch / 10, None, 1.0, (val_loss, 0.8, 0.1))
    assert st_.result.status == "converged"  # type: ignore[attr-defined]
    assert "validation loss has not improved for 2 epochs (best 0.9000)" in st_.result.message  # type: ignore
    assert [r.val_loss for r in st_.result.history] == [1.0, 0.9, 0.95, 0.91]  # type: ignore[attr-defined]

    paper = TrainSettings(patience=2, max_epochs=50)
    st2 = _state()
    for epoch, val_loss in enumerate([1.0, 0.9, 0.95, 0.91]):
        record_epoch(st2, paper, epoch, 0.1, 0.5, 0.5 + epoch / 10, None, 1.0, (val_loss, 0.8, 0.1))
    assert st2.result.status == "training"  # type: ignore[attr-defined]


def test_val_loss_stopping_without_a_split_is_an_error() -> None:
    with pytest.raises(MNError, match="needs a validation split"):
        record_epoch(_state(), TrainSettings(stop="val-loss"), 0, 0.1, 0.5, 0.5, None, 1.0, None)


def _run(tmp_path: Path, *extra: str) -> tuple[int, dict, list[dict]]:
    out = tmp_path / "out"
    code = cli_main(["run", str(MNIST1D), "-o", str(tmp_path / "gen"), "--out", str(out), *QUICK, *extra])
    if code != 0:
        return code, {}, []
    with open(out / "history.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return code, json.loads((out / "results.json").read_text()), rows


def test_a_run_records_validation_per_epoch_and_times_it_apart(tmp_path: Path,
                                                                 one_torch_thread: None) -> None:
    code, doc, rows = _run(tmp_path, "--val-fraction", "0.25", "--stop", "val-loss", "--method", "full-data")
    assert code == 0
    assert doc["info"]["val_fraction"] == 0.25 and doc["info"]["stop"] == "val-loss"
    info = doc["info"]
    assert info["train_size"] + info["val_size"] == 400 and abs(info["val_size"] - 100) <= 5
    assert rows and all(r["val_loss"] and r["val_acc"] for r in rows)
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["val_seconds"]) > 0 for r in rows)
    val = sum(float(r["val_seconds"]) for r in rows)
    assert doc["validation_seconds"] == pytest.approx(val)
    assert doc["total_seconds"] == pytest.approx(sum(p["seconds"] for p in doc["phases"]))
    # the five members train in lockstep: the phase is each shared epoch's training time, once
    per_epoch: dict[str, float] = {}
    for r in rows:
        per_epoch[r["epoch"]] = max(per_epoch.get(r["epoch"], 0.0), float(r["seconds"]))
    assert doc["total_seconds"] == pytest.approx(sum(per_epoch.values()))
    for m in doc["models"].values():
        assert m["best_val_loss"] is not None and m["val_seconds"] > 0


def test_the_paper_setting_has_no_validation_columns(tmp_path: Path, one_torch_thread: None) -> None:
    code, doc, rows = _run(tmp_path, "--val-fraction", "0", "--method", "snapshot")
    assert code == 0 and doc["info"]["train_size"] == 400
    assert doc["info"]["stop"] == "train-acc" and doc["info"]["val_size"] == 0
    assert all(r["val_loss"] == "" and r["val_acc"] == "" for r in rows)
    assert doc["validation_seconds"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--val-fraction", "0.6"], "--val-fraction"),
    (["--val-fraction", "-0.1"], "--val-fraction"),
    (["--val-fraction", "nan"], "--val-fraction"),
    (["--val-fraction", "0", "--stop", "val-loss"], "needs a validation split"),
    (["--train-size", "12", "--val-fraction", "0.5"], "without training examples"),
    (["--train-size", "4", "--val-fraction", "0.1", "--stop", "val-loss"], "holds out no examples"),
])
def test_bad_validation_options_exit_2_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    spec = tmp_path / "s.mnet"
    spec.write_text("ensemble s { input 40 classes 10 net a mlp { dense 8 } net b mlp { dense 12 } }\n")
    with pytest.raises(SystemExit) as exit_info:
        code = cli_main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(out), "--quiet", *argv])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "results.json").exists() and not (out / "ckpt").exists()


def test_the_default_holds_out_a_tenth_and_stops_on_training_accuracy(tmp_path: Path,
                                                                     one_torch_thread: None) -> None:
    code, doc, rows = _run(tmp_path, "--method", "full-data")
    assert code == 0 and doc["info"]["val_fraction"] == 0.1 and doc["info"]["stop"] == "train-acc"
    info = doc["info"]  # a tenth of each class, rounded per class
    assert abs(info["val_size"] - 40) <= 5 and info["train_size"] + info["val_size"] == 400
    assert all(r["val_acc"] for r in rows)


@pytest.mark.parametrize("command", ["run", "bench"])
def test_val_loss_without_a_split_fails_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    spec = tmp_path / "s.mnet"
    spec.write_text("ensemble s { input 40 classes 10 net a mlp { dense 8 } net b mlp { dense 12 } }\n")
    out = tmp_path / "out"
    argv = [command, str(spec), "--stop", "val-loss", "--val-fraction", "0", "--out", str(out)]
    argv += ["-o", str(tmp_path / "gen")] if command == "run" else []
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "needs a validation split" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "gen").exists()


def test_a_multi_head_output_without_a_heads_hook_is_a_clear_error() -> None:
    import torch

    from mncompile.runtime.data import Dataset
    from mncompile.runtime.jobs import Job
    from mncompile.runtime.train import validate

    x = torch.randn(6, 4)
    data = Dataset("t", x, torch.zeros(6, dtype=torch.long), x, torch.zeros(6, dtype=torch.long), 2,
                   x_val=x, y_val=torch.zeros(6, dtype=torch.long))
    job = Job("two", torch.nn.Linear(4, 2), TrainSettings(), forward=lambda m, t: torch.stack([m(t), m(t)]))
    with pytest.raises(MNError, match="not \\[batch, classes\\] logits"):
        validate(job, data, torch.device("cpu"))
    job.heads = list
    loss, acc, _ = validate(job, data, torch.device("cpu"))
    assert loss > 0 and 0 <= acc <= 1


def test_a_run_recorded_before_the_split_resumes_as_the_paper_setting(tmp_path: Path) -> None:
    from mncompile.runtime.pipeline import _check_run_record

    path = tmp_path / "ckpt" / "m" / "run.json"
    path.parent.mkdir(parents=True)
    record = {"seed": 0, "val_fraction": 0.0, "stop": "train-acc"}
    path.write_text(json.dumps({"seed": 0}))  # written before val_fraction and stop existed
    _check_run_record(path, record, resume=True)
    path.write_text(json.dumps({"seed": 0}))
    with pytest.raises(MNError, match="val_fraction"):
        _check_run_record(path, {**record, "val_fraction": 0.1}, resume=True)
