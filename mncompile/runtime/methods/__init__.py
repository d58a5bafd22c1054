"""The training methods, listed in `METHODS`: what trains, in which phase, with which settings.

Each method is a plain module with `HELP` and `run(ctx) -> Outcome` (`runtime/context.py`). It
builds nets, groups them into phases of jobs and hands each phase to `ctx.engine.run`; it never
asks which engine runs it. A method whose phases train plain jobs together (no hooks, no data of
their own) also has `lockstep(ctx)`: their names, phase by phase, which `--fuse auto` asks
before anything is built. To add a method, write its module and add one line here.

No torch at import: the `mncompile` command lists the methods in its help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from mncompile.runtime.context import Outcome, RunContext
from mncompile.runtime.methods import (
    bagging,
    distill,
    fge,
    full_data,
    mothernets,
    shared_mothernets,
    snapshot,
    treenet,
)


@dataclass(frozen=True)
class MethodSpec:
    """A method's `--method` name, what it runs, and its one-line help."""

    name: str
    run: Callable[[RunContext], Outcome]
    help: str
    #: the names of the nets it trains together as plain jobs, phase by phase (none by default)
    lockstep: Callable[[RunContext], list[list[str]]] = field(default=lambda ctx: [])


def _spec(name: str, module: ModuleType) -> MethodSpec:
    if hasattr(module, "lockstep"):
        return MethodSpec(name, module.run, module.HELP, module.lockstep)
    return MethodSpec(name, module.run, module.HELP)


#: every training method by its `--method` name, in the order `--help` lists them
METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    _spec("mothernets", mothernets),
    _spec("shared-mothernets", shared_mothernets),
    _spec("full-data", full_data),
    _spec("bagging", bagging),
    _spec("distill", distill),
    _spec("snapshot", snapshot),
    _spec("fge", fge),
    _spec("treenet", treenet),
)}
