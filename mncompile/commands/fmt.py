"""`mncompile fmt SPEC`: print (or rewrite) a spec in canonical form."""

from __future__ import annotations

import argparse
import os
import stat
import sys
import tempfile
from pathlib import Path

from mncompile.api import load
from mncompile.diagnostics import MNError
from mncompile.fmt import format_ensemble

NAME = "fmt"
HELP = "print a spec in canonical form (comments are not kept)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-w", "--write", action="store_true",
                      help="rewrite the file in place instead of printing")
    p.add_argument("--drop-comments", action="store_true",
                   help="with -w: rewrite even when that removes the file's comments")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the file is not already in canonical form")


def run(args: argparse.Namespace) -> int:
    e = load(args.spec)
    text = format_ensemble(e)
    path = Path(args.spec)
    if args.check:
        if path.read_bytes() == text.encode("utf-8"):
            return 0
        print(f"{args.spec}: not in canonical form (run 'mncompile fmt -w {args.spec}')",
              file=sys.stderr)
        return 1
    if args.write:
        # '#' only ever starts a comment in the language, and the canonical form keeps none
        comments = sum(1 for line in path.read_text(encoding="utf-8-sig").splitlines() if "#" in line)
        if comments and not args.drop_comments:
            raise MNError(
                f"{comments} comment line(s) here, and the canonical form keeps no comments",
                hint="add --drop-comments to rewrite it anyway, or print the canonical form "
                f"with 'mncompile fmt {args.spec}'",
                source=args.spec,
            )
        _write(path, text)
        return 0
    print(text, end="")
    return 0


def _write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions; a symlink keeps pointing at it."""
    target = path.resolve()
    data = text.encode("utf-8")
    if target.read_bytes() == data:
        return  # already canonical: leave the file (and its modification time) alone
    mode = stat.S_IMODE(target.stat().st_mode)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise MNError(f"cannot write the file: {exc.strerror}",
                      hint="fmt -w needs write access to the file's folder; "
                      "or print the canonical form with 'mncompile fmt SPEC'",
                      source=str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
