"""Checkpoints: atomic writes, exact resume (single model and lockstep), clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mncompile.diagnostics import MNError
from mncompile.runtime.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from mncompile.runtime.data import Dataset, load_dataset
from mncompile.runtime.progress import Progress
from mncompile.runtime.train import TrainSettings, train_lockstep, train_model

QUIET = Progress(quiet=True)
BATCH = 16


def data() -> Dataset:
    ds = load_dataset("synthetic", (1, 6, 6), 3, seed=2, train_size=64, test_size=16)
    # augmentation on, so the resumed stream must reproduce the crops and flips as well
    return Dataset(ds.name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, 3, augment=True)


class Net(nn.Module):
    """A small conv net that raises KeyboardInterrupt at its `stop_at`-th training forward."""

    def __init__(self, seed: int, stop_at: int | None = None, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 3)
        self.stop_at, self.calls = stop_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.stop_at is not None and self.calls >= self.stop_at:
                raise KeyboardInterrupt
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


SETTINGS = TrainSettings(batch=BATCH, lr=0.1, max_epochs=5, patience=10)
PER_EPOCH = 4  # 64 examples / batch 16


def test_single_model_resume_is_bit_identical(tmp_path: Path) -> None:
    ds = data()
    ref = Net(0)
    ref_result = train_model("m", ref, ds, SETTINGS, seed=3, progress=QUIET)

    # interrupted in the middle of epoch 3 (two epochs complete)
    first = Net(0, stop_at=2 * PER_EPOCH + 2)
    with pytest.raises(KeyboardInterrupt):
        train_model("m", first, ds, SETTINGS, seed=3, checkpoint_dir=tmp_path, progress=QUIET)
    assert load_checkpoint(tmp_path / "m.pt")["epoch"] == 2

    resumed = Net(99)  # different initial weights: everything must come from the checkpoint
    result = train_model(
        "m", resumed, ds, SETTINGS, seed=3, checkpoint_dir=tmp_path, resume=True, progress=QUIET
    )
    assert_same(ref, resumed)
    assert result.epochs == 5 and result.status == ref_result.status
    assert [h.train_loss for h in result.history] == [h.train_loss for h in ref_result.history]
    assert resumed.calls == 3 * PER_EPOCH  # only the three missing epochs were trained

    # resuming a finished model trains nothing more
    again = Net(7)
    assert (
        train_model(
            "m", again, ds, SETTINGS, seed=3, checkpoint_dir=tmp_path, resume=True, progress=QUIET
        ).epochs
        == 5
    )
    assert again.calls == 0
    assert_same(ref, again)


def test_lockstep_resume_is_bit_identical(tmp_path: Path) -> None:
    ds = data()
    settings = {"a": SETTINGS, "b": TrainSettings(batch=BATCH, lr=0.05, max_epochs=4, patience=10)}
    ref = {"a": Net(1), "b": Net(2, width=5)}
    ref_res = train_lockstep(ref, ds, settings, seed=4, progress=QUIET)

    # b raises mid-epoch 3 after a has stepped on that batch: both keep their epoch-2 checkpoints
    run = {"a": Net(1), "b": Net(2, stop_at=2 * PER_EPOCH + 3, width=5)}
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(run, ds, settings, seed=4, checkpoint_dir=tmp_path, progress=QUIET)
    assert load_checkpoint(tmp_path / "a.pt")["epoch"] == 2 == load_checkpoint(tmp_path / "b.pt")["epoch"]
    resumed = {"a": Net(8), "b": Net(9, width=5)}
    res = train_lockstep(resumed, ds, settings, seed=4, checkpoint_dir=tmp_path, resume=True, progress=QUIET)
    for n in ref:
        assert_same(ref[n], resumed[n])
        assert [h.train_loss for h in res[n].history] == [h.train_loss for h in ref_res[n].history]
    assert res["b"].status == "max_epochs" and res["b"].epochs == 4 and res["a"].epochs == 5


def test_lockstep_resume_brings_models_back_in_step(tmp_path: Path) -> None:
    """An interrupt between two models' saves can leave them at different epochs."""
    ds = data()
    settings = {"a": SETTINGS, "b": TrainSettings(batch=BATCH, lr=0.05, max_epochs=4, patience=10)}
    ref = {"a": Net(1), "b": Net(2, width=5)}
    train_lockstep(ref, ds, settings, seed=4, progress=QUIET)
    first = {"a": Net(1), "b": Net(2, stop_at=2 * PER_EPOCH + 1, width=5)}
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(first, ds, settings, seed=4, checkpoint_dir=tmp_path, progress=QUIET)
    # a alone goes one epoch further (to 3) and is interrupted in epoch 4; b stays at 2
    with pytest.raises(KeyboardInterrupt):
        train_model("a", Net(1, stop_at=PER_EPOCH + 1), ds, settings["a"], seed=4, checkpoint_dir=tmp_path,
                    resume=True, progress=QUIET)  # fmt: skip
    assert (
        load_checkpoint(tmp_path / "a.pt")["epoch"] == 3 and load_checkpoint(tmp_path / "b.pt")["epoch"] == 2
    )
    final = {"a": Net(5), "b": Net(6, width=5)}
    train_lockstep(final, ds, settings, seed=4, checkpoint_dir=tmp_path, resume=True, progress=QUIET)
    for n in ref:
        assert_same(ref[n], final[n])
    assert final["a"].calls == 2 * PER_EPOCH and final["b"].calls == 2 * PER_EPOCH


def test_resume_refuses_other_seed_or_settings(tmp_path: Path) -> None:
    ds = data()
    short = TrainSettings(batch=BATCH, lr=0.1, max_epochs=2)
    train_model("m", Net(0), ds, short, seed=1, checkpoint_dir=tmp_path, progress=QUIET)
    with pytest.raises(MNError, match="seed 1, but this run uses seed 2"):
        train_model("m", Net(0), ds, short, seed=2, checkpoint_dir=tmp_path, resume=True, progress=QUIET)
    other = TrainSettings(batch=BATCH, lr=0.2, max_epochs=2)
    with pytest.raises(MNError, match=r"other training settings \(lr 0.1 -> 0.2\)"):
        train_model("m", Net(0), ds, other, seed=1, checkpoint_dir=tmp_path, resume=True, progress=QUIET)
    # without resume, the run starts over and overwrites
    r = train_model("m", Net(0), ds, other, seed=2, checkpoint_dir=tmp_path, progress=QUIET)
    assert r.epochs == 2 and load_checkpoint(tmp_path / "m.pt")["identity"]["seed"] == 2


def test_checkpoint_loads_with_weights_only_and_holds_the_state(tmp_path: Path) -> None:
    ds = data()
    net = Net(0)
    train_model("m", net, ds, TrainSettings(batch=BATCH, max_epochs=2), seed=0, checkpoint_dir=tmp_path,
                progress=QUIET)  # fmt: skip
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["meta"]["epoch"] == 2 and len(payload["meta"]["history"]) == 2
    assert payload["meta"]["early_stopping"]["stale"] >= 0
    assert payload["optimizer"]["state"][0]["momentum_buffer"].shape == net.conv.weight.shape
    assert torch.equal(payload["model"]["fc.weight"], net.fc.weight)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_truncated_foreign_and_mismatched_checkpoints(tmp_path: Path) -> None:
    net = Net(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    good = tmp_path / "good.pt"
    save_checkpoint(good, net, opt, {"epoch": 0})
    data_bytes = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(MNError, match=r"checkpoint .*trunc.pt is corrupt or truncated") as e:
        load_checkpoint(tmp_path / "trunc.pt", Net(0))
    assert "delete" in (e.value.hint or "")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(MNError, match=r"junk.pt is corrupt or truncated"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(MNError, match=r"foreign.pt is not an mncompile checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(
        MNError, match=r"good.pt does not fit model 'Net': .*shape of conv.weight \(4, 1, 3, 3\)"
    ):
        load_checkpoint(good, Net(0, width=5))
    with pytest.raises(MNError, match=r"good.pt does not fit model 'Sequential': missing 0.weight"):
        load_checkpoint(good, nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(MNError, match="missing.pt not found"):
        load_checkpoint(tmp_path / "missing.pt")
    assert load_checkpoint(good, Net(1), torch.optim.SGD(Net(1).parameters(), lr=0.1)) == {"epoch": 0}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def broken(f) -> None:  # type: ignore[no-untyped-def]
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"


def test_a_flipped_byte_in_a_checkpoint_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tester's attack: 64 bytes flipped in a member's checkpoint; --resume must not go on."""
    from mncompile.cli import main

    spec = Path(__file__).resolve().parent.parent / "examples" / "mlp.mnet"
    argv = ["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / "out"),
            "--data", "synthetic", "--train-size", "64", "--test-size", "32", "--max-epochs", "2",
            "--hatched-max-epochs", "1", "--quiet"]
    assert main(argv) == 0
    member = sorted((tmp_path / "out" / "ckpt" / "mothernets" / "members").glob("*.pt"))[0]
    raw = bytearray(member.read_bytes())
    # the largest stored tensor's bytes: the middle of the file's biggest uncompressed entry
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0xFF for b in raw[middle:middle + 64])
    member.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(member) in err and ("checksum" in err or "corrupt" in err) and "Traceback" not in err
    with pytest.raises(MNError, match="checksum|corrupt"):
        load_checkpoint(member)


def test_the_checksum_covers_weights_optimizer_and_meta(tmp_path: Path) -> None:
    import zipfile

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "n.pt"
    save_checkpoint(path, net, opt, {"epoch": 1, "history": [0.5]})
    assert load_checkpoint(path, torch.nn.Linear(3, 2))["epoch"] == 1
    # rewrite one stored tensor's bytes inside the archive, leaving the archive itself valid
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    data = [n for n in entries if "/data/" in n]
    assert data
    for name in data:
        changed = dict(entries)
        changed[name] = bytes(b ^ 1 for b in entries[name])
        bad = tmp_path / "bad.pt"
        with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_STORED) as z:
            for n, blob in changed.items():
                z.writestr(n, blob)
        with pytest.raises(MNError, match="do not match the checksum"):
            load_checkpoint(bad)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    import os

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "mncompile-checkpoint", "version": 2, "meta": Evil()}, path)
    with pytest.raises(MNError) as err:
        load_checkpoint(path)
    assert "(posix.system)" in err.value.message or "(nt.system)" in err.value.message
    assert "never loads those" in err.value.message and "weights_only" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "t.bin"
    errors: list[BaseException] = []

    def write(tag: bytes) -> None:
        try:
            for _ in range(30):
                atomic_write(target, lambda f: f.write(tag * 10000))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(bytes([65 + i]),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(target.read_bytes())) == 1 and not list(tmp_path.glob(".t.bin.*"))
