"""`--method fge` (FGE): one architecture pre-trained, then triangular cycles; a model per low point.

Pre-training takes 80 % of max_epochs with the normal schedule (`--pretrain-fraction`); then m
cycles of `--fge-cycle` epochs each go from lr1 = 0.05 to lr2 = 1e-4 and back, per iteration,
and a model is collected at each cycle's low point (Garipov et al., 2018).
"""

from __future__ import annotations

import dataclasses

from mncompile.runtime.context import Outcome, Phase, RunContext
from mncompile.runtime.jobs import Job
from mncompile.runtime.methods.cycles import (
    AtCycleLow,
    Snapshots,
    TriangleCycles,
    base_member,
    batches_per_epoch,
    cycles_settings,
)
from mncompile.runtime.methods.options import options, require_ok

HELP = "one architecture pre-trained, then triangular cycles; a model per low point"


def run(ctx: RunContext) -> Outcome:
    """Pre-train for 80% of max_epochs (the normal schedule), then m triangular cycles."""
    opts = options(ctx)
    base, m = base_member(ctx, opts), len(ctx.members)
    budget = ctx.mother_settings.max_epochs
    pre_epochs = max(1, round(float(opts["pretrain_fraction"]) * budget))
    cycle_epochs = int(opts["fge_cycle"])
    lr1, lr2 = float(opts["fge_lr1"]), float(opts["fge_lr2"])
    model = ctx.build(base)
    pre_settings = dataclasses.replace(ctx.mother_settings, max_epochs=pre_epochs)
    records = ctx.engine.run(ctx, Phase("pretrain", [Job(base, model, pre_settings, required=True)]))
    pre = records[0].models
    require_ok(pre, "pre-trained net", "lower --lr")
    cycle_its = cycle_epochs * batches_per_epoch(ctx)
    name = f"{base}@cycles"
    snapshots = Snapshots(ctx.ckpt_dir("cycles") / "snapshots", base, model)
    job = Job(name, model, cycles_settings(ctx, lr1, m * cycle_epochs),
              lr=TriangleCycles(cycle_its, lr1, lr2), after_step=AtCycleLow(snapshots, cycle_its),
              required=True, lr_flag="--fge-lr1",
              extra={"method": "fge", "cycles": m, "lr2": lr2, "pretrain_epochs": pre_epochs})
    records += ctx.engine.run(ctx, Phase("cycles", [job]))
    require_ok(records[-1].models, "FGE model", "lower --fge-lr1: its snapshots are the ensemble")
    members = snapshots.load(ctx, m, records[-1].models[name].message or "training stopped early")
    info = {"base": base, "pretrain_epochs": pre_epochs, "pretrain_stopped_after": pre[base].epochs,
            "cycles": m, "cycle_epochs": cycle_epochs, "lr1": lr1, "lr2": lr2}
    return Outcome(records, members, {"fge": info})
