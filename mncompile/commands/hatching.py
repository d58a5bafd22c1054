"""The hatching warnings of `mncompile SPEC`, `check` and `plan`: which members of a clustering do
not start as their MotherNet's function, where in the spec, and what to change.

Not a subcommand: the three commands share it. The tables come from the compile pipeline's own
passes (`mncompile.compiler`), the hints from `mncompile.exactness`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace

from mncompile.compiler import Compilation, assign_clusters, plan_hatching_tables, run_pipeline
from mncompile.exactness import NotExact, format_warning, not_exact, warning_to_json
from mncompile.formats.hatch_table import HatchTable
from mncompile.ir import Ensemble, Net, Span
from mncompile.passes.cluster import Plan
from mncompile.quiet_gc import paused_gc


def tables_for(e: Ensemble, plan: Plan | None = None, clusters: int | None = None,
               seed: int = 0) -> Mapping[str, HatchTable]:
    """The hatching tables of a checked ensemble for `plan`, or for the clustering it would get."""
    c = Compilation(e, clusters, seed)
    with paused_gc():  # as a compile: the collector's full passes would dominate a large spec
        if plan is None:
            return run_pipeline(c, passes=(assign_clusters, plan_hatching_tables)).need_tables()
        return plan_hatching_tables(replace(c, plan=plan, seed=plan.seed)).need_tables()


def warnings_for(e: Ensemble, tables: Mapping[str, HatchTable]) -> list[NotExact]:
    """A `NotExact` per reason of every table that is not exact, located in the spec."""
    return not_exact(tables, lambda member, place: _position(e.net(member), place))


def _position(net: Net, place: str) -> tuple[int, int] | None:
    span = _span(net, place.split(".")[0], place)
    if span is None or span.line <= 0:
        span = net.name_span
    return (span.line, span.column) if span.line > 0 else None


def _span(net: Net, part: str, place: str) -> Span | None:
    """The span of the member part a reason names (docs/parameter-names.md's names)."""
    try:
        if part.startswith("block"):
            block = net.blocks[int(part[5:]) - 1]
            inner = place.split(".")[1] if "." in place else ""
            for prefix in ("layer", "unit"):
                if inner.startswith(prefix):
                    return block.layers[int(inner[len(prefix):]) - 1].span
            return block.span
        if part.startswith("transition"):
            # the transition leads into the block the MotherNet lacks: point at that block
            return net.blocks[int(part[10:])].span
        if part == "stem":
            return net.stem_span
        if part == "head":
            inner = place.split(".")[1] if "." in place else ""
            if inner.startswith("fc"):
                return net.dense[int(inner[2:]) - 1].span
    except (ValueError, IndexError):
        return None
    return None


def to_json(warnings: list[NotExact]) -> list[dict[str, object]]:
    """The `warnings` field of `--json`."""
    return [warning_to_json(w) for w in warnings]


def show(warnings: list[NotExact], source: str, indent: str = "") -> str:
    """The warnings as text, one `file:line:col: warning:` line and its help each."""
    return "\n".join(indent + format_warning(w, source).replace("\n", "\n" + indent)
                     for w in warnings)


def report(warnings: list[NotExact], source: str, clustering: str, hatched: int) -> None:
    """Print the warnings to stderr, then one note on the clustering they are for."""
    if not warnings:
        return
    members = list(dict.fromkeys(w.member for w in warnings))
    print(show(warnings, source), file=sys.stderr)
    one = len(members) == 1
    print(f"note: {clustering}: {len(members)} of {hatched} hatched members "
          f"({', '.join(repr(m) for m in members)}) will not start as "
          f"{'its' if one else 'their'} MotherNet's function; {'it is' if one else 'they are'} "
          "still hatched and trained, from a start that is not the MotherNet's",
          file=sys.stderr)
