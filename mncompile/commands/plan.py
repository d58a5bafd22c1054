"""`mncompile plan SPEC`: cluster the members, show the MotherNets and the estimated cost.

`--clusters G` picks g (default: one MotherNet per architecture class, the fastest setting);
`--clusters sweep` tabulates every g; `--json` prints the documented JSON (docs/plan-schema.md).
For one g it also plans the hatching and warns, on stderr, about every member that would not start
as its MotherNet's function, with what to change (`--json`: the `warnings` field).
"""

from __future__ import annotations

import argparse

from mncompile.api import load
from mncompile.commands import hatching
from mncompile.commands.check import add_max_params
from mncompile.cost import CAVEAT, estimate, net_cost
from mncompile.diagnostics import MNError
from mncompile.fmt import format_net
from mncompile.passes.cluster import Plan, Planner
from mncompile.plan import dumps, plan_to_json, sweep_row, sweep_to_json
from mncompile.table import human, render

NAME = "plan"
HELP = "cluster the members and show each MotherNet, its members and the estimated training cost"

RANKS = {0: "flat input", 1: "1-D input", 2: "2-D input"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    p.add_argument("--clusters", metavar="G", default=None,
                   help="number of MotherNets g, from the number of architecture classes to the "
                   "number of nets; 'sweep' tabulates every g (default: one per class)")
    p.add_argument("--seed", default="0", metavar="S", help="clustering seed (default 0)")
    p.add_argument("--restarts", default="8", metavar="R",
                   help="k-means restarts per class (default 8)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_max_params(p)
    from mncompile.budget import add_budget_arguments

    add_budget_arguments(p)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where --budget's probe runs (default auto)")


def _whole(option: str, value: str, lowest: int, hint: str, spec: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise MNError(f"{option} takes a whole number, got '{value}'", hint=hint,
                      source=spec) from None
    if n < lowest:
        raise MNError(f"{option} must be at least {lowest}, got {n}", hint=hint, source=spec)
    return n


def run(args: argparse.Namespace) -> int:
    e = load(args.spec, max_params=args.max_params)
    seed = _whole("--seed", args.seed, 0, "a seed such as 0", args.spec)
    restarts = _whole("--restarts", args.restarts, 1, "a count such as 8", args.spec)
    planner = Planner(e, seed=seed, restarts=restarts)
    lo, hi = planner.g_range.start, planner.g_range.stop - 1
    valid = f"use a whole number from {lo} to {hi}, or 'sweep'"
    if args.budget is not None:
        from mncompile.budget import choose_g

        choose_g(e, args.budget, rate=args.rate, steps=args.probe, runs=args.runs,
                 train_size=args.budget_train_size, device=args.device)
        return 0
    if args.clusters == "sweep":
        return _sweep(args, planner)
    clusters = None
    if args.clusters is not None:
        try:
            clusters = int(args.clusters)
        except ValueError:
            raise MNError(f"--clusters takes a whole number or 'sweep', got '{args.clusters}'",
                          hint=valid, source=args.spec) from None
    try:
        plan = planner.plan(clusters)
    except MNError as err:
        raise MNError(f"--clusters {clusters}: {err.message}", hint=err.hint,
                      source=args.spec) from None
    tables = hatching.tables_for(e, plan)
    warnings = hatching.warnings_for(e, tables)
    if args.json:
        # plan.json holds the same object without `warnings` (its hatch tables say why instead)
        print(dumps({**plan_to_json(plan), "warnings": hatching.to_json(warnings)}), end="")
        return 0
    _show(args.spec, plan)
    hatching.report(warnings, args.spec, f"with g = {plan.g} (seed {plan.seed})", len(tables))
    return 0


def _show(spec: str, plan: Plan) -> None:
    e = plan.ensemble
    n_classes = len({c.arch for c in plan.clusters})
    print(f"{spec}: ensemble '{e.name}', {len(e.nets)} nets in {n_classes} architecture "
          f"class{'es' if n_classes > 1 else ''}, g = {plan.g} MotherNet{'s' if plan.g > 1 else ''} "
          f"(seed {plan.seed})")
    doc = plan_to_json(plan)
    by_name = {r["name"]: r for r in doc["members"]}
    for c in plan.clusters:
        family, rank = c.arch
        print()
        print(f"cluster {c.index + 1} ({family}, {RANKS.get(rank, f'{rank}-D input')}): "
              f"{len(c.members)} member{'s' if len(c.members) > 1 else ''}, edit distance {c.distance}")
        print(format_net(c.mother, indent="  "))
        mother = net_cost(c.mother, e)
        rows: list[list[object]] = [[c.mother.name + " (MotherNet)", human(mother.params),
                                     human(mother.macs), "-"]]
        for name in c.members:
            r = by_name[name]
            rows.append([name, human(r["params"]), human(r["macs"]), r["distance"]])
        print("\n".join("  " + line for line in render(["net", "params", "MACs", "distance"],
                                                        rows).splitlines()))
    est = estimate(plan)
    print()
    print(f"total edit distance: {plan.total_distance}")
    print(f"estimated training cost: {est.ratio:.3f} x independent training "
          f"({human(est.total)} vs {human(est.independent)} MAC-epochs per example)")
    print(f"  ({CAVEAT})")


def _sweep(args: argparse.Namespace, planner: Planner) -> int:
    if args.json:
        print(dumps(sweep_to_json(planner.sweep())), end="")
        return 0
    e = planner.ensemble
    print(f"{args.spec}: ensemble '{e.name}', {len(e.nets)} nets, every g from "
          f"{planner.g_range.start} to {planner.g_range.stop - 1} (seed {planner.seed})")
    print()
    rows = []
    for plan in planner.sweep():
        r = sweep_row(plan)
        rows.append([r["g"], r["total_distance"], human(r["mother_params"]), f"{r['cost_ratio']:.3f}"])
    print(render(["g", "total distance", "MotherNet params", "est. cost ratio"], rows))
    print()
    print(f"cost ratio: estimated training cost / independent training ({CAVEAT})")
    return 0
