"""Training loops: one model, or several in lockstep over one shared stream of mini-batches.

SGD with momentum and weight decay; a cosine (or constant) learning rate per epoch over
`max_epochs`; early stopping when the training accuracy has not improved by more than `tolerance`
(default 1e-4, an absolute fraction: 0.01 percentage points) for `patience` epochs. The training
accuracy is the running accuracy over the epoch's mini-batches in train mode (augmented, as
Keras reports it), so measuring it costs no extra pass.

The shared scan (`train_lockstep`): each epoch draws one permutation and, per batch, one load and
one augmentation, and feeds that batch to every model still training. A model that stops early
or diverges drops out; the rest go on. The stream of epoch `e` depends only on (seed, e), never on
which models are active, so `train_sequential` (one model at a time) gives bit-identical weights
on the CPU, and a resume can bring models that stopped at different epochs back in step.

After every epoch every model that trained it is checkpointed atomically (`checkpoint.py`);
`resume=True` continues each model from its last completed epoch, bit-identical to an
uninterrupted run on the CPU. A Ctrl-C propagates as `KeyboardInterrupt`; the checkpoints of
completed epochs are already safe on disk.

>>> from mncompile.runtime.data import load_dataset
>>> ds = load_dataset("synthetic", (8,), 2, seed=0, train_size=64, test_size=16)
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
>>> s = TrainSettings(batch=16, lr=0.05, max_epochs=3, patience=5)
>>> r = train_model("net", net, ds, s, seed=0, progress=Progress(quiet=True))
>>> r.status, r.epochs
('max_epochs', 3)
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mncompile.diagnostics import MNError
from mncompile.runtime.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mncompile.runtime.data import Dataset, batches, num_batches
from mncompile.runtime.progress import Progress

STATUSES = ("training", "converged", "max_epochs", "diverged")


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one training phase (a MotherNet or a hatched member, say).

    `patience` <= 0 turns early stopping off; `tolerance` is the absolute gain in training
    accuracy (a fraction) an epoch must beat the best by to count as an improvement.
    """

    batch: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    patience: int = 15
    max_epochs: int = 200
    schedule: str = "cosine"
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise MNError(f"unknown schedule '{self.schedule}'", hint="use cosine or constant")
        if self.batch < 1 or self.max_epochs < 1:
            raise MNError(f"batch and max_epochs must be positive, got {self.batch} and {self.max_epochs}")

    @classmethod
    def from_config(cls, config: Any, phase: str = "mother") -> TrainSettings:
        """The settings of `phase` ('mother' or 'hatched') from a TrainConfig or a plain mapping.

        'hatched' takes `hatched_lr` and `hatched_max_epochs`; everything else is shared.
        """

        def get(key: str) -> Any:
            return config[key] if isinstance(config, Mapping) else getattr(config, key)

        if phase not in ("mother", "hatched"):
            raise ValueError(f"phase must be 'mother' or 'hatched', got {phase!r}")
        hatched = phase == "hatched"
        return cls(
            batch=int(get("batch")),
            lr=float(get("hatched_lr" if hatched else "lr")),
            momentum=float(get("momentum")),
            weight_decay=float(get("weight_decay")),
            patience=int(get("patience")),
            max_epochs=int(get("hatched_max_epochs" if hatched else "max_epochs")),
            schedule=str(get("schedule")),
        )

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based `epoch`: lr/2 * (1 + cos(pi * epoch / max_epochs)) for cosine."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.max_epochs))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochRecord:
    """One model's epoch: 1-based `epoch`, its lr, running train loss and accuracy, wall seconds.

    In lockstep, `seconds` is the wall time of the shared epoch (every active model's steps plus
    the one data pass), so the seconds of models trained together must not be added up.
    """

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_acc: float | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelResult:
    """How one model's training went: status, message (why it stopped), per-epoch history."""

    name: str
    status: str = "training"
    message: str | None = None
    history: list[EpochRecord] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.history)

    @property
    def ok(self) -> bool:
        """False when the model diverged (its weights are not finite)."""
        return self.status != "diverged"

    @property
    def final_train_acc(self) -> float | None:
        return self.history[-1].train_acc if self.history else None

    @property
    def best_train_acc(self) -> float | None:
        finite = [r.train_acc for r in self.history if math.isfinite(r.train_loss)]
        return max(finite) if finite else None


def group_seconds(results: Mapping[str, ModelResult]) -> float:
    """Wall time of models trained together in lockstep: each shared epoch counted once."""
    per_epoch: dict[int, float] = {}
    for r in results.values():
        for rec in r.history:
            per_epoch[rec.epoch] = max(per_epoch.get(rec.epoch, 0.0), rec.seconds)
    return sum(per_epoch.values())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' is CUDA when available, else the CPU; asking for missing CUDA is an MNError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MNError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU", hint="use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise MNError(f"unknown device '{device}'", hint="use auto, cpu or cuda") from e


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The CPU generator of the shared stream of 0-based `epoch`: a function of (seed, epoch) only."""
    mixed = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


@dataclass
class _Run:
    name: str
    model: nn.Module
    settings: TrainSettings
    optimizer: torch.optim.Optimizer
    result: ModelResult
    best: float = -1.0
    stale: int = 0
    ckpt: Path | None = None
    # per-epoch accumulators, on the device so a GPU never waits on a .item() per batch
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    seen: int = 0

    @property
    def next_epoch(self) -> int:
        return self.result.epochs

    @property
    def done(self) -> bool:
        return self.result.status != "training"

    def meta(self, seed: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "epoch": self.next_epoch,
            "seed": seed,
            "settings": self.settings.to_dict(),
            "early_stopping": {"best": self.best, "stale": self.stale},
            "status": self.result.status,
            "message": self.result.message,
            "history": [r.to_dict() for r in self.result.history],
        }


def _restore(run: _Run, seed: int) -> None:
    assert run.ckpt is not None
    meta = load_checkpoint(run.ckpt, run.model, run.optimizer)
    where = f"checkpoint {run.ckpt}"
    if meta.get("seed") != seed:
        raise MNError(
            f"{where} was written with seed {meta.get('seed')}, but this run uses seed {seed}",
            hint="resume with the same seed, or delete the checkpoint to start over",
        )
    if meta.get("settings") != run.settings.to_dict():
        old, new = meta.get("settings") or {}, run.settings.to_dict()
        diff = ", ".join(f"{k} {old.get(k)} -> {new[k]}" for k in new if old.get(k) != new[k])
        raise MNError(
            f"{where} was written with other training settings ({diff})",
            hint="resume with the settings it was trained with, or delete the checkpoint to start over",
        )
    try:
        history = [EpochRecord(**r) for r in meta["history"]]
        run.best = float(meta["early_stopping"]["best"])
        run.stale = int(meta["early_stopping"]["stale"])
        status, message = str(meta["status"]), meta["message"]
    except (KeyError, TypeError) as e:
        raise MNError(f"{where} has damaged meta data ({e})", hint="delete it to retrain that model") from e
    if status not in STATUSES or len(history) != meta.get("epoch"):
        raise MNError(f"{where} has inconsistent meta data", hint="delete it to retrain that model")
    run.result = ModelResult(run.name, status, message, history)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1024, device: str | torch.device | None = None
) -> torch.Tensor:
    """Softmax probabilities [N, C] of `model` on `x` in eval mode, as float32 on the CPU.

    The model's train/eval mode is restored afterwards.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        outs = []
        for start in range(0, len(x), batch_size):
            xb = _prepare_input(x[start : start + batch_size].to(dev), dev)
            with _autocast(dev):
                logits = model(xb)
            outs.append(torch.softmax(logits.float(), dim=1).cpu())
        return torch.cat(outs)
    finally:
        model.train(was_training)


def _test_accuracy(model: nn.Module, data: Dataset, device: torch.device) -> float:
    probs = predict_proba(model, data.x_test, device=device)
    return float((probs.argmax(1) == data.y_test.cpu()).double().mean())


class StoppingState(Protocol):
    """What early-stopping bookkeeping needs of a model's training state."""

    result: ModelResult
    best: float
    stale: int


def record_epoch(st: StoppingState, settings: TrainSettings, epoch: int, lr: float, loss: float, acc: float,
                 test_acc: float | None, seconds: float) -> EpochRecord:
    """Append epoch `epoch` (0-based) to the history; stop on divergence, patience or max_epochs."""
    rec = EpochRecord(epoch + 1, lr, loss, acc, test_acc, seconds)
    st.result.history.append(rec)
    s = settings
    if not math.isfinite(loss):
        st.result.status = "diverged"
        st.result.message = (
            f"training loss became {loss} in epoch {epoch + 1} (lr {lr:.4g}); stopped this model, "
            "its weights are not usable (try a lower learning rate)"
        )
        return rec
    if acc > st.best + s.tolerance:
        st.best, st.stale = acc, 0
    else:
        st.stale += 1
    if s.patience > 0 and st.stale >= s.patience:
        st.result.status = "converged"
        st.result.message = (
            f"training accuracy has not improved for {s.patience} epochs (best {st.best * 100:.2f}%)"
        )
    elif epoch + 1 >= s.max_epochs:
        st.result.status = "max_epochs"
        st.result.message = f"reached max_epochs {s.max_epochs}"
    return rec


def _end_epoch(run: _Run, epoch: int, lr: float, seconds: float, test_acc: float | None) -> EpochRecord:
    loss = float(run.loss_sum) / max(run.seen, 1)
    acc = float(run.correct) / max(run.seen, 1)
    return record_epoch(run, run.settings, epoch, lr, loss, acc, test_acc, seconds)


def _stream(data: Dataset, batch: int, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return batches(data, batch, epoch_generator(seed, epoch))


def train_lockstep(
    models: Mapping[str, nn.Module],
    data: Dataset,
    settings: TrainSettings | Mapping[str, TrainSettings],
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    evaluate_test: bool = False,
    progress: Progress | None = None,
    phase: str = "train",
) -> dict[str, ModelResult]:
    """Train every model in `models` over one shared stream of mini-batches (the shared scan).

    `settings` is one TrainSettings for all, or one per model name; all must share the batch size.
    With `checkpoint_dir`, each model is saved to `<dir>/<name>.pt` after each of its epochs;
    `resume=True` loads those that exist and continues from them. `evaluate_test` adds each
    epoch's test accuracy to the history (one extra pass over the test set per model and epoch).
    Returns each model's `ModelResult`; a diverged model is reported there, not raised.
    """
    dev = resolve_device(device)
    progress = progress if progress is not None else Progress()
    per_model = {n: (settings[n] if isinstance(settings, Mapping) else settings) for n in models}
    sizes = {s.batch for s in per_model.values()}
    if len(sizes) > 1:
        raise ValueError(f"models trained in lockstep must share one batch size, got {sorted(sizes)}")
    if not models:
        return {}
    batch = sizes.pop()
    data = data.to(dev)
    runs: list[_Run] = []
    notes: list[str] = []
    for name, model in models.items():
        model.to(dev)
        if dev.type == "cuda" and data.x_train.dim() == 4:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        s = per_model[name]
        opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        run = _Run(name, model, s, opt, ModelResult(name))
        if checkpoint_dir is not None:
            run.ckpt = checkpoint_path(checkpoint_dir, name)
            if resume and run.ckpt.is_file():
                _restore(run, seed)
                notes.append(f"{name}: resumed after epoch {run.next_epoch} ({run.result.status})")
        runs.append(run)

    todo = [r for r in runs if not r.done]
    if not todo:
        return {r.name: r.result for r in runs}
    first = min(r.next_epoch for r in todo)
    last = max(r.settings.max_epochs for r in todo)
    n_batches = num_batches(data, batch)
    progress.begin(phase, [r.name for r in runs], last, n_batches, done_epochs=first)
    for note in notes:
        progress.note(note)
    try:
        for epoch in range(first, last):
            if all(r.done for r in runs):
                break
            active = [r for r in runs if not r.done and r.next_epoch == epoch]
            if not active:
                progress.advance(n_batches)
                continue
            start = time.perf_counter()
            lrs = {}
            for r in active:
                lrs[r.name] = r.settings.lr_at(epoch)
                for group in r.optimizer.param_groups:
                    group["lr"] = lrs[r.name]
                r.model.train()
                r.loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
                r.correct = torch.zeros((), device=dev, dtype=torch.int64)
                r.seen = 0
            for x, y in _stream(data, batch, seed, epoch):
                x = _prepare_input(x, dev)
                for r in active:
                    with _autocast(dev):
                        out = r.model(x)
                    loss = F.cross_entropy(out.float(), y)
                    r.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    r.optimizer.step()
                    with torch.no_grad():
                        r.loss_sum += loss.detach().double() * len(y)
                        r.correct += (out.argmax(1) == y).sum()
                    r.seen += len(y)
                progress.advance()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            # the shared epoch's training wall time (one data pass, every active model's steps);
            # the optional test pass is evaluation, not training, so it is left out
            seconds = time.perf_counter() - start
            tests = {r.name: _test_accuracy(r.model, data, dev) if evaluate_test else None for r in active}
            for r in active:
                rec = _end_epoch(r, epoch, lrs[r.name], seconds, tests[r.name])
                progress.epoch(
                    r.name,
                    rec.epoch,
                    r.settings.max_epochs,
                    lr=rec.lr,
                    loss=rec.train_loss,
                    acc=rec.train_acc,
                    test_acc=rec.test_acc,
                    seconds=seconds,
                )
                if r.done:
                    progress.note(f"{r.name}: {r.result.status}: {r.result.message}")
                if r.ckpt is not None:
                    save_checkpoint(r.ckpt, r.model, r.optimizer, r.meta(seed))
    finally:
        progress.end()
    return {r.name: r.result for r in runs}


def train_model(
    name: str,
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    **kwargs: Any,
) -> ModelResult:
    """Train one model; the keyword arguments are those of `train_lockstep`."""
    kwargs.setdefault("phase", name)
    return train_lockstep({name: model}, data, settings, **kwargs)[name]


def train_sequential(
    models: Mapping[str, nn.Module],
    data: Dataset,
    settings: TrainSettings | Mapping[str, TrainSettings],
    **kwargs: Any,
) -> dict[str, ModelResult]:
    """Train the models one at a time, each over the same stream a lockstep run would give it.

    The results equal `train_lockstep`'s bit for bit on the CPU; only the cost differs (one data
    pass per model instead of one for all). Keyword arguments are those of `train_lockstep`.
    """
    phase = kwargs.pop("phase", "train")
    out: dict[str, ModelResult] = {}
    for name, model in models.items():
        s = settings[name] if isinstance(settings, Mapping) else settings
        out[name] = train_lockstep({name: model}, data, s, phase=f"{phase} {name}", **kwargs)[name]
    return out
