"""`mncompile check SPEC`: validate a spec and print a table of its nets."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mncompile.api import load
from mncompile.shapes import infer_net, layer_count
from mncompile.table import human, render

NAME = "check"
HELP = "validate a spec and print its nets (family, blocks, layers, parameters, MACs)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args: argparse.Namespace) -> int:
    e = load(args.spec)
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
    if args.json:
        print(json.dumps({"ensemble": e.name, "input": list(e.input), "classes": e.classes,
                          "nets": rows}, indent=2, sort_keys=True))
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
    return 0
