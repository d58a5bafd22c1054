"""`mncompile SPEC`: compile a spec into a folder of generated files and print what was written."""

from __future__ import annotations

import argparse
from pathlib import Path

from mncompile.api import load
from mncompile.commands import hatching
from mncompile.commands.check import add_max_params
from mncompile.compiler import Output, compile_ensemble
from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.passes.check import MAX_NET_PARAMS
from mncompile.shapes import infer_net
from mncompile.table import human, render
from mncompile.validators import positive
from mncompile.writer import write_folder

NAME = "compile"
HELP = ("compile a spec into models.py, plan.json, hatch/, shared.py, train.py and README.md "
        "(the default command)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="the .mnet file")
    add_compile_arguments(p, seed_flag="--seed")


def add_compile_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup, seed_flag: str) -> None:
    """-o, --clusters, the clustering seed (named `seed_flag`) and --force: shared with `run`."""
    p.add_argument("-o", "--output", metavar="DIR",
                   help="the folder to write (default: generated/<ensemble>/ under the current folder)")
    p.add_argument("--clusters", "-g", metavar="G", type=positive(int),
                   help="number of MotherNets (default: one per architecture class)")
    p.add_argument(seed_flag, type=int, default=0, metavar="S",
                   help="seed of the clustering restarts (default 0)")
    p.add_argument("--force", action="store_true",
                   help="replace the output folder even if mncompile did not generate it, it holds another "
                   "ensemble or it is the golden record; with `run`, also a finished run in --out")
    add_max_params(p)


def summary(out: Output) -> str:
    """The table of clusters, MotherNets and members with their parameters."""
    e = out.plan.ensemble
    rows: list[list[object]] = []
    mother_params = member_params = 0
    for c in out.plan.clusters:
        family, rank = c.arch
        arch = f"{family} {rank}-D" if rank else family
        p = infer_net(c.mother, e.input, e.classes).params
        mother_params += p
        rows.append([c.index + 1, c.mother.name, "MotherNet", arch, human(p)])
        for m in c.members:
            q = infer_net(e.net(m), e.input, e.classes).params
            member_params += q
            rows.append(["", m, "member", "", human(q)])
    table = render(["cluster", "net", "role", "class", "params"], rows)
    n = len(out.plan.clusters)
    return (f"{table}\n\n{len(e.nets)} members in {n} cluster{'s' if n != 1 else ''}: "
            f"{human(mother_params)} MotherNet parameters, {human(member_params)} member parameters")


def _listing(files: dict[str, str]) -> list[str]:
    """File names, with each subfolder shown once with its file count."""
    out: list[str] = []
    folders: dict[str, int] = {}
    for p in files:
        if p.startswith("."):
            continue
        if "/" in p:
            folder = p.split("/")[0]
            if folder not in folders:
                out.append(folder)
            folders[folder] = folders.get(folder, 0) + 1
        else:
            out.append(p)
    return [f"{p}/ ({folders[p]} files)" if p in folders else p for p in out]


def compile_to(spec: str, e: Ensemble, output: str | None, clusters: int | None, seed: int,
               force: bool, max_params: int | None = MAX_NET_PARAMS) -> tuple[Path, Output]:
    """Compile a loaded spec into `output` (default generated/<ensemble>); the folder and result."""
    dest = Path(output) if output else Path("generated") / e.name
    try:
        out = compile_ensemble(e, clusters=clusters, seed=seed, source_name=Path(spec).name,
                               max_params=max_params)
        write_folder(dest, out.files, force=force, protect=[Path(spec)], ensemble=e.name,
                     options={"g": out.plan.g, "seed": seed})
    except MNError as err:
        # errors about a spec position show that line; errors about options or files name the tool
        if err.span is not None and err.span.line > 0:
            raise err.with_source(spec, Path(spec).read_text(encoding="utf-8")) from None
        raise err.with_source("mncompile", "") from None
    return dest, out


def run(args: argparse.Namespace) -> int:
    e = load(args.spec, max_params=args.max_params)
    dest, out = compile_to(args.spec, e, args.output, args.clusters, args.seed, args.force,
                           args.max_params)
    listed = ", ".join(_listing(out.files))
    print(f"wrote {dest}{'' if str(dest).endswith('/') else '/'}: {listed}")
    print()
    print(summary(out))
    print(exactness(out, args.spec))
    print(sharing(out))
    return 0


def sharing(out: Output) -> str:
    """Which clusters shared.py shares (--method shared-mothernets), and why the others are not."""
    from mncompile.passes.share_plan import Refusal, param_count

    if not out.shares:
        return "shared-mothernets: no cluster of two or more nets, nothing to share"
    e = out.plan.ensemble
    lines = []
    for mother, sp in out.shares.items():
        if isinstance(sp, Refusal):
            lines.append(f"  {mother}: separate members ({sp.reason})")
            continue
        separate = sum(infer_net(e.net(m), e.input, e.classes).params for m in sp.members)
        lines.append(f"  {mother}: shared, {human(param_count(sp))} trainable parameters "
                     f"({human(param_count(sp, stored=True))} stored) instead of {human(separate)}")
    shared = sum(not isinstance(sp, Refusal) for sp in out.shares.values())
    head = f"shared-mothernets: {shared} of {len(out.shares)} clusters shared (shared.py):"
    return "\n".join([head, *lines])


def exactness(out: Output, source: str | None = None) -> str:
    """The hatching tables: all exact, or a warning (where, why, what to change) per reason."""
    tables = out.tables
    if not tables:
        return "hatching: no tables (every cluster has one net: its MotherNet is the net itself)"
    inexact = [m for m, t in tables.items() if not t.exact]
    if not inexact:
        return f"hatching: all {len(tables)} tables exact (each member starts as its MotherNet's function)"
    warnings = hatching.warnings_for(out.plan.ensemble, tables)
    head = (f"hatching: {len(tables) - len(inexact)} of {len(tables)} tables exact; not exact: "
            + ", ".join(inexact))
    return "\n".join([head, hatching.show(warnings, source or out.plan.ensemble.source, indent="  ")])
