"""`mncompile export RUN_DIR --to DIR`: the trained ensemble as a program that runs without mncompile.

Writes DIR/ensemble.pt2 (`torch.export`), DIR/ensemble.onnx when `onnx` and `onnxscript` are
installed, and DIR/export.json; each file's outputs are checked against `load_ensemble` before
anything is written (`mncompile.runtime.export`). An existing DIR is refused without --force.
"""

from __future__ import annotations

import argparse

NAME = "export"
HELP = "export a trained ensemble (a run's --out folder) as a torch.export program and ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run's --out folder (or its ensemble.pt)")
    p.add_argument("--to", required=True, metavar="DIR", help="the folder to write (must not exist)")
    p.add_argument("--onnx", choices=("auto", "yes", "no"), default="auto",
                   help="also write ensemble.onnx: auto (when onnx and onnxscript are installed, the "
                   "default), yes (an error when they are not), no")
    p.add_argument("--force", action="store_true", help="replace DIR")


def run(args: argparse.Namespace) -> int:
    from mncompile.runtime.export import export_ensemble

    export_ensemble(args.run, args.to, force=args.force, onnx=args.onnx)
    return 0
