"""Training loops of mncompile.runtime.train: schedule, early stopping, shared scan, divergence."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import mncompile.runtime.train as train_mod
from mncompile.diagnostics import MNError
from mncompile.ir import TrainConfig
from mncompile.runtime.data import Dataset, load_dataset
from mncompile.runtime.progress import Progress
from mncompile.runtime.train import (
    TrainSettings,
    epoch_generator,
    group_seconds,
    predict_proba,
    resolve_device,
    train_lockstep,
    train_model,
    train_sequential,
)

QUIET = Progress(quiet=True)


def data() -> Dataset:
    return load_dataset("synthetic", (8,), 3, seed=0, train_size=96, test_size=48)


def mlp(seed: int, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 3))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_settings_from_config_and_schedule() -> None:
    cfg = TrainConfig(lr=0.2, hatched_lr=0.01, max_epochs=50, hatched_max_epochs=7, batch=64)
    mother = TrainSettings.from_config(cfg)
    hatched = TrainSettings.from_config(cfg.model_dump(), phase="hatched")
    assert (mother.lr, mother.max_epochs, mother.batch) == (0.2, 50, 64)
    assert (hatched.lr, hatched.max_epochs, hatched.schedule) == (0.01, 7, "cosine")
    assert mother.lr_at(0) == 0.2
    assert math.isclose(mother.lr_at(25), 0.1)
    assert math.isclose(mother.lr_at(50), 0.0, abs_tol=1e-15)
    const = TrainSettings(lr=0.3, schedule="constant", max_epochs=4)
    assert [const.lr_at(e) for e in range(4)] == [0.3] * 4
    with pytest.raises(MNError, match="unknown schedule 'step'"):
        TrainSettings(schedule="step")


def test_training_learns_and_records_history() -> None:
    ds = data()
    net = mlp(0)
    s = TrainSettings(batch=16, lr=0.05, max_epochs=8, patience=20, weight_decay=0.0)
    r = train_model("net", net, ds, s, seed=0, progress=QUIET, evaluate_test=True, device="cpu")
    assert r.status == "max_epochs" and r.epochs == 8 and r.ok
    assert [h.epoch for h in r.history] == list(range(1, 9))
    assert [h.lr for h in r.history] == [s.lr_at(e) for e in range(8)]
    assert r.history[-1].train_loss < r.history[0].train_loss
    assert r.history[-1].train_acc > 0.8 and r.history[-1].test_acc is not None
    assert r.history[-1].test_acc > 0.6 and all(h.seconds > 0 for h in r.history)
    probs = predict_proba(net, ds.x_test)
    assert probs.shape == (48, 3) and torch.allclose(probs.sum(1), torch.ones(48))
    acc = float((probs.argmax(1) == ds.y_test).float().mean())
    assert acc == pytest.approx(r.history[-1].test_acc)


def test_early_stopping_after_patience_epochs_without_improvement() -> None:
    # lr 0 and no BatchNorm (whose batch statistics change with the shuffle): the training
    # accuracy is the same every epoch
    s = TrainSettings(batch=16, lr=0.0, max_epochs=30, patience=3)
    torch.manual_seed(0)
    r = train_model("flat", nn.Linear(8, 3), data(), s, seed=0, progress=QUIET)
    assert r.status == "converged" and r.epochs == 4  # the first epoch sets the best, 3 stale ones
    assert "not improved for 3 epochs" in (r.message or "")
    off = TrainSettings(batch=16, lr=0.0, max_epochs=5, patience=0)
    assert train_model("flat", nn.Linear(8, 3), data(), off, seed=0, progress=QUIET).epochs == 5


def test_lockstep_equals_sequential_bit_for_bit() -> None:
    ds = load_dataset("synthetic", (1, 6, 6), 3, seed=1, train_size=64, test_size=16)
    ds = Dataset(ds.name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, 3, augment=True)

    def conv(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
        )  # fmt: skip

    s = {
        "a": TrainSettings(batch=16, lr=0.05, max_epochs=4),
        "b": TrainSettings(batch=16, lr=0.1, max_epochs=2),
    }
    lock = {"a": conv(1), "b": conv(2)}
    seq = {"a": conv(1), "b": conv(2)}
    r1 = train_lockstep(lock, ds, s, seed=5, progress=QUIET)
    r2 = train_sequential(seq, ds, s, seed=5, progress=QUIET)
    for n in lock:
        assert same(weights(lock[n]), weights(seq[n]))
        assert [h.train_loss for h in r1[n].history] == [h.train_loss for h in r2[n].history]
    assert r1["a"].epochs == 4 and r1["b"].epochs == 2  # b dropped out, a went on
    other = {"a": conv(1)}
    train_lockstep(other, ds, s["a"], seed=6, progress=QUIET)
    assert not same(weights(other["a"]), weights(lock["a"]))  # the seed drives the stream


def test_shared_scan_draws_one_stream_for_all_models(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = train_mod.batches

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "batches", counting)
    s = TrainSettings(batch=32, lr=0.05, max_epochs=3, patience=10)
    train_lockstep({n: mlp(i) for i, n in enumerate("abc")}, data(), s, progress=QUIET)
    assert len(calls) == 3  # one pass over the data per epoch, shared by three models
    calls.clear()
    train_sequential({n: mlp(i) for i, n in enumerate("abc")}, data(), s, progress=QUIET)
    assert len(calls) == 9


class Poisoned(nn.Module):
    """A model whose output is NaN: its loss is NaN from the first batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.bias.fill_(float("nan"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_divergence_stops_only_that_model() -> None:
    s = TrainSettings(batch=16, lr=0.05, max_epochs=3, patience=10)
    results = train_lockstep({"bad": Poisoned(), "good": mlp(0)}, data(), s, progress=QUIET)
    bad, good = results["bad"], results["good"]
    assert bad.status == "diverged" and not bad.ok and bad.epochs == 1
    assert "training loss became nan in epoch 1" in (bad.message or "")
    assert good.status == "max_epochs" and good.epochs == 3 and good.ok


def test_lockstep_rejects_mixed_batch_sizes() -> None:
    s = {"a": TrainSettings(batch=16), "b": TrainSettings(batch=32)}
    with pytest.raises(ValueError, match="share one batch size"):
        train_lockstep({"a": mlp(0), "b": mlp(1)}, data(), s, progress=QUIET)


def test_group_seconds_counts_shared_epochs_once() -> None:
    s = TrainSettings(batch=32, lr=0.05, max_epochs=3)
    res = train_lockstep({"a": mlp(0), "b": mlp(1)}, data(), s, progress=QUIET)
    assert [h.seconds for h in res["a"].history] == [h.seconds for h in res["b"].history]
    assert group_seconds(res) == pytest.approx(res["a"].seconds)


def test_epoch_stream_depends_on_seed_and_epoch_only() -> None:
    a = torch.randperm(50, generator=epoch_generator(3, 7))
    assert torch.equal(a, torch.randperm(50, generator=epoch_generator(3, 7)))
    assert not torch.equal(a, torch.randperm(50, generator=epoch_generator(3, 8)))
    assert not torch.equal(a, torch.randperm(50, generator=epoch_generator(4, 7)))


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(MNError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(MNError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")


def test_progress_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    s = TrainSettings(batch=32, lr=0.05, max_epochs=2)
    train_lockstep({"a": mlp(0), "b": mlp(1)}, data(), s, progress=Progress(stream=out), phase="members")
    lines = out.getvalue().splitlines()
    epochs = [ln for ln in lines if " epoch " in ln]
    assert len(epochs) == 4 and epochs[0].startswith("[members] a epoch 1/2  lr 0.05  loss ")
    assert any("b: max_epochs" in ln for ln in lines)
    quiet = io.StringIO()
    train_model("a", mlp(0), data(), s, progress=Progress(quiet=True, stream=quiet))
    assert quiet.getvalue() == ""


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    s = TrainSettings(batch=32, lr=0.05, max_epochs=2)
    train_model("solo", mlp(0), data(), s, progress=Progress(stream=out, bars=True))
    text = out.getvalue()
    assert "solo" in text and "batch" in text and "acc" in text and "\r" in text


def test_end_to_end_lockstep_to_results(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Train three members together, evaluate them, and write the run's record."""
    import json

    from mncompile.runtime.metrics import ensemble_metrics
    from mncompile.runtime.results import PhaseRecord, build_results, write_history, write_results

    ds = load_dataset("digits", (64,), 10, seed=0, train_size=400, test_size=200)
    members = {f"m{i}": mlp_digits(i) for i in range(3)}
    s = TrainSettings(batch=32, lr=0.05, max_epochs=6, patience=3)
    res = train_lockstep(
        members, ds, s, seed=0, progress=QUIET, checkpoint_dir=tmp_path / "ckpt", phase="members"
    )
    probs = torch.stack([predict_proba(m, ds.x_test) for m in members.values()])
    metrics = ensemble_metrics(probs, ds.y_test, names=list(members))
    assert all(metrics["members"][n]["accuracy"] > 0.6 for n in members)
    assert metrics["accuracy"] >= min(metrics["members"][n]["accuracy"] for n in members)
    assert metrics["oracle_accuracy"] >= max(metrics["members"][n]["accuracy"] for n in members)
    phases = [PhaseRecord("members", group_seconds(res), res)]
    out = tmp_path / "out"
    doc = build_results("fd", phases, metrics, info={"dataset": "digits"})
    write_results(out, doc)
    write_history(out, phases)
    back = json.loads((out / "results.json").read_text())
    assert back["models"]["m0"]["epochs"] == res["m0"].epochs and back["ensemble"]["size"] == 3
    rows = (out / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(r.epochs for r in res.values())
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["m0.pt", "m1.pt", "m2.pt"]


def mlp_digits(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_package_exports_resolve_lazily() -> None:
    import importlib
    import importlib.util
    import subprocess
    import sys

    import mncompile.runtime as rt

    for name, module in rt._EXPORTS.items():
        if importlib.util.find_spec(f"mncompile.runtime.{module}") is not None:
            assert getattr(rt, name) is getattr(importlib.import_module(f"mncompile.runtime.{module}"), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rt.nope  # noqa: B018
    code = "import sys, mncompile.runtime; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
