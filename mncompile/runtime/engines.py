"""Where the nets train: the engines, chosen once per run from `ENGINES`.

- `local`: this process, one device. The jobs of a phase that share the training data train in
  lockstep over one stream of mini-batches (the shared scan); a job with data of its own
  (bagging's bootstrap samples) trains alone. With `--fuse` on, the lockstep nets of one
  family train as fused groups (`runtime/fused.py`). With `--sequential`, every job trains alone over
  the stream the lockstep run would give it: the same weights on the CPU, one data pass per net.
- `ray`: a Ray cluster of one or many machines (`runtime/ray_engine.py`, docs/ray.md).

Both train through the one epoch loop, `train.fit`, and write the same checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.context import Engine, Phase, RunContext, Then

if TYPE_CHECKING:
    from mncompile.runtime.jobs import Job, ModelResult
    from mncompile.runtime.results import PhaseRecord


class LocalEngine:
    """Trains every phase in this process; see the module docstring."""

    name = "local"

    def __init__(self, sequential: bool = False) -> None:
        self.sequential = sequential

    @property
    def failed(self) -> Mapping[str, str]:
        return {}

    def info(self) -> dict[str, Any]:
        return {}

    def run(self, ctx: RunContext, phase: Phase, then: Then | None = None) -> list[PhaseRecord]:
        from mncompile.runtime.results import PhaseRecord

        results, seconds = self._train(ctx, phase)
        records = [PhaseRecord(phase.name, seconds, results)]
        if then is None:
            return records
        follow: list[Job] = []
        spent = 0.0
        for job in phase.jobs:
            jobs, s = then.make(job, results[job.name])
            follow.extend(jobs)
            spent += s
        if not follow:
            return records
        rank = {name: i for i, name in enumerate(then.order)}
        follow.sort(key=lambda j: rank.get(j.name, len(rank)))
        records.append(PhaseRecord(then.between, spent, {}))
        results, seconds = self._train(ctx, Phase(then.phase, follow))
        records.append(PhaseRecord(then.phase, seconds, results))
        return records

    def _train(self, ctx: RunContext, phase: Phase) -> tuple[dict[str, ModelResult], float]:
        """Train a phase's groups one after another; results in job order and the phase's seconds."""
        from mncompile.runtime.train import fit, group_seconds

        groups: list[list[Job]] = []
        for job in phase.jobs:
            shared = [g for g in groups if not self.sequential and g[0].data is job.data]
            if shared:
                shared[0].append(job)
            else:
                groups.append([job])
        results: dict[str, ModelResult] = {}
        seconds = 0.0
        for group in groups:
            label = phase.name if len(groups) == 1 else f"{phase.name} {group[0].name}"
            data = group[0].data if group[0].data is not None else ctx.dataset
            done = fit(group, data, seed=ctx.seed, device=ctx.device, checkpoint_dir=ctx.ckpt_dir(phase.name),
                       resume=ctx.resume, progress=ctx.progress, phase=label, batch_hook=phase.batch_hook,
                       fuse=ctx.fuse, describe=ctx.describe)
            results.update(done)
            # lockstep: each shared epoch counted once; one net alone: its own epochs
            seconds += group_seconds(done)
        return {j.name: results[j.name] for j in phase.jobs}, seconds


def _local(options: Mapping[str, Any]) -> Engine:
    if options.get("address") is not None or options.get("gpus_per_model") is not None:
        raise MNError("--address and --gpus-per-model are options of --engine ray", hint="add --engine ray")
    return LocalEngine(sequential=bool(options.get("sequential")))


def _ray(options: Mapping[str, Any]) -> Engine:
    # Ray is imported only when asked for
    from mncompile.runtime.ray_engine import RayEngine

    return RayEngine(options)


#: every engine by its `--engine` name: a factory taking the run's engine options
ENGINES: dict[str, Callable[[Mapping[str, Any]], Engine]] = {"local": _local, "ray": _ray}


def make_engine(name: str, options: Mapping[str, Any]) -> Engine:
    """The engine `name` for a run with `options` (sequential, address, gpus_per_model, device, quiet)."""
    return ENGINES[name](options)
