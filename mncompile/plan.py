"""The JSON form of a plan: what `mncompile plan --json` prints and what `plan.json` holds.

The schema is documented in `docs/plan-schema.md`; `schema_version` changes whenever a field
changes meaning or goes away (adding a field does not change it).

>>> from mncompile.api import loads
>>> from mncompile.passes.cluster import plan_ensemble
>>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
>>> d = plan_to_json(plan_ensemble(e))
>>> d["schema_version"], d["g"], d["clusters"][0]["mother"]["dense"], d["clusters"][0]["members"]
(1, 1, [4], ['a', 'b'])
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mncompile.cost import CAVEAT, estimate, net_cost
from mncompile.formats.plan_file import SCHEMA_VERSION as SCHEMA_VERSION  # one number for writer and reader
from mncompile.ir import Ensemble, Net
from mncompile.passes.cluster import Padding, Plan, arch_classes, distance, net_vector


def net_to_json(net: Net, ensemble: Ensemble) -> dict[str, Any]:
    """A net's structure with repeats expanded, and its parameters and forward MACs.

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 1x8 classes 2 net a dense { stem 3:4 block { 3:2 x2 } } }")
    >>> net_to_json(e.nets[0], e)["blocks"]
    [[[3, 2], [3, 2]]]
    """
    cost = net_cost(net, ensemble)
    return {"name": net.name, **net_structure(net), "params": cost.params, "macs": cost.macs}


def net_structure(net: Net) -> dict[str, Any]:
    """A net's layers as plain data: family, stem, blocks of [kernel, filters] (repeats expanded), dense.

    What `mncompile.formats.plan_file.NetStructure` reads, for MotherNets and members alike.

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 1x8 classes 2 net a plain { block { 3:4 x2 } dense 5 } }")
    >>> net_structure(e.nets[0])
    {'family': 'plain', 'stem': None, 'blocks': [[[3, 4], [3, 4]]], 'dense': [5]}
    """
    return {
        "family": net.family,
        "stem": [net.stem.kernel, net.stem.filters] if net.stem is not None else None,
        "blocks": [[[x.kernel, x.filters] for x in b.layers] for b in net.blocks],
        "dense": list(net.widths),
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The documented JSON object of a plan (dump it with sorted keys: see `dumps`)."""
    e = plan.ensemble
    classes = arch_classes(e)
    pads = {arch: Padding.of(nets) for arch, nets in classes.items()}
    clusters: list[dict[str, Any]] = []
    member_rows: dict[str, dict[str, Any]] = {}
    for c in plan.clusters:
        pad = pads[c.arch]
        mvec = net_vector(c.mother, pad)
        clusters.append({
            "index": c.index,
            "family": c.arch[0],
            "rank": c.arch[1],
            "distance": c.distance,
            "members": list(c.members),
            "mother": net_to_json(c.mother, e),
        })
        for name in c.members:
            cost = net_cost(e.net(name), e)
            member_rows[name] = {"name": name, "cluster": c.index, **net_structure(e.net(name)),
                                 "params": cost.params, "macs": cost.macs,
                                 "distance": distance(net_vector(e.net(name), pad), mvec)}
    members: list[dict[str, Any]] = [member_rows[n.name] for n in e.nets]
    est = estimate(plan)
    cfg = e.config
    return {
        "schema_version": SCHEMA_VERSION,
        "ensemble": e.name,
        "input": list(e.input),
        "classes": e.classes,
        "g": plan.g,
        "seed": plan.seed,
        "total_distance": plan.total_distance,
        "arch_classes": [
            {"family": arch[0], "rank": arch[1], "nets": [n.name for n in nets],
             "clusters": sum(1 for c in plan.clusters if c.arch == arch)}
            for arch, nets in classes.items()
        ],
        "clusters": clusters,
        "members": members,
        "cost": {
            "estimate": True,
            "note": CAVEAT,
            "max_epochs": cfg.max_epochs,
            "hatched_max_epochs": cfg.hatched_max_epochs,
            "mothers": est.mothers,
            "hatched": est.hatched,
            "total": est.total,
            "independent": est.independent,
            "ratio": round(est.ratio, 6),
        },
    }


def sweep_row(plan: Plan) -> dict[str, Any]:
    """One row of `mncompile plan --clusters sweep`: g, distance, MotherNet params, cost ratio."""
    e = plan.ensemble
    return {
        "g": plan.g,
        "total_distance": plan.total_distance,
        "mother_params": sum(net_cost(c.mother, e).params for c in plan.clusters),
        "cost_ratio": round(estimate(plan).ratio, 6),
    }


def sweep_to_json(plans: Iterable[Plan]) -> dict[str, Any]:
    """The JSON object of a sweep over g (see `docs/plan-schema.md`).

    >>> from mncompile.api import loads
    >>> from mncompile.passes.cluster import Planner
    >>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
    >>> [r["g"] for r in sweep_to_json(Planner(e).sweep())["sweep"]]
    [1, 2]
    """
    rows, name, seed = [], None, None
    for p in plans:
        rows.append(sweep_row(p))
        name, seed = p.ensemble.name, p.seed
    return {"schema_version": SCHEMA_VERSION, "ensemble": name, "seed": seed, "note": CAVEAT,
            "sweep": rows}


def dumps(obj: dict[str, Any]) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, a final newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
