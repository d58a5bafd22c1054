"""What a method sees of a run, what it hands an engine, and what it hands back.

A *method* (`runtime/methods/`) is a function `run(ctx) -> Outcome`. It builds nets, says which
of them train together in which *phase* with which settings (`Phase`, a list of
`jobs.Job`), and gives each phase to `ctx.engine.run(ctx, phase)`. It never asks which engine
that is: `local` trains in this process, `ray` on a cluster (`runtime/engines/`); the pipeline
chooses one, once. Methods build on each other's steps (the MotherNets' members follow their
MotherNet through `Then`), so an engine may start a member as soon as its MotherNet is done.

No torch at import.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.formats.hatch_table import HatchTable
    from mncompile.formats.plan_file import PlanFile
    from mncompile.runtime.data import Dataset
    from mncompile.runtime.jobs import Job, ModelResult, TrainSettings
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.results import PhaseRecord


@dataclass
class Outcome:
    """What a method hands back: its phases (wall time, trained models) and the ensemble.

    `members` maps each ensemble member's name to a trained module (input -> logits); the
    pipeline evaluates them on the test set. `info` is added to results.json's `info`.
    `members_of` names the members a trained model gives where they are not the model itself
    (a Shared-MotherNet's heads): if that model diverged, they are left out of the ensemble.
    """

    phases: list[PhaseRecord]
    members: dict[str, nn.Module]
    info: dict[str, Any] = field(default_factory=dict)
    members_of: dict[str, list[str]] = field(default_factory=dict)

    def diverged(self) -> dict[str, str]:
        """The members whose training diverged, with the message: they are left out of the ensemble."""
        out: dict[str, str] = {}
        for record in self.phases:
            for name, result in record.models.items():
                if result.status == "diverged":
                    for m in self.members_of.get(name, [name]):
                        if m in self.members:
                            out[m] = f"{name}: {result.message}" if m != name else str(result.message)
        return out


@dataclass
class Phase:
    """Nets that train in one phase: its name (progress, checkpoints, results), jobs and batch hook.

    Jobs without data of their own share one stream of mini-batches (the shared scan);
    `batch_hook(x)` runs once per batch and its result reaches every job's `loss`.
    """

    name: str
    jobs: list[Job]
    batch_hook: Callable[[torch.Tensor], Any] | None = None


@dataclass
class Then:
    """The phase that follows from each finished job of another (hatched members from their MotherNet).

    `make(job, result)` returns the follow-up jobs of one finished job and the seconds spent
    making them (recorded as the phase `between`). An engine may start them at once; the
    local engine trains them together once the first phase is over, in `order` (by name).
    """

    phase: str
    make: Callable[[Job, ModelResult], tuple[list[Job], float]]
    between: str = "hatching"
    order: Sequence[str] = ()


class Engine(Protocol):
    """Where nets train: `run` trains a phase (and what follows from it) and returns its records."""

    name: str

    def run(self, ctx: RunContext, phase: Phase, then: Then | None = None) -> list[PhaseRecord]:
        """Train `phase`, then `then`'s jobs; the phases' records in run order."""
        ...

    def info(self) -> dict[str, Any]:
        """What results.json records of the engine (empty for the local one)."""
        ...

    @property
    def failed(self) -> Mapping[str, str]:
        """Nets that failed for good (an engine error, not divergence), with the error."""
        ...


@dataclass
class RunContext:
    """Everything a method needs to train one ensemble.

    `config` holds the resolved train settings (the spec's, then command-line overrides, then
    `--epochs-scale`); `mother_settings` and `hatched_settings` are its two phases. Model names
    are the spec's. Use `build` for a freshly initialised net (seeded by the run seed and the
    name), `train` to train a group of nets with cross-entropy, and `engine.run` for a phase of
    jobs with hooks.
    """

    folder: Path
    models: ModuleType
    plan: PlanFile
    tables: dict[str, HatchTable]
    dataset: Dataset
    config: dict[str, Any]
    mother_settings: TrainSettings
    hatched_settings: TrainSettings
    out: Path
    device: torch.device
    seed: int
    progress: Progress
    engine: Engine
    resume: bool = False
    method: str = "mothernets"
    noise: float = 0.0
    noise_mode: str = "gaussian"
    fuse: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> list[str]:
        """The ensemble's members, in spec order."""
        return list(self.plan.member_names)

    @property
    def clusters(self) -> list[tuple[str, list[str]]]:
        """(MotherNet name, its members) per cluster, in plan order."""
        return [(c.mother.name, list(c.members)) for c in self.plan.clusters]

    def build(self, name: str, *, salt: str = "") -> nn.Module:
        """A fresh `name` net from models.py, initialised from (seed, name, salt) only."""
        import torch

        cls = self.models.MODELS[name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init", name, salt))
            model: nn.Module = cls()
        return model

    def describe(self, model: nn.Module) -> Any:
        """The plan's description of a net of models.py (`fit`'s fused groups), None for other modules."""
        from mncompile.formats.ensemble_file import describe_net

        for name, cls in getattr(self.models, "MODELS", {}).items():
            if type(model) is cls and name in self.plan.nets:
                return describe_net(self.plan.nets[name], self.plan.input, self.plan.classes)
        return None

    def ckpt_dir(self, phase: str) -> Path:
        """Where the checkpoints of one phase of this method live: OUT/ckpt/<method>/<phase>.

        Absolute, so that a process with another working folder (a Ray worker) finds it too.
        """
        return self.out.resolve() / "ckpt" / self.method / phase

    def train(self, models: Mapping[str, nn.Module], settings: TrainSettings,
              phase: str) -> dict[str, ModelResult]:
        """Train `models` with cross-entropy as one phase on the run's engine; their results."""
        from mncompile.runtime.jobs import Job

        records = self.engine.run(self, Phase(phase, [Job(n, m, settings) for n, m in models.items()]))
        return dict(records[0].models)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from the run seed and some names: independent streams per purpose and model.

    >>> derive_seed(0, "init", "a") == derive_seed(0, "init", "a") != derive_seed(0, "init", "b")
    True
    """
    import numpy as np

    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF] + [zlib.crc32(p.encode()) for p in parts]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)
    return int(state[0]) >> 1
