"""The one epoch loop, `fit`: one model, or several in lockstep over one shared batch stream.

Every method and both engines train through `fit`; `train_lockstep`, `train_model` and
`train_sequential` are its plain cross-entropy forms. A job's hooks (`jobs.Job`) change the
forward pass, the loss or the per-iteration learning rate.

SGD with momentum and weight decay; a cosine (or constant) learning rate per epoch over
`max_epochs`; early stopping when the watched quantity has not improved by more than `tolerance`
(default 1e-4) for `patience` epochs. It watches the training accuracy (`stop="train-acc"`, the
paper's rule) or the validation loss (`stop="val-loss"`). The training accuracy is the running
accuracy over the epoch's mini-batches in train mode (augmented, as Keras reports it), so
measuring it costs no extra pass. With a validation split (`Dataset.x_val`), every model is
evaluated on it after every epoch, in eval mode; that pass is timed apart from training.

The shared scan: each epoch draws one permutation and, per batch, one load and
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
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mncompile.diagnostics import MNError
from mncompile.runtime.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mncompile.runtime.data import Dataset, batches, num_batches
from mncompile.runtime.jobs import (
    BLOWUP_EPOCHS,
    BLOWUP_FLOOR,
    BLOWUP_RATIO,
    STATUSES,
    EpochRecord,
    Job,
    ModelResult,
    TrainSettings,
    blown_up,
    group_seconds,
)
from mncompile.runtime.progress import Progress

__all__ = ["STATUSES", "EpochRecord", "Job", "ModelResult", "Shard", "TrainSettings", "epoch_generator",
           "fit", "group_seconds", "predict_proba", "record_epoch", "resolve_device", "restore",
           "train_lockstep", "train_model", "train_sequential"]

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


def epoch_generator(seed: int, epoch: int, name: str | None = None) -> torch.Generator:
    """The CPU generator of the shared stream of 0-based `epoch`: a function of (seed, epoch) only.

    With `name`, the generator of that model's own stream (`TrainSettings.order` 'member'): a
    function of (seed, epoch, name), so a model's batches never depend on which others train.
    """
    words = [seed & 0xFFFFFFFF, epoch]
    if name is not None:
        words += [1, zlib.crc32(name.encode("utf-8"))]
    mixed = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(mixed[0]) << 32 | int(mixed[1]))


class Shard:
    """How this process takes part in each step: the whole batch, alone (the default).

    A data-parallel engine (runtime/ray_engine.py) gives each worker its slice of every batch,
    sums the epoch's totals over the workers, and lets one of them write the checkpoints.
    """

    def split(self, x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, float | None] | None:
        """This process's part of a batch and the factor its loss is scaled by (None: 1); None skips it."""
        return x, y, None

    def reduce(self, totals: torch.Tensor, seconds: float) -> tuple[torch.Tensor, float]:
        """The epoch's (loss sum, correct, seen) and wall seconds over every process."""
        return totals, seconds

    def end_epoch(self, model: nn.Module) -> None:
        """After an epoch's steps, before it is recorded (data-parallel: average BatchNorm statistics)."""

    def agree(self, val: tuple[float, float, float], device: torch.device) -> tuple[float, float, float]:
        """The epoch's validation (loss, accuracy, seconds) every process decides on (data-parallel:
        the first worker's, so that early stopping can never differ between workers)."""
        return val

    @property
    def writes(self) -> bool:
        """Whether this process writes the checkpoints."""
        return True

    def saved(self) -> None:
        """After the epoch's checkpoints are written (data-parallel: wait for the writer)."""


@dataclass
class _State:
    job: Job
    optimizer: torch.optim.Optimizer
    result: ModelResult
    ckpt: Path | None = None
    best: float = -math.inf
    stale: int = 0

    @property
    def next_epoch(self) -> int:
        return self.result.epochs

    @property
    def done(self) -> bool:
        return self.result.status != "training"


def identity(job: Job, seed: int) -> dict[str, Any]:
    """What a checkpoint must have been written with to be resumed: settings, extras, seed."""
    return {**job.settings.to_dict(), **job.extra, "seed": seed}


def checkpoint_meta(st: _State, seed: int) -> dict[str, Any]:
    """The meta data saved with a model's checkpoint after each epoch."""
    return {
        "name": st.job.name,
        "epoch": st.next_epoch,
        "identity": identity(st.job, seed),
        "early_stopping": {"best": st.best, "stale": st.stale},
        "status": st.result.status,
        "message": st.result.message,
        "history": [r.to_dict() for r in st.result.history],
    }


def history_from(meta: Mapping[str, Any], where: str) -> list[EpochRecord]:
    """The epoch records of a checkpoint's meta data; MNError naming `where` when they are damaged."""
    try:
        return [EpochRecord(**r) for r in meta["history"]]
    except (KeyError, TypeError) as e:
        raise MNError(f"{where} has damaged meta data ({e})", hint="delete it to retrain that model") from e


def restore(st: _State, path: Path, seed: int) -> None:
    """Load a model's checkpoint into its state; refuse one written with another seed or settings."""
    meta = load_checkpoint(path, st.job.model, st.optimizer)
    where = f"checkpoint {path}"
    old, new = meta.get("identity") or {}, identity(st.job, seed)
    if not isinstance(old, dict):
        raise MNError(f"{where} has damaged meta data (identity)", hint="delete it to retrain that model")
    if old.get("seed") != seed:
        raise MNError(
            f"{where} was written with seed {old.get('seed')}, but this run uses seed {seed}",
            hint="resume with the same seed, or delete the checkpoint to start over",
        )
    if old != new:
        diff = ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                         if old.get(k) != new.get(k))
        raise MNError(
            f"{where} was written with other training settings ({diff})",
            hint="resume with the settings it was trained with, or delete the checkpoint to start over",
        )
    history = history_from(meta, where)
    try:
        best = float(meta["early_stopping"]["best"])
        stale = int(meta["early_stopping"]["stale"])
        status, message = str(meta["status"]), meta["message"]
    except (KeyError, TypeError, ValueError) as e:
        raise MNError(f"{where} has damaged meta data ({e})", hint="delete it to retrain that model") from e
    if status not in STATUSES or len(history) != meta.get("epoch"):
        raise MNError(f"{where} has inconsistent meta data", hint="delete it to retrain that model")
    st.best, st.stale = best, stale
    st.result = ModelResult(st.job.name, status, message, history)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_input(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch in the layout the device computes fastest: channels_last for images on CUDA."""
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
            xb = prepare_input(x[start : start + batch_size].to(dev), dev)
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
                 test_acc: float | None, seconds: float, val: tuple[float, float, float] | None = None,
                 lr_flag: str = "--lr", classes: int | None = None) -> EpochRecord:
    """Append epoch `epoch` (0-based) to the history; stop on divergence, patience or max_epochs.

    `val` is the epoch's (validation loss, accuracy, seconds). Early stopping watches what
    `settings.stop` names: the training accuracy, or the validation loss (kept as its negative
    in `best`, so that higher is better for both). A model diverges when its loss is not
    finite, or when it has blown up (`jobs.blown_up`: BLOWUP_EPOCHS epochs in a row above
    BLOWUP_RATIO x its best, and ln C of `classes`, and ln 2); the message names `lr_flag`,
    the setting to lower.
    """
    val_loss, val_acc, val_seconds = val if val is not None else (None, None, 0.0)
    rec = EpochRecord(epoch + 1, lr, loss, acc, test_acc, seconds, val_loss, val_acc, val_seconds)
    st.result.history.append(rec)
    s = settings
    if not math.isfinite(loss):
        st.result.status = "diverged"
        st.result.message = (
            f"training loss became {loss} in epoch {epoch + 1} (lr {lr:.4g}); stopped this model, "
            f"its weights are not usable (lower {lr_flag})"
        )
        return rec
    blowup = blown_up([r.train_loss for r in st.result.history], [r.lr for r in st.result.history], classes)
    if blowup is not None:
        first, best = blowup
        losses = ", ".join(f"{r.train_loss:.3g}" for r in st.result.history[first - 1:])
        st.result.status = "diverged"
        st.result.message = (
            f"training loss blew up: {losses} in epochs {first}-{epoch + 1}, each above "
            f"{BLOWUP_RATIO:g} x the best {best:.3g} and ln 2 = {BLOWUP_FLOOR:.3f} for {BLOWUP_EPOCHS} "
            f"epochs in a row (lr {lr:.4g}); stopped this model (lower {lr_flag})"
        )
        return rec
    by_val = s.stop == "val-loss"
    if by_val and val_loss is None:
        raise MNError("early stopping on validation loss needs a validation split",
                      hint="give --val-fraction above 0, or use --stop train-acc")
    if by_val:
        assert val_loss is not None
        watched = -val_loss if math.isfinite(val_loss) else -math.inf
    else:
        watched = acc
    if watched > st.best + s.tolerance:
        st.best, st.stale = watched, 0
    else:
        st.stale += 1
    if s.patience > 0 and st.stale >= s.patience:
        st.result.status = "converged"
        st.result.message = (
            f"validation loss has not improved for {s.patience} epochs (best {-st.best:.4f})" if by_val else
            f"training accuracy has not improved for {s.patience} epochs (best {st.best * 100:.2f}%)"
        )
    elif epoch + 1 >= s.max_epochs:
        st.result.status = "max_epochs"
        st.result.message = f"reached max_epochs {s.max_epochs}"
    return rec


def _heads(job: Job, out: Any) -> Sequence[torch.Tensor]:
    """A job's output as its heads' [N, C] logits: `job.heads` splits one of several heads."""
    if job.heads is not None:
        return job.heads(out)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise MNError(f"model '{job.name}' gives outputs of shape {shape}, not [batch, classes] logits, so "
                      "its validation pass cannot score them",
                      hint="give its Job a `heads` hook that splits the output into [batch, classes] "
                      "logits, or train with --val-fraction 0")
    return [out]


@torch.no_grad()
def validate(job: Job, data: Dataset, device: torch.device,
             batch_size: int = 1024) -> tuple[float, float, float]:
    """(loss, accuracy, seconds) of `job`'s model on the validation split, in eval mode.

    The loss is cross-entropy (averaged over the heads of a model with several, as TreeNets'
    branches), whatever the job trains on: a distilled student is judged on the labels.
    """
    assert data.x_val is not None and data.y_val is not None
    start = time.perf_counter()
    model = job.model
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    try:
        for i in range(0, len(data.y_val), batch_size):
            x = prepare_input(data.x_val[i : i + batch_size], device)
            y = data.y_val[i : i + batch_size]
            with _autocast(device):
                out = job.forward(model, x) if job.forward is not None else model(x)
            heads = _heads(job, out)
            for h in heads:
                loss += F.cross_entropy(h.float(), y, reduction="sum").double() / len(heads)
                correct += (h.argmax(1) == y).sum().double() / len(heads)
    finally:
        model.train(was_training)
    n = len(data.y_val)
    value, acc = float(loss) / n, float(correct) / n
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return value, acc, time.perf_counter() - start


class _Fused:
    """A fused group of one epoch: its module and the training states of its members."""

    def __init__(self, group: Any, states: list[_State], epoch: int, dev: torch.device) -> None:
        self.group, self.states = group, states
        s = [st.job.settings for st in states]
        self.rates = [x.lr_at(epoch) for x in s]  # as recorded: the settings' floats
        momenta, decays = [x.momentum for x in s], [x.weight_decay for x in s]
        self.lr = torch.tensor(self.rates, device=dev)
        self.momentum = torch.tensor(momenta, device=dev)
        self.weight_decay = torch.tensor(decays, device=dev)
        self.keys = [id(st) for st in states]
        same = set(zip(self.rates, momenta, decays, strict=True))
        self.uniform = same.pop() if len(same) == 1 else None
        group.pack([st.job.model for st in states], [st.optimizer for st in states])

    def unpack(self) -> None:
        self.group.unpack([st.job.model for st in self.states], [st.optimizer for st in self.states],
                          [st.job.settings.momentum for st in self.states])
        for st, lr in zip(self.states, self.rates, strict=True):
            for group in st.optimizer.param_groups:  # as an unfused epoch leaves it
                group["lr"] = lr


def _fused_groups(active: Sequence[_State], describe: Callable[[nn.Module], Any] | None, dev: torch.device,
                  cache: dict[tuple[Any, ...], Any], epoch: int, progress: Progress) -> list[_Fused]:
    """This epoch's fused groups of the active states (groups of two or more), packed."""
    from mncompile.runtime.fused import (
        FusedGroup,
        describe_module,
        fusable,
        groups_of,
        unfused_why,
        waste_for,
    )

    descs = {}
    for i, st in enumerate(active):
        if fusable(st.job):
            d = describe_module(st.job.model, describe)
            if d is not None:
                descs[i] = d
    out, keys = [], set()
    for members in groups_of(descs):
        states = [active[i] for i in members]
        shared = all(st.job.settings.order != "member" for st in states)
        names = tuple(st.job.name for st in states)
        rank, family = descs[members[0]].rank, descs[members[0]].family
        waste = waste_for(dev, rank, family)
        if waste < 0:  # measured slower fused on this device (fused.WASTE): these nets train unfused
            key: tuple[Any, ...] = ("unfused", names)
            if key not in cache:
                cache[key] = None
                progress.note(f"not fused: {', '.join(names)} ({unfused_why(dev, rank, family)})")
            keys.add(key)
            continue
        key = (names, shared)
        keys.add(key)
        if key not in cache:
            cache[key] = FusedGroup([descs[i] for i in members], shared_input=shared, waste=waste).to(dev)
            parts = cache[key].largest_parts()
            progress.note(f"fused from epoch {epoch + 1}: {', '.join(key[0])} (largest op {parts} of "
                          f"{len(members)} nets)")
        out.append(_Fused(cache[key], states, epoch, dev))
    for stale in set(cache) - keys:  # a member left: that group is not needed again
        del cache[stale]
    return out


def _fused_step(g: _Fused, x: torch.Tensor, y: torch.Tensor, mine: Mapping[int, Any], dev: torch.device,
                totals: Mapping[int, torch.Tensor]) -> None:
    """One forward, backward and SGD step of a fused group on the shared batch, or on the members' own
    batches (`mine`, by state) stacked."""
    from mncompile.runtime.fused import member_correct, member_losses

    if not g.group.shared_input:
        xs, ys = [], []
        for k in g.keys:
            xk, yk = mine[k] if k in mine else (x, y)
            xs.append(xk)
            ys.append(yk)
        if len({len(v) for v in ys}) > 1:
            raise ValueError("the members of a fused group drew batches of different sizes")
        x, y = torch.stack(xs, 1), torch.stack(ys, 1)
    g.group.train()
    with _autocast(dev):
        out = g.group(x)
    losses = member_losses(out, y)
    g.group.zero_grad(set_to_none=True)
    losses.sum().backward()
    g.group.sgd_step(g.lr, g.momentum, g.weight_decay, g.uniform)
    with torch.no_grad():
        correct = member_correct(out, y)
        n = y.shape[0]
        for i, k in enumerate(g.keys):
            t = totals[k]
            t[0] += losses[i].detach().double() * n
            t[1] += correct[i].double()
            t[2] += n


def fit(
    jobs: Sequence[Job],
    data: Dataset,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    phase: str = "train",
    batch_hook: Callable[[torch.Tensor], Any] | None = None,
    evaluate_test: bool = False,
    shard: Shard | None = None,
    fuse: bool = False,
    describe: Callable[[nn.Module], Any] | None = None,
) -> dict[str, ModelResult]:
    """The epoch loop: train `jobs` in lockstep over one shared stream of mini-batches.

    Every method and both engines train through this function. The stream of 0-based epoch e
    is `batches(data, batch, epoch_generator(seed, e))`; each batch is loaded (and augmented)
    once and fed to every job still training. `batch_hook(x)`, when given, runs once per batch
    before the jobs' steps, and its result reaches every job's `loss` (distillation computes the
    teacher's logits there). With `checkpoint_dir`, each job is saved to `<dir>/<name>.pt` after
    each of its epochs; `resume=True` continues those that exist. `evaluate_test` adds each
    epoch's test accuracy to the history (one extra pass over the test set per model and epoch).
    `shard` is a data-parallel worker's share of each step (default: the whole batch).
    With `fuse`, the plain jobs whose models are nets of the language train in fused groups
    (`runtime/fused.py`): one forward, backward and SGD step per group and batch, the same
    results to float32 rounding; `describe(model)` gives a generated models.py net's
    description (a `runtime.nets.Net` carries its own). A data-parallel shard or a batch hook
    is never fused.
    Returns each job's `ModelResult`; a diverged model is reported there, not raised.
    """
    dev = resolve_device(device)
    progress = progress if progress is not None else Progress()
    shard = shard if shard is not None else Shard()
    sizes = {j.settings.batch for j in jobs}
    if len(sizes) > 1:
        raise ValueError(f"models trained in lockstep must share one batch size, got {sorted(sizes)}")
    if not jobs:
        return {}
    batch = sizes.pop()
    if batch_hook is not None and any(j.settings.order == "member" for j in jobs):
        raise ValueError("a batch hook computes on the shared stream: its jobs cannot have batch orders "
                         "of their own")
    if not data.has_val and any(j.settings.stop == "val-loss" for j in jobs):
        raise MNError("early stopping on validation loss needs a validation split",
                      hint="give --val-fraction above 0, or use --stop train-acc")
    data = data.to(dev)
    states: list[_State] = []
    notes: list[str] = []
    for job in jobs:
        job.model.to(dev)
        if dev.type == "cuda" and data.x_train.dim() == 4:
            job.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        s = job.settings
        opt = torch.optim.SGD(job.model.parameters(), lr=s.lr, momentum=s.momentum,
                              weight_decay=s.weight_decay)
        st = _State(job, opt, ModelResult(job.name))
        if checkpoint_dir is not None:
            st.ckpt = checkpoint_path(checkpoint_dir, job.name)
            if resume and st.ckpt.is_file():
                restore(st, st.ckpt, seed)
                notes.append(f"{job.name}: resumed after epoch {st.next_epoch} ({st.result.status})")
        states.append(st)

    for st in states:
        if st.job.settings.max_epochs == 0 and not st.done:
            # hatched_max_epochs 0: the hatched members are the ensemble as they are
            st.result.status, st.result.message = "max_epochs", "max_epochs is 0: not trained"
    todo = [st for st in states if not st.done]
    if not todo:
        return {st.job.name: st.result for st in states}
    first = min(st.next_epoch for st in todo)
    last = max(st.job.settings.max_epochs for st in todo)
    n_batches = num_batches(data, batch)
    cache: dict[tuple[Any, ...], Any] = {}
    progress.begin(phase, [j.name for j in jobs], last, n_batches, done_epochs=first)
    for note in notes:
        progress.note(note)
    try:
        for epoch in range(first, last):
            if all(st.done for st in states):
                break
            active = [st for st in states if not st.done and st.next_epoch == epoch]
            if not active:
                progress.advance(n_batches)
                continue
            start = time.perf_counter()
            first_lr: dict[str, float] = {}
            # per-epoch sums on the device, so that a GPU never waits on a .item() per batch
            totals = {id(st): torch.zeros(3, device=dev, dtype=torch.float64) for st in active}
            heads: dict[int, int] = {}
            for st in active:
                st.job.model.train()
            # a model with a batch order of its own draws its own permutation (and augmentation)
            own = {id(st): batches(data, batch, epoch_generator(seed, epoch, st.job.name), dev)
                   for st in active if st.job.settings.order == "member"}
            fused = (_fused_groups(active, describe, dev, cache, epoch, progress)
                     if fuse and batch_hook is None and type(shard) is Shard else [])
            in_group = {id(st) for g in fused for st in g.states}
            for g in fused:  # a fused member's rate is the epoch's: recorded as its first step's
                first_lr.update((st.job.name, lr) for st, lr in zip(g.states, g.rates, strict=True))
            # in-memory data is on `dev` already; a streamed split is read and moved batch by batch
            shared_stream = batches(data, batch, epoch_generator(seed, epoch), dev)
            for step, (x, y) in enumerate(shared_stream):
                it = epoch * n_batches + step
                mine = {key: next(stream) for key, stream in own.items()}
                part = shard.split(x, y)
                if part is None:
                    progress.advance()
                    continue
                x, y, weight = part
                x = prepare_input(x, dev)
                aux = batch_hook(x) if batch_hook is not None else None
                shared_part = (x, y, weight)
                for g in fused:
                    _fused_step(g, x, y, mine, dev, totals)
                for st in active:
                    if id(st) in in_group:
                        continue
                    j = st.job
                    if id(st) in mine:
                        own_part = shard.split(*mine[id(st)])
                        if own_part is None:
                            continue
                        x, y, weight = own_part
                        x = prepare_input(x, dev)
                    else:
                        x, y, weight = shared_part
                    lr = j.lr(it) if j.lr is not None else j.settings.lr_at(epoch)
                    first_lr.setdefault(j.name, lr)
                    for group in st.optimizer.param_groups:
                        group["lr"] = lr
                    with _autocast(dev):
                        out = j.forward(j.model, x) if j.forward is not None else j.model(x)
                    loss = j.loss(out, y, aux) if j.loss is not None else F.cross_entropy(out.float(), y)
                    st.optimizer.zero_grad(set_to_none=True)
                    (loss if weight is None else loss * weight).backward()
                    if j.scale_grads is not None:
                        j.scale_grads(j.model)
                    st.optimizer.step()
                    with torch.no_grad():
                        t = totals[id(st)]
                        if id(st) not in heads:
                            heads[id(st)] = len(j.heads(out)) if j.heads is not None else 1
                        # a model of several heads trains on their sum; recorded per head
                        t[0] += loss.detach().double() * (len(y) / heads[id(st)])
                        t[1] += (j.correct(out, y) if j.correct is not None
                                 else (out.argmax(1) == y).sum()).double()
                        t[2] += len(y)
                    if j.after_step is not None:
                        j.after_step(it)
                progress.advance()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            # the shared epoch's training wall time (one data pass, every active model's steps);
            # the optional test pass is evaluation, not training, so it is left out
            elapsed = time.perf_counter() - start
            for g in fused:
                g.unpack()
            for st in active:
                shard.end_epoch(st.job.model)
                t, seconds = shard.reduce(totals[id(st)], elapsed)
                loss_sum, correct, seen = (float(v) for v in t)
                test_acc = _test_accuracy(st.job.model, data, dev) if evaluate_test else None
                # the validation pass is timed on its own: it is not training time
                val = shard.agree(validate(st.job, data, dev), dev) if data.has_val else None
                rec = record_epoch(st, st.job.settings, epoch, first_lr.get(st.job.name, 0.0),
                                   loss_sum / max(seen, 1), correct / max(seen, 1), test_acc, seconds, val,
                                   st.job.lr_flag, data.classes)
                progress.epoch(st.job.name, rec.epoch, st.job.settings.max_epochs, lr=rec.lr,
                               loss=rec.train_loss, acc=rec.train_acc, test_acc=rec.test_acc, seconds=seconds,
                               val_acc=rec.val_acc)
                if st.done:
                    progress.note(f"{st.job.name}: {st.result.status}: {st.result.message}")
                if st.ckpt is not None and shard.writes:
                    save_checkpoint(st.ckpt, st.job.model, st.optimizer, checkpoint_meta(st, seed))
            shard.saved()
    finally:
        progress.end()
    return {st.job.name: st.result for st in states}


def train_lockstep(
    models: Mapping[str, nn.Module],
    data: Dataset,
    settings: TrainSettings | Mapping[str, TrainSettings],
    **kwargs: Any,
) -> dict[str, ModelResult]:
    """Train every model in `models` with cross-entropy over one shared stream of mini-batches.

    `settings` is one TrainSettings for all, or one per model name; all must share the batch size.
    The keyword arguments are those of `fit` (checkpoint_dir, resume, seed, device, progress, ...).
    Returns each model's `ModelResult`; a diverged model is reported there, not raised.
    """
    jobs = [Job(n, m, settings[n] if isinstance(settings, Mapping) else settings) for n, m in models.items()]
    return fit(jobs, data, **kwargs)


def train_model(
    name: str,
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    **kwargs: Any,
) -> ModelResult:
    """Train one model; the keyword arguments are those of `fit`."""
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
