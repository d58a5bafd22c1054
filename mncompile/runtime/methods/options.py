"""The baselines' options (`--teacher`, `--alpha`, ...): defaults, argparse group, lookup.

No torch at import: the `mncompile` command builds its option parser from this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.validators import fraction, positive

if TYPE_CHECKING:
    from mncompile.runtime.context import RunContext
    from mncompile.runtime.jobs import ModelResult

#: every method option with its default; `None` means "chosen from the ensemble" (see the docs)
DEFAULTS: dict[str, Any] = {
    "teacher": None,
    "alpha": 0.9,
    "temperature": 4.0,
    "base": None,
    "snapshot_lr": 0.2,
    "cycle_epochs": None,
    "fge_lr1": 0.05,
    "fge_lr2": 1e-4,
    "fge_cycle": 2,
    "pretrain_fraction": 0.8,
    "shared_layers": 3,
    "shared_loss": "scaled",
}


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """The baselines' options, as one argument group (defaults None: `DEFAULTS` apply)."""
    g = p.add_argument_group("baseline methods (see docs/baselines.md)")
    g.add_argument("--teacher", metavar="NAME",
                   help="distill: the member trained first and distilled from (default: the largest)")
    g.add_argument("--alpha", type=fraction, metavar="A",
                   help="distill: weight of the distillation term (default 0.9)")
    g.add_argument("--temperature", type=positive(float), metavar="T",
                   help="distill: softmax temperature (default 4)")
    g.add_argument("--base", metavar="NAME",
                   help="snapshot, fge: the one architecture trained (default: the member whose "
                   "parameter count is nearest the ensemble's mean)")
    g.add_argument("--snapshot-lr", type=positive(float), metavar="LR",
                   help="snapshot: lr0 at the start of every cosine cycle (default 0.2)")
    g.add_argument("--cycle-epochs", type=positive(int), metavar="N",
                   help="snapshot: epochs per cycle (default: max_epochs split into m cycles)")
    g.add_argument("--fge-lr1", type=positive(float), metavar="LR",
                   help="fge: the cycles' high learning rate (default 0.05)")
    g.add_argument("--fge-lr2", type=positive(float), metavar="LR",
                   help="fge: the cycles' low learning rate, where models are collected (default 1e-4)")
    g.add_argument("--fge-cycle", type=positive(int), metavar="N",
                   help="fge: epochs per cycle (default 2)")
    g.add_argument("--pretrain-fraction", type=fraction, metavar="F",
                   help="fge: share of max_epochs spent pre-training (default 0.8)")
    g.add_argument("--shared-layers", type=positive(int), metavar="N",
                   help="treenet: conv layers in the shared trunk (default 3)")
    g.add_argument("--shared-loss", choices=("scaled", "mean", "sum"),
                   help="shared-mothernets: how the heads' losses train the shared model: scaled "
                   "(each unit's update is one member's; the default, chosen by measurement), mean, "
                   "or sum (the landed objective; --recipe paper) (docs/shared-mothernets.md)")


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of `add_method_arguments` that were given, by their `DEFAULTS` key."""
    return {k: getattr(args, k) for k in DEFAULTS if getattr(args, k, None) is not None}


def options(ctx: RunContext) -> dict[str, Any]:
    """`DEFAULTS` updated with `ctx.info["method_options"]` (unknown keys are an error)."""
    given = dict(ctx.info.get("method_options") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise MNError(f"unknown method option '{unknown[0]}'", hint="known: " + ", ".join(DEFAULTS))
    return {**DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


def member_option(ctx: RunContext, name: str | None, option: str) -> str | None:
    """`name`, checked to be a member of the ensemble (None stays None)."""
    if name is not None and name not in ctx.members:
        raise MNError(f"--{option} '{name}' is not a member of the ensemble",
                      hint="members: " + ", ".join(ctx.members))
    return name


def member_params(ctx: RunContext) -> dict[str, int]:
    """Each member's parameter count, as plan.json records it."""
    return {m.name: m.params for m in ctx.plan.members}


def largest_member(ctx: RunContext) -> str:
    """The member with the most parameters (the first such in spec order)."""
    params = member_params(ctx)
    return max(ctx.members, key=lambda m: (params[m], -ctx.members.index(m)))


def mean_sized_member(ctx: RunContext) -> str:
    """The member whose parameter count is nearest the members' mean (the first such in spec order)."""
    params = member_params(ctx)
    mean = sum(params.values()) / len(params)
    return min(ctx.members, key=lambda m: (abs(params[m] - mean), ctx.members.index(m)))


def family_of(ctx: RunContext) -> dict[str, str]:
    """Each member's family (mlp, plain, residual, dense), from plan.json's clusters."""
    return ctx.plan.family_of


def require_ok(results: Mapping[str, ModelResult], what: str, hint: str) -> None:
    """A net the rest of the method builds on that diverged stops the run (MNError)."""
    for name, r in results.items():
        if not r.ok:
            raise MNError(f"{what} '{name}' diverged: {r.message}", hint=hint)
