"""`--method full-data` (the paper's FD baseline): every member from scratch, MotherNet settings."""

from __future__ import annotations

from mncompile.runtime.context import Outcome, Phase, RunContext
from mncompile.runtime.jobs import Job

HELP = "every member from scratch on all the data, MotherNet settings"


def lockstep(ctx: RunContext) -> list[list[str]]:
    """Every member, in one phase."""
    return [list(ctx.members)]


def run(ctx: RunContext) -> Outcome:
    """Each member trained from scratch with the MotherNet settings, in lockstep."""
    models = {m: ctx.build(m) for m in ctx.members}
    records = ctx.engine.run(ctx, Phase("members", [Job(m, model, ctx.mother_settings)
                                                    for m, model in models.items()]))
    return Outcome(records, models)
