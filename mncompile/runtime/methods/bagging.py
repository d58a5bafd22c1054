"""`--method bagging` (BA): every member from scratch on its own bootstrap sample.

Each member's sample is drawn with replacement, seeded by (seed, member). Since every member
sees other data, no batch stream can be shared: the engine trains them one at a time (or side
by side on Ray), each with the MotherNet settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mncompile.runtime.context import Outcome, Phase, RunContext, derive_seed
from mncompile.runtime.jobs import Job

if TYPE_CHECKING:
    import torch

HELP = "every member from scratch on its own bootstrap sample"


def bootstrap_indices(seed: int, member: str, n: int) -> torch.Tensor:
    """The bootstrap sample of `member`: n indices drawn with replacement, seeded by (seed, member)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(derive_seed(seed, "bootstrap", member))
    return torch.as_tensor(rng.integers(0, n, size=n), dtype=torch.int64)


def run(ctx: RunContext) -> Outcome:
    """Each member trained from scratch (MotherNet settings) on its bootstrap sample."""
    n = ctx.dataset.train_size
    jobs: list[Job] = []
    unique: dict[str, Any] = {}
    for m in ctx.members:
        idx = bootstrap_indices(ctx.seed, m, n)
        unique[m] = len(set(idx.tolist())) / n
        sample = ctx.dataset.take(idx)
        jobs.append(Job(m, ctx.build(m), ctx.mother_settings, data=sample))
    records = ctx.engine.run(ctx, Phase("members", jobs))
    return Outcome(records, {j.name: j.model for j in jobs}, {"bagging": {"unique_fraction": unique}})
