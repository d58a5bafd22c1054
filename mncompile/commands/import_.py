"""`mncompile import FILE.py:NAME [--name N] [--input DIMS] [--add FILE.py:NAME ...]`.

Prints the `.mnet` net block nearest to a PyTorch module (NAME a class or a factory called with no
arguments), and with `--add` a whole ensemble spec of several; each difference from the family
contract is a note on stderr, with the parameter counts on both sides (`mncompile.importer`).
Importing FILE.py runs it: give only files you trust.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys

from mncompile.diagnostics import MNError

NAME = "import"
HELP = "print the .mnet net nearest to a PyTorch module (VGG, ResNet basic-block, DenseNet or MLP style)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="FILE.py:NAME", help="a module class, or a function returning a module "
                   "(called with no arguments; importing FILE.py runs it)")
    p.add_argument("--name", help="the net's name (default: NAME, lowercased)")
    p.add_argument("--input", metavar="DIMS", help="the input shape, C x L or C x H x W (needed for "
                   "convolutional nets), or N")
    p.add_argument("--add", action="append", default=[], metavar="FILE.py:NAME",
                   help="another module: print a whole ensemble spec of all of them (repeatable)")
    p.add_argument("--ensemble", default="imported", help="the ensemble's name with --add (default imported)")


def _dims(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if not 1 <= len(parts) <= 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise MNError(f"--input {text}: expected N, CxL or CxHxW with positive sizes")
    return tuple(int(p) for p in parts)


def _net_name(text: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", text.rpartition(":")[2]).lower() or "net"
    if not re.match(r"[A-Za-z_]", name) or keyword.iskeyword(name):
        name = "net_" + name
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


def run(args: argparse.Namespace) -> int:
    from mncompile.api import loads
    from mncompile.cost import net_cost
    from mncompile.fmt import format_net
    from mncompile.importer import import_module
    from mncompile.userfile import call, load_name

    shape = _dims(args.input)
    targets = [args.target, *args.add]
    hint = "give FILE.py:NAME, NAME a torch.nn.Module class or a function returning a module"
    imported = []
    taken: set[str] = set()
    for i, target in enumerate(targets):
        obj = load_name(target, "import", hint)
        module = call(obj, target, "import") if callable(obj) else obj
        name = args.name if i == 0 and args.name else _net_name(target, taken)
        if not re.fullmatch(r"[A-Za-z_]\w*", name) or keyword.iskeyword(name):
            raise MNError(f"--name {name}: not a valid net name",
                          hint="a letter or _, then letters, digits, _")
        taken.add(name)
        try:
            imported.append(import_module(module, name, shape))
        except MNError as err:
            raise MNError(f"import {target}: {err.message}", hint=err.hint) from None
    first = imported[0]
    for other in imported[1:]:
        if other.input != first.input or other.classes != first.classes:
            raise MNError(f"{other.name} takes {'x'.join(map(str, other.input))} to {other.classes} classes, "
                          f"{first.name} {'x'.join(map(str, first.input))} to {first.classes}: one ensemble "
                          "has one input and one class count")
    dims = "x".join(map(str, first.input))
    text = (f"ensemble {args.ensemble} {{\n  input {dims}\n  classes {first.classes}\n"
            + "".join(f"  {im.block()}\n" for im in imported) + "}\n")
    try:
        e = loads(text, source="<import>")
    except MNError as err:
        raise MNError(f"the nearest nets do not make a valid spec: {err.message}", hint=err.hint) from None
    for im, net in zip(imported, e.nets, strict=True):
        im.ours = net_cost(net, e).params
    for im in imported:
        same = im.ours == im.theirs
        print(f"note: {im.name}: {im.family} net, {im.theirs:,} parameters in the module, {im.ours:,} in the "
              f"imported net" + ("" if same else f" ({im.ours - im.theirs:+,})"), file=sys.stderr)
        for n in im.notes:
            print(f"note: {im.name}: {n}", file=sys.stderr)
        if not same and not im.notes:
            print(f"note: {im.name}: the counts differ in a way no rule above names", file=sys.stderr)
    if args.add:
        print(f"ensemble {args.ensemble} {{\n  input {dims}\n  classes {first.classes}\n")
        for net in e.nets:
            print(format_net(net, indent="  "))
        print("}")
    else:
        print(f"# input {dims}, classes {first.classes}")
        print(format_net(e.nets[0], indent=""))
    return 0
