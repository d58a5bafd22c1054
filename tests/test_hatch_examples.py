"""Hatching the shipped examples: with plan_ensemble's default clusters (one MotherNet per
architecture class), every member's table must be exact, and `verify_hatch` must confirm it
on the generated modules.

What runs by default (well under a minute): the tables of every member of every example; the
numerical check of every member of the small examples (mlp, mnist1d, digits, v5) and, for the
big ones (v25, d5, r10, wrn6), of the cheapest member that differs from its MotherNet, on a batch
of 2. `pytest -m slow tests/test_hatch_examples.py` checks every member of every example.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mncompile.api import load
from mncompile.emit import load_models, models_source
from mncompile.ir import Ensemble, Net
from mncompile.passes.cluster import plan_ensemble
from mncompile.passes.hatch_plan import HatchTable, plan_hatching, table_dumps, table_from_json
from mncompile.runtime.hatching import hatch, verify_hatch
from mncompile.shapes import infer_net
from tests.test_hatch_props import randomise

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.mnet"))
SMALL = {"mlp", "mnist1d", "digits", "v5"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tables(path: Path) -> tuple[Ensemble, list[tuple[Net, Net, HatchTable]]]:
    e = load(path)
    plan = plan_ensemble(e)
    out = []
    for c in plan.clusters:
        for name in c.members:
            member = e.net(name)
            out.append((c.mother, member, plan_hatching(c.mother, member, e.input, e.classes, seed=0)))
    return e, out


def _changes(table: HatchTable) -> bool:
    return any(g.new != g.old for g in table.maps.values()) or any(
        e.kernel is not None or e.init is not None for e in table.entries)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_member_table_is_exact(path: Path) -> None:
    e, tables = _tables(path)
    assert {m.name for _, m, _ in tables} == {n.name for n in e.nets}
    for mother, member, table in tables:
        assert table.exact, (member.name, table.reasons)
        assert table.reasons == ()
        assert [x.key for x in table.entries] == sorted(
            t.name for t in infer_net(member, e.input, e.classes).tensors)
        assert table_from_json(json.loads(table_dumps(table))) == table
        assert table_dumps(table) == table_dumps(
            plan_hatching(mother, member, e.input, e.classes, seed=0))
    # the standard families grow their members: at most one member per MotherNet is the MotherNet
    assert sum(_changes(t) for _, _, t in tables) >= len(tables) - len({m.name for m, _, _ in tables})


def _verify(path: Path, names: set[str] | None) -> int:
    e, tables = _tables(path)
    if names is None:
        names = {m.name for _, m, _ in tables}
    by_mother: dict[str, list[tuple[Net, Net, HatchTable]]] = {}
    for mother, member, table in tables:
        if member.name in names:
            by_mother.setdefault(mother.name, []).append((mother, member, table))
    x = torch.randn((2,) + e.input, generator=torch.Generator().manual_seed(0))
    checked = 0
    for group in by_mother.values():
        mother = group[0][0]
        models = load_models(models_source(e, [mother] + [m for _, m, _ in group])).MODELS
        torch.manual_seed(0)
        mnet = models[mother.name]()
        randomise(mnet, 3)
        with torch.no_grad():
            scale = 1 + float(mnet.eval()(x).abs().max())
        for _, member, table in group:
            nnet = models[member.name]()
            nnet.load_state_dict(hatch(mnet, table))
            diff = verify_hatch(mnet, nnet, x)
            assert diff <= 1e-4 * scale, (member.name, diff, scale)
            checked += 1
            del nnet
    return checked


def _cheapest_changed(path: Path) -> set[str]:
    e, tables = _tables(path)
    changed = [(infer_net(m, e.input, e.classes).macs, m.name) for _, m, t in tables if _changes(t)]
    return {min(changed)[1]}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_verify_hatch_on_examples(path: Path) -> None:
    names = None if path.stem in SMALL else _cheapest_changed(path)
    assert _verify(path, names) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.stem not in SMALL], ids=lambda p: p.stem)
def test_verify_hatch_every_member(path: Path, request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("every member of the big examples: run with -m slow")
    e = load(path)
    assert _verify(path, None) == len(e.nets)
