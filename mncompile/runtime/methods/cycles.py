"""What snapshot ensembles and FGE share: per-iteration learning-rate cycles and the snapshots.

The hooks are small picklable objects (not closures over the run), so that any engine can ship
a job that uses them to another process.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mncompile.diagnostics import MNError
from mncompile.runtime.methods.options import mean_sized_member, member_option

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from torch import nn

    from mncompile.runtime.context import RunContext
    from mncompile.runtime.jobs import TrainSettings


def snapshot_lr(iteration: int, cycle_iterations: int, lr0: float) -> float:
    """lr0 / 2 * (1 + cos(pi * t / T_cycle)), t = the 0-based iteration within its cycle.

    >>> snapshot_lr(0, 10, 0.2), round(snapshot_lr(5, 10, 0.2), 6), snapshot_lr(10, 10, 0.2)
    (0.2, 0.1, 0.2)
    """
    t = iteration % cycle_iterations
    return lr0 / 2 * (1 + math.cos(math.pi * t / cycle_iterations))


def fge_lr(iteration: int, cycle_iterations: int, lr1: float, lr2: float) -> float:
    """The FGE triangle: with t = ((iteration mod c) + 1) / c, lr1 -> lr2 over the first half, back after.

    (1 - 2t) lr1 + 2t lr2 for t <= 1/2, else (2 - 2t) lr2 + (2t - 1) lr1 (Garipov et al., 2018).

    >>> fge_lr(4, 10, 0.05, 1e-4), fge_lr(9, 10, 0.05, 1e-4)
    (0.0001, 0.05)
    """
    t = (iteration % cycle_iterations + 1) / cycle_iterations
    if t <= 0.5:
        return (1 - 2 * t) * lr1 + 2 * t * lr2
    return (2 - 2 * t) * lr2 + (2 * t - 1) * lr1


def fge_collects(iteration: int, cycle_iterations: int) -> bool:
    """Whether FGE collects a model after `iteration`: at the cycle's midpoint, where lr = lr2."""
    return iteration % cycle_iterations + 1 == max(1, cycle_iterations // 2)


@dataclass
class Snapshots:
    """Saves the model's weights as snapshot k when told; snapshots live beside the checkpoints."""

    folder: Path
    base: str
    model: nn.Module

    def name(self, k: int) -> str:
        return f"{self.base}@{k}"

    def save(self, k: int) -> None:
        from mncompile.runtime.checkpoint import checkpoint_path, save_checkpoint

        save_checkpoint(checkpoint_path(self.folder, self.name(k)), self.model, None, {"snapshot": k})

    def load(self, ctx: RunContext, count: int, why: str) -> dict[str, nn.Module]:
        """Snapshots 1..count as fresh nets of the base architecture, on the run's device."""
        from mncompile.runtime.checkpoint import checkpoint_path, load_checkpoint

        out = {}
        for k in range(1, count + 1):
            path = checkpoint_path(self.folder, self.name(k))
            if not path.is_file():
                raise MNError(f"snapshot {k} of '{self.base}' was never taken: {why}",
                              hint="lower the learning rate of the method's cycles")
            model = ctx.build(self.base)
            load_checkpoint(path, model)
            out[self.name(k)] = model.to(ctx.device)
        return out


@dataclass
class CosineCycles:
    """Snapshot ensembles' learning rate of an iteration."""

    cycle_iterations: int
    lr0: float

    def __call__(self, iteration: int) -> float:
        return snapshot_lr(iteration, self.cycle_iterations, self.lr0)


@dataclass
class TriangleCycles:
    """FGE's learning rate of an iteration."""

    cycle_iterations: int
    lr1: float
    lr2: float

    def __call__(self, iteration: int) -> float:
        return fge_lr(iteration, self.cycle_iterations, self.lr1, self.lr2)


@dataclass
class AtCycleEnd:
    """After each iteration: a snapshot at the end of every cycle (snapshot ensembles)."""

    snapshots: Snapshots
    cycle_iterations: int

    def __call__(self, iteration: int) -> None:
        if (iteration + 1) % self.cycle_iterations == 0:
            self.snapshots.save((iteration + 1) // self.cycle_iterations)


@dataclass
class AtCycleLow:
    """After each iteration: a snapshot at every cycle's low point (FGE)."""

    snapshots: Snapshots
    cycle_iterations: int

    def __call__(self, iteration: int) -> None:
        if fge_collects(iteration, self.cycle_iterations):
            self.snapshots.save(iteration // self.cycle_iterations + 1)


def base_member(ctx: RunContext, opts: Mapping[str, Any]) -> str:
    """The one architecture trained: `--base`, else the member nearest the mean size."""
    return member_option(ctx, opts["base"], "base") or mean_sized_member(ctx)


def cycles_settings(ctx: RunContext, lr: float, epochs: int) -> TrainSettings:
    """A fixed budget: the cycles run in full, no early stopping."""
    return dataclasses.replace(ctx.mother_settings, lr=lr, max_epochs=epochs, patience=0)


def batches_per_epoch(ctx: RunContext) -> int:
    from mncompile.runtime.data import num_batches

    return num_batches(ctx.dataset, ctx.mother_settings.batch)
