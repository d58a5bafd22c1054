"""`--method snapshot` (SE): one architecture, m cosine cycles from lr0 = 0.2, one snapshot each.

The learning rate follows a cosine per iteration, restarted every cycle; max_epochs is split
into the m cycles (`--cycle-epochs` overrides), and the cycles run in full.
"""

from __future__ import annotations

from mncompile.runtime.context import Outcome, Phase, RunContext
from mncompile.runtime.jobs import Job
from mncompile.runtime.methods.cycles import (
    AtCycleEnd,
    CosineCycles,
    Snapshots,
    base_member,
    batches_per_epoch,
    cycles_settings,
)
from mncompile.runtime.methods.options import options, require_ok

HELP = "one architecture, m cosine cycles from lr 0.2, a snapshot per cycle"


def run(ctx: RunContext) -> Outcome:
    """m cosine cycles (per iteration) of one architecture; a snapshot at the end of each."""
    opts = options(ctx)
    base, m = base_member(ctx, opts), len(ctx.members)
    budget = ctx.mother_settings.max_epochs
    cycle_epochs = int(opts["cycle_epochs"] or max(1, budget // m))
    lr0 = float(opts["snapshot_lr"])
    cycle_its = cycle_epochs * batches_per_epoch(ctx)
    model = ctx.build(base)
    snapshots = Snapshots(ctx.ckpt_dir("cycles") / "snapshots", base, model)
    job = Job(base, model, cycles_settings(ctx, lr0, m * cycle_epochs), lr=CosineCycles(cycle_its, lr0),
              after_step=AtCycleEnd(snapshots, cycle_its), required=True, lr_flag="--snapshot-lr",
              extra={"method": "snapshot", "cycles": m, "cycle_epochs": cycle_epochs})
    records = ctx.engine.run(ctx, Phase("cycles", [job]))
    require_ok(records[0].models, "snapshot model", "lower --snapshot-lr: its snapshots are the ensemble")
    members = snapshots.load(ctx, m, records[0].models[base].message or "training stopped early")
    info = {"base": base, "cycles": m, "cycle_epochs": cycle_epochs, "lr0": lr0,
            "schedule": "cosine per iteration, restarted every cycle"}
    return Outcome(records, members, {"snapshot": info})
