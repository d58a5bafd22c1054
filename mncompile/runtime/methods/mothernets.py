"""`--method mothernets` (the default): MotherNets first, then hatching, then the hatched members.

Per cluster, the MotherNet trains on the full training set (all MotherNets in lockstep over one
shared batch stream, or each as soon as a device is free on Ray). When it is done, every member
of its cluster is hatched through its table, checked numerically against it, given the run's
noise, and trained with the hatched settings. A cluster of one net has no MotherNet of its own:
the net trains in the first phase.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mncompile.runtime.context import Outcome, Phase, RunContext, Then, derive_seed
from mncompile.runtime.jobs import Job, ModelResult
from mncompile.runtime.methods.options import require_ok

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.runtime.results import PhaseRecord

HELP = "train the MotherNets, hatch the members, train them (default)"
#: the largest |hatched - MotherNet| output difference, relative to the output scale, that
#: still counts as "the same function" for a table that claims to be exact
EXACT_TOLERANCE = 1e-3


def first_phase_names(ctx: RunContext) -> tuple[list[str], dict[str, str]]:
    """The first phase's nets (MotherNets, and lone members: clusters of one net), and each hatched
    member's MotherNet."""
    first: list[str] = []
    mother_of: dict[str, str] = {}
    for mother_name, cluster in ctx.clusters:
        if len(cluster) == 1:
            first.append(cluster[0])
        else:
            first.append(mother_name)
            mother_of.update({m: mother_name for m in cluster})
    return first, mother_of


def first_phase_nets(ctx: RunContext) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Fresh MotherNets (and lone members), and each hatched member's MotherNet."""
    names, mother_of = first_phase_names(ctx)
    return {n: ctx.build(n) for n in names}, mother_of


def lockstep(ctx: RunContext) -> list[list[str]]:
    """The first phase's nets, then the hatched members (unless each draws its own bootstrap sample,
    `--batch-order bootstrap`: then each trains apart)."""
    first, mother_of = first_phase_names(ctx)
    return [first] + ([list(mother_of)] if ctx.hatched_settings.order != "bootstrap" else [])


def first_phase(ctx: RunContext) -> tuple[Phase, dict[str, nn.Module], dict[str, str]]:
    """The first phase (MotherNets and lone members, MotherNet settings), its nets, and mother_of."""
    first, mother_of = first_phase_nets(ctx)
    mothers = set(mother_of.values())
    jobs = [Job(n, model, ctx.mother_settings, required=n in mothers) for n, model in first.items()]
    return Phase("mothernets", jobs), first, mother_of


def hatched_job(ctx: RunContext, name: str, model: nn.Module) -> Job:
    """A hatched member's job: the hatched settings, and with `--batch-order bootstrap` its own
    bootstrap sample of the training set (drawn as bagging draws the member's)."""
    from mncompile.runtime.methods.bagging import bootstrap_indices

    data = None
    if ctx.hatched_settings.order == "bootstrap":
        data = ctx.dataset.take(bootstrap_indices(ctx.seed, name, ctx.dataset.train_size))
    return Job(name, model, ctx.hatched_settings, lr_flag="--hatched-lr", data=data)


def require_mother(name: str, result: ModelResult) -> None:
    """A first-phase net that diverged stops the run: nothing can hatch from it."""
    require_ok({name: result}, "MotherNet", "lower --lr, or check the data; nothing can hatch from it")


def verify_scale(mother: nn.Module, batch: torch.Tensor) -> float:
    """1 + the largest |logit| of `mother` on `batch` (eval mode): what hatch differences are relative to."""
    import torch

    was = mother.training
    mother.eval()
    try:
        with torch.no_grad():
            return 1.0 + float(mother(batch).abs().max())
    finally:
        mother.train(was)


def hatch_cluster(ctx: RunContext, mother_name: str, mother: nn.Module, members: list[str],
                  checks: dict[str, Any], plain: dict[str, nn.Module] | None = None,
                  ) -> tuple[dict[str, nn.Module], float]:
    """Hatch `members` from their trained MotherNet, check each, then add the run's noise.

    The members are built on the MotherNet's device. `checks` receives the numerical check of
    each; `plain`, when given, every member exactly as hatched, before the noise. Returns the
    hatched members and the seconds spent hatching (the checks not counted).
    """
    from mncompile.runtime.hatching import hatch, verify_hatch

    device = next(mother.parameters()).device
    x = ctx.dataset.x_train
    batch = x[: min(256, len(x))].to(device)
    hatched: dict[str, nn.Module] = {}
    seconds = 0.0
    for m in members:
        table = ctx.tables[m]
        model = ctx.build(m).to(device)
        start = time.perf_counter()
        model.load_state_dict(hatch(mother, table))
        seconds += time.perf_counter() - start
        diff = verify_hatch(mother, model, batch)
        scale = verify_scale(mother, batch)
        checks[m] = {"mother": mother_name, "table_exact": table.exact, "max_abs_diff": diff,
                     "relative_diff": diff / scale, "reasons": list(table.reasons)}
        if table.exact and not diff <= EXACT_TOLERANCE * scale:
            checks[m]["warning"] = (f"hatching '{m}' from '{mother_name}' should be exact, but the "
                                    f"outputs differ by {diff:.3g} (output scale {scale:.3g})")
            print(f"warning: {checks[m]['warning']}", file=sys.stderr, flush=True)
        if plain is not None:
            plain[m] = copy.deepcopy(model) if ctx.noise > 0 else model
        if ctx.noise > 0:
            # hatched again with the noise: the check above must see the noiseless member
            start = time.perf_counter()
            model.load_state_dict(hatch(mother, table, noise=ctx.noise, noise_mode=ctx.noise_mode,
                                        seed=derive_seed(ctx.seed, "noise", m)))
            seconds += time.perf_counter() - start
        hatched[m] = model
    return hatched, seconds


def clusters_of(ctx: RunContext, mother_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Each MotherNet's members, in spec order."""
    out: dict[str, list[str]] = {}
    for m in ctx.members:
        if m in mother_of:
            out.setdefault(mother_of[m], []).append(m)
    return out


class Hatchery:
    """Step 3 of the method: as each first-phase net finishes, hatch its MotherNet's members.

    `then()` is what the engine calls per finished net: a MotherNet that diverged stops the run;
    a finished MotherNet's members are hatched through their tables (`hatch/<member>.json`),
    checked against it, given the run's noise, and handed back to train with the hatched
    settings. `outcome(records)` is the trained ensemble in spec order.
    """

    def __init__(self, ctx: RunContext, first: Mapping[str, nn.Module], mother_of: Mapping[str, str]) -> None:
        self.ctx, self.first = ctx, dict(first)
        self.clusters = clusters_of(ctx, mother_of)
        self.checks: dict[str, Any] = {}
        self.hatched: dict[str, nn.Module] = {}

    def members_of(self, job: Job, result: ModelResult) -> tuple[list[Job], float]:
        """The hatched members of a finished first-phase net (none for a net of its own)."""
        require_mother(job.name, result)
        if job.name not in self.clusters:
            return [], 0.0
        new, seconds = hatch_cluster(self.ctx, job.name, job.model, self.clusters[job.name], self.checks)
        self.hatched.update(new)
        jobs = [hatched_job(self.ctx, m, model) for m, model in new.items()]
        return jobs, seconds

    def then(self) -> Then:
        """Step 4: the phase `members` that follows each MotherNet."""
        return Then("members", self.members_of, order=self.ctx.members)

    def outcome(self, records: list[PhaseRecord]) -> Outcome:
        """The trained ensemble: lone members from the first phase, the hatched ones, in spec order."""
        members = {**{m: self.first[m] for m in self.ctx.members if m in self.first}, **self.hatched}
        return Outcome(records, {m: members[m] for m in self.ctx.members}, {"hatch": self.checks})


def run(ctx: RunContext) -> Outcome:
    """MotherNets: mothers (and lone members) first; each MotherNet's members as soon as it is done.

    The generated train.py lays out the same steps, in the same order.
    """
    phase, first, mother_of = first_phase(ctx)   # 1-2: the MotherNets (and nets of their own)
    hatchery = Hatchery(ctx, first, mother_of)   # 3: hatch each MotherNet's members when it is done
    records = ctx.engine.run(ctx, phase, hatchery.then())   # 2 and 4: train both phases
    return hatchery.outcome(records)
