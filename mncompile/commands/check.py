"""`mncompile check SPEC`: validate a spec and print a table of its nets.

It also plans the hatching of the default clustering (one MotherNet per architecture class, what
`mncompile SPEC` uses without --clusters) and warns, on stderr, about every member that would not
start as its MotherNet's function, with what to change (`--json`: the `warnings` field).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from mncompile.api import load
from mncompile.commands import hatching
from mncompile.passes.check import ENSEMBLE_PARAMS_FACTOR, MAX_NET_PARAMS
from mncompile.shapes import infer_net, layer_count
from mncompile.table import human, render
from mncompile.validators import count_or_none

NAME = "check"
HELP = "validate a spec and print its nets (family, blocks, layers, parameters, MACs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    add_max_params(p)


def add_max_params(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--max-params N: the parameter limit of the check (shared by check, plan, compile and run)."""
    p.add_argument("--max-params", type=count_or_none, default=MAX_NET_PARAMS, metavar="N",
                   help=f"refuse a net of more than N trainable parameters, or an ensemble of more "
                   f"than {ENSEMBLE_PARAMS_FACTOR} N in all (default {human(MAX_NET_PARAMS)}; "
                   "1e9 and 1G are the same; 'none': no limit)")


def run(args: argparse.Namespace) -> int:
    e = load(args.spec, max_params=args.max_params)
    rows: list[dict[str, Any]] = []
    for net in e.nets:
        s = infer_net(net, e.input, e.classes)
        rows.append({
            "net": net.name,
            "family": net.family,
            "blocks": len(net.blocks),
            "layers": layer_count(net),
            "params": s.params,
            "macs": s.macs,
        })
    tables = hatching.tables_for(e)
    warnings = hatching.warnings_for(e, tables)
    if args.json:
        print(json.dumps({"ensemble": e.name, "input": list(e.input), "classes": e.classes,
                          "nets": rows, "warnings": hatching.to_json(warnings)},
                         indent=2, sort_keys=True))
        return 0
    shape = "x".join(map(str, e.input))
    print(f"{args.spec}: ensemble '{e.name}' is valid: {len(e.nets)} nets, input {shape}, "
          f"{e.classes} classes")
    print()
    print(render(
        ["net", "family", "blocks", "layers", "params", "MACs"],
        [[r["net"], r["family"], r["blocks"], r["layers"], human(r["params"]), human(r["macs"])]
         for r in rows],
    ))
    total_p = sum(r["params"] for r in rows)
    total_m = sum(r["macs"] for r in rows)
    print()
    print(f"total: {human(total_p)} parameters, {human(total_m)} MACs per example (forward)")
    hatching.report(warnings, args.spec, "with the default clustering (one MotherNet per "
                    "architecture class)", len(tables))
    return 0
