"""`mncompile fmt SPEC`: print (or rewrite) a spec in canonical form."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from mncompile.api import load
from mncompile.fmt import format_ensemble

NAME = "fmt"
HELP = "print a spec in canonical form (comments are not kept)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    p.add_argument("-w", "--write", action="store_true",
                   help="rewrite the file in place instead of printing")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the file is not already in canonical form")


def run(args: argparse.Namespace) -> int:
    e = load(args.spec)
    text = format_ensemble(e)
    if args.check:
        return 0 if Path(args.spec).read_text(encoding="utf-8") == text else 1
    if args.write:
        path = Path(args.spec)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        return 0
    print(text, end="")
    return 0
