"""`--method shared-mothernets` (Appendix C): MotherNets, hatching, consolidation, joint training.

After the MotherNets train and the members hatch, each cluster that `shared.py` can share is
consolidated into one Shared-MotherNet (`runtime/shared.py`), checked against its hatched
members, and trained on its K heads' cross-entropies (`SHARED_LOSSES`: by default each
parameter's update is what one member's would be). Clusters that `shared.py`
lists in `NOT_SHARED` train their hatched members separately, as `mothernets` does.
"""

from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.context import Outcome, Phase, RunContext
from mncompile.runtime.jobs import Job
from mncompile.runtime.methods.mothernets import (
    EXACT_TOLERANCE,
    clusters_of,
    first_phase,
    first_phase_names,
    hatch_cluster,
    hatched_job,
    require_mother,
    verify_scale,
)
from mncompile.runtime.methods.options import options

if TYPE_CHECKING:
    import torch
    from torch import nn

HELP = "MotherNets, then each cluster consolidated into one Shared-MotherNet trained jointly"


def check_shared_module(module: ModuleType, ctx: RunContext) -> None:
    """Before anything trains: shared.py must fit the plan and the members' tensors (MNError if not)."""
    from mncompile.runtime.shared import consolidate

    for mother, cluster in ctx.clusters:
        if len(cluster) < 2:
            continue
        cls = module.SHARED.get(mother)
        if cls is None:
            if mother not in getattr(module, "NOT_SHARED", {}):
                raise MNError(f"shared.py has nothing for cluster '{mother}' of plan.json",
                              hint="the folder is out of date: compile the spec again")
            continue
        if list(cls.MEMBERS) != list(cluster):
            raise MNError(f"shared.py's '{mother}' is for members {list(cls.MEMBERS)}, plan.json has "
                          f"{cluster}", hint="the folder is out of date: compile the spec again")
        # the shapes only: freshly built members fit the shared model's blocks, or say which does not
        consolidate(cls(), {m: ctx.build(m).state_dict() for m in cluster})


#: how the K heads' losses train a Shared-MotherNet (`--shared-loss`, docs/shared-mothernets.md).
#: It trains on the sum of the heads' cross-entropies (the history records their mean), each
#: parameter's gradient multiplied by a factor: `sum` 1 (a shared unit gets all K members'
#: gradients, K times what one member's unit gets), `mean` 1/K for every parameter (a member's
#: own units learn at 1/K of their rate), `scaled` 1/K for the shared units and 1 for a
#: member's own units (each parameter's update is what one member's would be: its own, or the
#: mean of the members').
SHARED_LOSSES = ("scaled", "mean", "sum")


def joint_loss(out: torch.Tensor, y: torch.Tensor, _: Any) -> torch.Tensor:
    """The sum of the K heads' cross-entropies (out: [batch, K, classes])."""
    import torch.nn.functional as F

    k = out.shape[1]
    return F.cross_entropy(out.float().flatten(0, 1), y.repeat_interleave(k)) * k


class GradScale:
    """Multiplies each gradient of a Shared-MotherNet by its units' factor (`SHARED_LOSSES`).

    Built from the generated class's structure: a weight block's rows, a step's bias and
    BatchNorm entries belong to the groups it makes, a `pre` BatchNorm's to the groups it reads;
    a group owned by a member (`GROUPS[g][0]` not None) is that member's own. Called with the
    model (or a data-parallel wrapper of it, whose names begin with `module.`) after backward.
    """

    def __init__(self, shared: Any, mode: str) -> None:
        import torch

        if mode not in SHARED_LOSSES:
            raise MNError(f"unknown shared loss '{mode}'", hint="use " + ", ".join(SHARED_LOSSES))
        k = float(len(shared.MEMBERS))
        own, common = {"scaled": (1.0, 1 / k), "mean": (1 / k, 1 / k), "sum": (1.0, 1.0)}[mode]
        groups = shared.GROUPS

        def factors(ids: Any) -> torch.Tensor:
            return torch.cat([torch.full((int(groups[g][1]),), common if groups[g][0] is None else own)
                              for g in ids]) if ids else torch.ones(0)

        self.scales: dict[str, torch.Tensor] = {}
        for name, p in shared.named_parameters():
            parts = name.split(".")
            if parts[0] != "steps" or len(parts) < 3:
                raise MNError(f"Shared-MotherNet parameter '{name}' is not in a step", hint="the folder "
                              "comes from another version of mncompile: compile the spec again")
            i = int(parts[1])
            step, module = shared.STEPS[i], shared.steps[i]
            if parts[2] == "blocks":
                scale = factors(module.blocks[int(parts[3])].rows)
            elif parts[2] == "pre":
                scale = factors(step["reads"])
            else:  # the step's bias, or its BatchNorm after the layer
                scale = factors(step["makes"])
            if scale.numel() != p.shape[0]:
                raise MNError(f"Shared-MotherNet parameter '{name}' has {p.shape[0]} rows where its groups "
                              f"have {scale.numel()}", hint="compile the spec again")
            self.scales[name] = scale.reshape((-1,) + (1,) * (p.dim() - 1))
        self.trivial = own == common == 1.0
        self._on: dict[str, torch.Tensor] = {}

    def __call__(self, model: nn.Module) -> None:
        if self.trivial:
            return
        for name, p in model.named_parameters():
            if p.grad is None:
                continue
            key = name.removeprefix("module.")
            scale = self._on.get(key)
            if scale is None or scale.device != p.grad.device:
                scale = self._on[key] = self.scales[key].to(p.grad.device, p.grad.dtype)
            p.grad.mul_(scale)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_on": {}}


def heads_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Early stopping watches the heads' mean training accuracy."""
    return (out.argmax(2) == y[:, None]).double().sum() / out.shape[1]


def split_heads(out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The K heads' logits [batch, classes] of an output [batch, K, classes]."""
    return out.unbind(1)


def lockstep(ctx: RunContext) -> list[list[str]]:
    """The first phase's nets, then the hatched members of the clusters shared.py does not share
    (the shared ones train as one joint model each)."""
    from mncompile.runtime.shared import load_shared_module

    first, _ = first_phase_names(ctx)
    big = [(mother, cluster) for mother, cluster in ctx.clusters if len(cluster) > 1]
    shared = load_shared_module(ctx.folder).SHARED if big else {}
    separate = [m for mother, cluster in big if mother not in shared for m in cluster]
    return [first] + ([separate] if separate and ctx.hatched_settings.order != "bootstrap" else [])


def run(ctx: RunContext) -> Outcome:
    """MotherNets, hatching, consolidation, then joint training of each shared model."""
    from mncompile.runtime.results import PhaseRecord
    from mncompile.runtime.shared import (
        build_shared,
        load_shared_module,
        param_counts,
        shared_member,
        verify_shared,
    )

    # a plan whose clusters all have one net has nothing to share (and no shared.py)
    module = load_shared_module(ctx.folder) if any(len(c) > 1 for _, c in ctx.clusters) else None
    if module is not None:
        check_shared_module(module, ctx)
    phase, first, mother_of = first_phase(ctx)
    records = ctx.engine.run(ctx, phase)
    for name, result in records[0].models.items():
        require_mother(name, result)
    members: dict[str, nn.Module] = {m: first[m] for m in ctx.members if m in first}
    checks: dict[str, Any] = {}
    plain: dict[str, nn.Module] = {}
    noisy: dict[str, nn.Module] = {}
    hatch_seconds = 0.0
    for mother_name, cluster in clusters_of(ctx, mother_of).items():
        new, seconds = hatch_cluster(ctx, mother_name, first[mother_name], cluster, checks, plain)
        noisy.update(new)
        hatch_seconds += seconds
    x = ctx.dataset.x_train
    batch = x[: min(256, len(x))].to(ctx.device)
    shared_models: dict[str, Any] = {}  # generated SharedNets (runtime/shared.py)
    report: dict[str, Any] = {}
    separate: dict[str, nn.Module] = {}
    for mother_name, cluster in ctx.clusters:
        if len(cluster) < 2:
            continue
        assert module is not None
        cls = module.SHARED.get(mother_name)
        if cls is None:
            why = module.NOT_SHARED.get(mother_name, "shared.py has no class for it")
            ctx.progress.note(f"shared-mothernets: cluster {mother_name} keeps separate members: {why}")
            report[mother_name] = {"shared": False, "reason": why}
            separate.update({m: noisy[m] for m in cluster})
            continue
        # the phase counts hatching and consolidation, not the numerical checks (as mothernets does)
        start = time.perf_counter()
        shared = build_shared(cls, plain, ctx.device)
        hatch_seconds += time.perf_counter() - start
        scale = verify_scale(first[mother_name], batch)
        diff = verify_shared(shared, plain, batch)
        diff_train = verify_shared(shared, plain, batch, train=True)
        entry: dict[str, Any] = {"shared": True, "max_abs_diff": diff, "relative_diff": diff / scale,
                                 "train_max_abs_diff": diff_train,
                                 **param_counts(shared, plain, first[mother_name])}
        exact = all(ctx.tables[m].exact for m in cluster)
        if exact and not diff <= EXACT_TOLERANCE * scale:
            entry["warning"] = (f"the Shared-MotherNet of '{mother_name}' should reproduce its hatched "
                                f"members, but the outputs differ by {diff:.3g} (output scale {scale:.3g})")
            print(f"warning: {entry['warning']}", file=sys.stderr, flush=True)
        if ctx.noise > 0:
            start = time.perf_counter()
            shared = build_shared(cls, noisy, ctx.device)
            hatch_seconds += time.perf_counter() - start
        shared_models[mother_name] = shared
        report[mother_name] = entry
    if plain:
        records.append(PhaseRecord("hatching", hatch_seconds, {}))
    if separate:
        records += ctx.engine.run(ctx, Phase("members", [hatched_job(ctx, m, model)
                                                         for m, model in separate.items()]))
        members.update(separate)
    if shared_models:
        if ctx.hatched_settings.order == "bootstrap":
            ctx.progress.note("shared-mothernets: --batch-order bootstrap applies to the members of clusters "
                              "that are not shared; a Shared-MotherNet's heads train on one stream")
        mode = str(options(ctx)["shared_loss"])
        # a checkpoint from before the choice trained on the sum, and resumes as such
        extra = {"method": "shared-mothernets", **({} if mode == "sum" else {"shared_loss": mode})}
        jobs = [Job(f"shared-{name}", model, ctx.hatched_settings, loss=joint_loss, correct=heads_correct,
                    heads=split_heads, scale_grads=GradScale(model, mode), lr_flag="--hatched-lr",
                    extra=extra) for name, model in shared_models.items()]
        records += ctx.engine.run(ctx, Phase("shared", jobs))
        for model in shared_models.values():
            members.update({m: shared_member(model, m) for m in model.MEMBERS})
    totals = {"members_params": sum(e.get("members_params", 0) for e in report.values()),
              "shared_params": sum(e.get("shared_params", 0) for e in report.values())}
    info = {"clusters": report, **totals, "loss": str(options(ctx)["shared_loss"])}
    heads = {f"shared-{name}": list(model.MEMBERS) for name, model in shared_models.items()}
    return Outcome(records, {m: members[m] for m in ctx.members}, {"shared": info, "hatch": checks},
                   members_of=heads)
