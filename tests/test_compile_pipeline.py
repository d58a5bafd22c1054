"""The compile pipeline: the passes in order, `verify` after every one, and `lint` catching each break."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncompile.api import load, loads
from mncompile.compiler import (
    PIPELINE,
    Compilation,
    assign_clusters,
    compile_ensemble,
    lint,
    plan_hatching_tables,
    run_pipeline,
    verify,
)
from mncompile.emit import emit_files
from mncompile.golden import example_specs
from mncompile.ir import Block, Ensemble, Layer
from tests.strategies import ensembles

SPEC = """ensemble e { input 3x8x8 classes 3
  net a plain { block { 3:4 3:6 } dense 8 }
  net b plain { block { 5:6 } block { 3:8 } }
  net c plain { block { 3:5 3:6 3:6 } dense 4 }
  net m mlp { dense 6 } }"""


def _verified(e: Ensemble, clusters: int | None = None) -> tuple[Compilation, list[str]]:
    ran: list[str] = []

    def after(c: Compilation) -> None:
        verify(c)
        ran.append("ok")

    return run_pipeline(Compilation(e, clusters), after=after), ran


def test_the_pipeline_is_one_explicit_tuple() -> None:
    assert [p.__name__ for p in PIPELINE] == ["check_spec", "assign_clusters", "plan_hatching_tables",
                                             "plan_shared_mothernets"]
    c, ran = _verified(loads(SPEC))
    assert len(ran) == len(PIPELINE)
    assert c.plan is not None and c.tables is not None and c.shares is not None


@pytest.mark.parametrize("spec", example_specs(), ids=lambda p: p.stem)
def test_every_example_keeps_the_invariants_after_every_pass(spec: Path) -> None:
    e = load(spec)
    for g in sorted({None, (len(e.nets) + 1) // 2 if len(e.nets) > 2 else None}, key=str):
        c, ran = _verified(e, g)
        assert len(ran) == len(PIPELINE)
        assert c.plan is not None and lint(c) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ensembles(max_nets=5), st.data())
def test_random_ensembles_keep_the_invariants_after_every_pass(e: Ensemble, data: st.DataObject) -> None:
    classes = len({(n.family, e.rank) for n in e.nets})
    g = data.draw(st.integers(classes, len(e.nets)))
    c, ran = _verified(e, g)
    assert len(ran) == len(PIPELINE) and c.plan is not None and c.plan.g == g


def test_compile_ensemble_is_the_pipeline_then_emit() -> None:
    e = loads(SPEC)
    out = compile_ensemble(e, clusters=2, seed=3, source_name="x.mnet", after=verify)
    c = run_pipeline(Compilation(e, 2, 3))
    assert c.plan is not None and c.tables is not None and c.shares is not None
    assert out.files == emit_files(e, c.plan, c.tables, c.shares, "x.mnet", {"clusters": 2, "seed": 3})
    assert out.plan == c.plan and out.tables == c.tables and out.shares == c.shares


def test_emit_renders_what_it_is_given_and_computes_no_pass() -> None:
    e = loads(SPEC)
    c = run_pipeline(Compilation(e))
    assert c.plan is not None and c.tables
    files = emit_files(e, c.plan, {}, {})
    assert not [p for p in files if p.startswith("hatch/")] and "shared.py" not in files
    loaded = subprocess.run([sys.executable, "-c", "import sys, mncompile.emit; print(sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout
    assert "mncompile.passes.hatch_plan" not in loaded and "mncompile.passes.cluster" not in loaded


def test_a_pass_out_of_order_is_refused() -> None:
    with pytest.raises(AssertionError, match="before assign_clusters"):
        plan_hatching_tables(Compilation(loads(SPEC)))


# --------------------------------------------------------------------- lint catches each break


@pytest.fixture(scope="module")
def done() -> Compilation:
    c = run_pipeline(Compilation(loads(SPEC), clusters=2))
    assert lint(c) == []
    return c


def _one(c: Compilation, *pieces: str) -> None:
    problems = lint(c)
    assert problems, "lint found nothing"
    assert any(all(p in line for p in pieces) for line in problems), problems
    with pytest.raises(AssertionError, match="broke their invariants"):
        verify(c)


def test_lint_catches_names_given_twice(done: Compilation) -> None:
    e = done.ensemble
    _one(Compilation(e.model_copy(update={"nets": (*e.nets, e.nets[0])})), "given twice", "'a'")
    assert done.plan is not None
    k = done.plan.clusters[0]
    mother = k.mother.model_copy(update={"name": "a"})
    plan = replace(done.plan, clusters=(replace(k, mother=mother), *done.plan.clusters[1:]))
    _one(replace(done, plan=plan, tables=None, shares=None), "MotherNet name 'a'", "member's name")


def test_lint_catches_a_member_in_two_clusters_or_none(done: Compilation) -> None:
    assert done.plan is not None
    k0, k1 = done.plan.clusters
    both = replace(done, plan=replace(done.plan, clusters=(k0, replace(k1, members=(*k1.members, "a")))))
    _one(both, "member 'a' is in 2 clusters")
    first = k0.members[0]
    none = replace(done, plan=replace(done.plan, clusters=(replace(k0, members=k0.members[1:]), k1)))
    _one(none, f"member '{first}' is in 0 clusters")


def test_lint_catches_a_mothernet_larger_than_a_member(done: Compilation) -> None:
    assert done.plan is not None
    k = next(k for k in done.plan.clusters if k.mother.family == "plain")
    wide = k.mother.model_copy(update={"blocks": (Block(layers=(Layer(kernel=7, filters=99),)),
                                                  *k.mother.blocks[1:])})
    c = replace(done, plan=replace(done.plan, clusters=tuple(
        replace(x, mother=wide) if x is k else x for x in done.plan.clusters)), tables=None, shares=None)
    _one(c, f"MotherNet '{k.mother.name}' is larger than member", "block 1 layer 1: 7:99")
    _one(c, "is not the construction of its members")


def test_lint_catches_tables_that_do_not_fit_the_plan(done: Compilation) -> None:
    assert done.tables is not None
    t = done.tables["a"]
    _one(replace(done, tables={**done.tables, "a": replace(t, mother="other")}), "table of 'a'", "'other'")
    _one(replace(done, tables={**done.tables, "a": replace(t, seed=t.seed + 1)}), "table of 'a'", "seed")
    tensors = dict(t.mother_tensors)
    tensors.pop(sorted(tensors)[0])
    _one(replace(done, tables={**done.tables, "a": replace(t, mother_tensors=tensors)}),
         "mother_tensors are not MotherNet")
    _one(replace(done, tables={**done.tables, "a": replace(t, entries=t.entries[1:])}),
         "entries are not the member's tensors", f"missing ['{t.entries[0].key}']")
    x = t.entries[0]
    bad = replace(x, shape=(*x.shape[:-1], x.shape[-1] + 1))
    _one(replace(done, tables={**done.tables, "a": replace(t, entries=(bad, *t.entries[1:]))}),
         f"{x.key} is {x.kind}")
    _one(replace(done, tables={k: v for k, v in done.tables.items() if k != "a"}), "hatching tables are for")


def test_lint_catches_share_plans_that_do_not_fit_the_plan(done: Compilation) -> None:
    assert done.shares is not None and done.plan is not None
    _one(replace(done, shares={}), "share plans are for []")
    mother, sp = next(iter(done.shares.items()))
    _one(replace(done, shares={mother: replace(sp, members=sp.members[:1])}), f"share plan of '{mother}'")


def test_verify_runs_on_partial_states(done: Compilation) -> None:
    c = assign_clusters(Compilation(done.ensemble, clusters=2))
    verify(c)
    assert c.tables is None and lint(c) == []
