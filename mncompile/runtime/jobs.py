"""What trains: a phase's settings, its jobs (one model each, with optional hooks), their records.

Plain data, no torch at import: methods (`runtime/methods/`) describe their phases with these
types, engines (`runtime/engines/`) run them through the one epoch loop (`runtime/train.fit`).

>>> s = TrainSettings(lr=0.1, max_epochs=10)
>>> round(s.lr_at(0), 3), round(s.lr_at(5), 3)
(0.1, 0.05)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.formats.settings import SCHEDULES, TRAIN_DEFAULTS

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.runtime.data import Dataset

STATUSES = ("training", "converged", "max_epochs", "diverged")
#: what early stopping watches: the running training accuracy (the paper's rule), or the loss on
#: the validation split (`--val-fraction`)
STOP_RULES = ("train-acc", "val-loss")
#: where a model's mini-batches come from in a lockstep phase: the phase's one shared stream
#: (the paper's scan: every model sees the same batches), a permutation of its own per epoch,
#: or (hatched members only) a bootstrap sample of its own, as bagging draws one: each member
#: then trains on its own data, one at a time
BATCH_ORDERS = ("shared", "member", "bootstrap")

#: the loss-explosion guard (`blown_up`): an epoch whose training loss is above both
#: BLOWUP_RATIO x the best loss before it and BLOWUP_FLOOR counts as blown up, and
#: BLOWUP_EPOCHS such epochs in a row mark the model diverged. The best loss before a model's
#: first epoch is ln C, a uniform guess's: a net that explodes from its first epoch on is
#: caught too. The floor is ln 2: a mean cross-entropy above it means the geometric mean of
#: the probability given to the right class is below one half, so a hatched member (which
#: starts near zero loss) is not stopped by a short spike that stays below it.
BLOWUP_RATIO = 4.0
BLOWUP_FLOOR = math.log(2.0)
BLOWUP_EPOCHS = 3


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one training phase (a MotherNet or a hatched member, say).

    `patience` <= 0 turns early stopping off. `stop` says what it watches (`STOP_RULES`):
    `train-acc`, the paper's rule, or `val-loss`; `tolerance` is the absolute gain an epoch must
    beat the best by to count as an improvement (a fraction of accuracy, or nats of loss).
    `order` is where the model's batches come from in lockstep (`BATCH_ORDERS`).
    """

    # the defaults are those of the train keys' one table, mncompile.formats.settings
    batch: int = int(TRAIN_DEFAULTS["batch"])
    lr: float = float(TRAIN_DEFAULTS["lr"])
    momentum: float = float(TRAIN_DEFAULTS["momentum"])
    weight_decay: float = float(TRAIN_DEFAULTS["weight_decay"])
    patience: int = int(TRAIN_DEFAULTS["patience"])
    max_epochs: int = int(TRAIN_DEFAULTS["max_epochs"])
    schedule: str = str(TRAIN_DEFAULTS["schedule"])
    tolerance: float = 1e-4
    stop: str = "train-acc"
    order: str = "shared"

    def __post_init__(self) -> None:
        if self.stop not in STOP_RULES:
            raise MNError(f"unknown stopping rule '{self.stop}'", hint="use " + " or ".join(STOP_RULES))
        if self.order not in BATCH_ORDERS:
            raise MNError(f"unknown batch order '{self.order}'", hint="use " + " or ".join(BATCH_ORDERS))
        if self.schedule not in SCHEDULES:
            raise MNError(f"unknown schedule '{self.schedule}'", hint="use cosine or constant")
        if self.batch < 1 or self.max_epochs < 0:
            raise MNError(f"batch must be positive and max_epochs at least 0, got {self.batch} and "
                          f"{self.max_epochs}")

    @classmethod
    def from_config(cls, config: Any, phase: str = "mother", stop: str = "train-acc", *,
                    patience: int | None = None, order: str = "shared") -> TrainSettings:
        """The settings of `phase` ('mother' or 'hatched') from a TrainConfig or a plain mapping.

        'hatched' takes `hatched_lr` and `hatched_max_epochs`; everything else is shared.
        `stop` is the phase's early-stopping rule (`STOP_RULES`), `patience` overrides the
        config's, `order` is its batch order (`BATCH_ORDERS`).
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
            patience=int(get("patience")) if patience is None else int(patience),
            max_epochs=int(get("hatched_max_epochs" if hatched else "max_epochs")),
            schedule=str(get("schedule")),
            stop=stop,
            order=order,
        )

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based `epoch`: lr/2 * (1 + cos(pi * epoch / max_epochs)) for cosine."""
        if self.schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / self.max_epochs))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # the paper's rule and scan: the identity a checkpoint was written with before the choice
        if self.stop == "train-acc":
            del d["stop"]
        if self.order == "shared":
            del d["order"]
        return d


@dataclass(frozen=True)
class EpochRecord:
    """One model's epoch: 1-based `epoch`, its lr, running train loss and accuracy, wall seconds.

    In lockstep, `seconds` is the wall time of the shared epoch (every active model's steps plus
    the one data pass), so the seconds of models trained together must not be added up.
    `val_loss`, `val_acc` are measured on the validation split after the epoch (None without
    one), in eval mode; `val_seconds` is that pass's time, which is not training time.
    """

    epoch: int
    lr: float
    train_loss: float
    train_acc: float
    test_acc: float | None
    seconds: float
    val_loss: float | None = None
    val_acc: float | None = None
    val_seconds: float = 0.0

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
    def val_seconds(self) -> float:
        """Time spent on validation passes (not counted in `seconds`)."""
        return sum(r.val_seconds for r in self.history)

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


def blown_up(losses: Sequence[float], lrs: Sequence[float] | None = None,
             classes: int | None = None) -> tuple[int, float] | None:
    """(first 1-based epoch, best loss it is judged by) of a blow-up `losses` end in, or None.

    `losses` are a model's per-epoch training losses (a mean per example and head), `lrs` the
    learning rates the epochs began with (default: all equal), `classes` the number of classes
    (its ln is the loss before any epoch; None: no such bound). The last BLOWUP_EPOCHS epochs
    have blown up when each is above max(BLOWUP_RATIO x best, BLOWUP_FLOOR), where best is the
    lowest of ln C and the losses of the epochs before them that began at a learning rate at
    least as high: a loss that rises after a warm restart (snapshot, FGE) is judged against the
    epochs trained at such a rate, never against the end of a decayed cycle.

    >>> blown_up([0.013, 0.26, 2.30, 1.07, 0.4], classes=10)  # a spike that recovers
    >>> blown_up([0.24, 1.30, 1.45, 0.98], classes=10)        # a collapse: each > 4 x 0.24
    (2, 0.24)
    >>> blown_up([2.2, 1.5, 1.2, 1.1], classes=10)            # a net learning from scratch
    >>> blown_up([3512.0, 6.8e5, 4.2e7], classes=10)          # exploding from the first epoch
    (1, 2.302585092994046)
    >>> blown_up([2.0, 0.05, 0.9, 0.8, 0.8], lrs=[0.2, 0.01, 0.2, 0.15, 0.1])  # a warm restart
    """
    if len(losses) < BLOWUP_EPOCHS:
        return None
    rates = list(lrs) if lrs is not None else [0.0] * len(losses)
    start = len(losses) - BLOWUP_EPOCHS
    prior = math.log(classes) if classes is not None and classes > 1 else math.inf
    worst = math.inf
    for i in range(start, len(losses)):
        best = min([prior, *(loss for loss, lr in zip(losses[:start], rates[:start], strict=True)
                             if lr >= rates[i])])
        if not math.isfinite(best):
            return None
        worst = min(worst, best)
        if not losses[i] > max(BLOWUP_RATIO * best, BLOWUP_FLOOR):
            return None
    return start + 1, worst


def group_seconds(results: Mapping[str, ModelResult]) -> float:
    """Wall time of models trained together in lockstep: each shared epoch counted once."""
    per_epoch: dict[int, float] = {}
    for r in results.values():
        for rec in r.history:
            per_epoch[rec.epoch] = max(per_epoch.get(rec.epoch, 0.0), rec.seconds)
    return sum(per_epoch.values())


@dataclass
class Job:
    """One model trained by `fit`, with what differs from plain cross-entropy training.

    `forward(model, x)` gives the model's output (default `model(x)`); `loss(out, y, aux)` the
    loss, where `aux` is what `fit`'s `batch_hook` returned for this batch; `correct(out, y)`
    the number of right predictions (a float for several outputs); `lr(iteration)` the learning
    rate of a 0-based global iteration (default: `settings.lr_at(epoch)`); `after_step(iteration)`
    runs after that iteration's optimizer step. `heads(out)` splits an output of several heads
    into their [batch, classes] logits for the validation pass (default: `out` is one head);
    the loss of such a job is the sum of its heads' losses, and its history records the mean.
    `scale_grads(model)` runs after each backward pass, before the optimizer step (a
    Shared-MotherNet's per-unit gradient scaling). `extra` names settings beyond `settings` that a
    checkpoint must have been written with to be resumed. `data`, when given, is this job's own
    training set (bagging's bootstrap sample): it cannot share a batch stream with the others.
    A `required` job's failure stops the run (a MotherNet: nothing could hatch from it).
    `lr_flag` is the option that sets its learning rate, which a diverged model's message names.
    """

    name: str
    model: nn.Module
    settings: TrainSettings
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None
    loss: Callable[[Any, torch.Tensor, Any], torch.Tensor] | None = None
    correct: Callable[[Any, torch.Tensor], torch.Tensor] | None = None
    lr: Callable[[int], float] | None = None
    after_step: Callable[[int], None] | None = None
    heads: Callable[[Any], Sequence[torch.Tensor]] | None = None
    scale_grads: Callable[[nn.Module], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    data: Dataset | None = None
    required: bool = False
    lr_flag: str = "--lr"

    @property
    def plain(self) -> bool:
        """Cross-entropy on `model(x)` with the settings' schedule: no hook of its own."""
        return all(h is None for h in (self.forward, self.loss, self.correct, self.lr, self.after_step,
                                        self.scale_grads))


