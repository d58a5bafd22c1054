"""Clustering: vectors, edit distance, apportionment, exact balance, and plan invariants."""

from __future__ import annotations

import itertools
from collections import Counter

import Levenshtein
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.api import load, loads
from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.passes.cluster import (
    PAD,
    Padding,
    Plan,
    Planner,
    apportion,
    arch_classes,
    balanced_assign,
    distance,
    net_vector,
    plan_ensemble,
)
from mncompile.passes.mothernet import build_mothernet
from tests.strategies import ensembles


def test_levenshtein_takes_lists_of_tuples_as_symbols() -> None:
    assert Levenshtein.distance([(3, 64), (3, 128)], [(3, 64), (3, 128)]) == 0
    assert Levenshtein.distance([(3, 64), (3, 128)], [(3, 128)]) == 1
    assert Levenshtein.distance([(3, 64)], [(5, 64)]) == 1


def test_pairs_never_collide_like_strings() -> None:
    # '3:64' and '36:4' written without separators are the same string; as symbols they differ
    a, b = [(3, 64), (3, 64)], [(36, 4), (36, 4)]
    assert "".join(f"{k}{f}" for k, f in a) == "".join(f"{k}{f}" for k, f in b)
    assert distance(a, b) == 2
    assert distance([(3, 64)], [(36, 4)]) == 1
    assert distance([(3, 64)], [(3, 64)]) == 0
    assert distance([(1, 2), (3, 4)], [(3, 4), (1, 2)]) == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=6),
       st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=6))
def test_distance_is_the_textbook_edit_distance(a: list, b: list) -> None:
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
    assert distance(a, b) == d[len(b)]


def test_vector_layout_stem_blocks_head() -> None:
    e = loads("""ensemble e { input 3x16x16 classes 10
      net a residual { stem 3:16 block { 3:16 x2 } block { 5:32 } dense 64 }
      net b residual { stem 5:8 block { 3:8 } block { 3:32 x3 } block { 3:64 } dense 32 16 } }""")
    pad = Padding.of(e.nets)
    assert pad == Padding(stem=True, blocks=(2, 3, 1), dense=2)
    assert net_vector(e.nets[0], pad) == (
        (3, 16), (3, 16), (3, 16), (5, 32), PAD, PAD, PAD, (0, 64), PAD)
    assert net_vector(e.nets[1], pad) == (
        (5, 8), (3, 8), PAD, (3, 32), (3, 32), (3, 32), (3, 64), (0, 32), (0, 16))
    mlp = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 5 } }")
    p = Padding.of(mlp.nets)
    assert [net_vector(n, p) for n in mlp.nets] == [((0, 4), PAD), ((0, 6), (0, 5))]


def test_apportion() -> None:
    assert apportion(3, [5, 5, 5]) == [1, 1, 1]
    assert apportion(4, [6, 3, 1]) == [2, 1, 1]
    assert apportion(5, [6, 3, 1]) == [3, 1, 1]
    assert apportion(2, [1, 1]) == [1, 1]
    assert apportion(4, [2, 2, 2]) == [2, 1, 1]  # tie goes to the earlier class
    assert apportion(9, [8, 1]) == [8, 1]
    with pytest.raises(ValueError):
        apportion(1, [2, 2])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5), st.data())
def test_apportion_properties(sizes: list[int], data: st.DataObject) -> None:
    g = data.draw(st.integers(len(sizes), sum(sizes)))
    ks = apportion(g, sizes)
    assert sum(ks) == g
    assert all(1 <= k <= n for k, n in zip(ks, sizes, strict=True))
    assert apportion(g, sizes) == ks


def _brute_force(cost: np.ndarray) -> int:
    n, k = cost.shape
    q, r = divmod(n, k)
    best = None
    for labels in itertools.product(range(k), repeat=n):
        sizes = sorted(Counter(labels).get(c, 0) for c in range(k))
        if sizes != [q] * (k - r) + [q + 1] * r:
            continue
        total = sum(int(cost[i, c]) for i, c in enumerate(labels))
        best = total if best is None else min(best, total)
    assert best is not None
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.data())
def test_balanced_assign_is_exactly_balanced_and_optimal(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    cost = np.array(data.draw(st.lists(st.lists(st.integers(0, 9), min_size=k, max_size=k),
                                       min_size=n, max_size=n)))
    labels = balanced_assign(cost)
    q, r = divmod(n, k)
    sizes = sorted(Counter(labels.tolist()).get(c, 0) for c in range(k))
    assert sizes == [q] * (k - r) + [q + 1] * r
    assert sum(int(cost[i, c]) for i, c in enumerate(labels)) == _brute_force(cost)


def _recomputed_total(plan: Plan) -> int:
    e = plan.ensemble
    pads = {arch: Padding.of(nets) for arch, nets in arch_classes(e).items()}
    return sum(distance(net_vector(e.net(n), pads[c.arch]), net_vector(c.mother, pads[c.arch]))
               for c in plan.clusters for n in c.members)


def check_plan(plan: Plan) -> None:
    """The invariants every plan keeps."""
    e = plan.ensemble
    classes = arch_classes(e)
    names = [n for c in plan.clusters for n in c.members]
    assert sorted(names) == sorted(n.name for n in e.nets)  # every net exactly once
    assert len(plan.clusters) == plan.g
    assert [c.index for c in plan.clusters] == list(range(plan.g))
    ks = apportion(plan.g, [len(v) for v in classes.values()])
    order = {n.name: i for i, n in enumerate(e.nets)}
    arch_order = list(classes)
    for (arch, nets), k in zip(classes.items(), ks, strict=True):
        mine = [c for c in plan.clusters if c.arch == arch]
        assert len(mine) == k
        sizes = [len(c.members) for c in mine]
        assert max(sizes) - min(sizes) <= 1  # balanced within the class
        assert Counter(sizes)[len(nets) // k + 1] == len(nets) % k or len(nets) % k == 0
        for c in mine:
            assert {e.net(n).family for n in c.members} == {arch[0]}  # never mixes classes
    for c in plan.clusters:
        assert list(c.members) == sorted(c.members, key=order.__getitem__)
    keys = [(arch_order.index(c.arch), order[c.members[0]]) for c in plan.clusters]
    assert keys == sorted(keys)  # class by first appearance, then first member
    mothers = [c.mother.name for c in plan.clusters]
    assert len(set(mothers)) == len(mothers)
    assert not set(mothers) & set(order)
    for c in plan.clusters:
        members = [e.net(n) for n in c.members]
        assert c.mother == build_mothernet(members, c.mother.name)
    assert plan.total_distance == sum(c.distance for c in plan.clusters) == _recomputed_total(plan)


@settings(max_examples=50, deadline=None)
@given(ensembles(min_nets=1, max_nets=8), st.data())
def test_plan_invariants(e: Ensemble, data: st.DataObject) -> None:
    n_classes = len(arch_classes(e))
    g = data.draw(st.integers(n_classes, len(e.nets)))
    seed = data.draw(st.integers(0, 3))
    plan = plan_ensemble(e, g, seed=seed, restarts=3)
    check_plan(plan)
    again = plan_ensemble(e, g, seed=seed, restarts=3)
    assert again == plan  # same seed, same clusters


@settings(max_examples=30, deadline=None)
@given(ensembles(min_nets=1, max_nets=6))
def test_extreme_g(e: Ensemble) -> None:
    m, n_classes = len(e.nets), len(arch_classes(e))
    alone = plan_ensemble(e, m)
    check_plan(alone)
    assert all(len(c.members) == 1 for c in alone.clusters) and alone.total_distance == 0
    for c in alone.clusters:
        assert c.mother == e.net(c.members[0]).model_copy(update={"name": c.mother.name})
    fewest = plan_ensemble(e)
    check_plan(fewest)
    assert fewest.g == n_classes
    for bad in (n_classes - 1, m + 1):
        with pytest.raises(MNError):
            plan_ensemble(e, bad)


def test_sweep_matches_single_plans_and_is_cached() -> None:
    e = load("examples/v25.mnet")
    planner = Planner(e, seed=3, restarts=2)
    sweep = list(planner.sweep())
    assert [p.g for p in sweep] == list(range(1, 26))
    for p in (sweep[0], sweep[6], sweep[-1]):
        assert p == plan_ensemble(e, p.g, seed=3, restarts=2)
    assert sweep[-1].total_distance == 0
    for p in sweep:
        check_plan(p)


def test_kmeans_finds_obvious_groups() -> None:
    # two families of mlps, far apart: the best 2-clustering keeps each family together
    text = "ensemble e { input 16 classes 2\n"
    for i in range(4):
        text += f"net w{i} mlp {{ dense {64 + i} 64 64 }}\n"
        text += f"net n{i} mlp {{ dense {8 + i} }}\n"
    e = loads(text + "}")
    for seed in range(3):
        plan = plan_ensemble(e, 2, seed=seed)
        assert sorted(c.members for c in plan.clusters) == [
            ("n0", "n1", "n2", "n3"), ("w0", "w1", "w2", "w3")]
        assert plan.total_distance == 6
        check_plan(plan)


def test_classes_get_proportional_clusters() -> None:
    e = loads("""ensemble e { input 3x8x8 classes 2
      net p1 plain { block { 3:4 } } net p2 plain { block { 3:8 } }
      net r1 residual { stem 3:4 block { 3:4 } } net p3 plain { block { 5:4 } }
      net m1 mlp { dense 4 } net p4 plain { block { 3:4 3:4 } } }""")
    plan = plan_ensemble(e, 4)
    check_plan(plan)
    assert [c.arch for c in plan.clusters] == [("plain", 2)] * 2 + [("residual", 2), ("mlp", 2)]
    with pytest.raises(MNError, match="3 architecture classes"):
        plan_ensemble(e, 2)


def test_mothernet_names_avoid_member_names() -> None:
    e = loads("""ensemble e { input 8 classes 2
      net mothernet1 mlp { dense 4 } net mothernet2_ mlp { dense 6 } net mothernet2 mlp { dense 8 } }""")
    plan = plan_ensemble(e, 3)
    assert [c.mother.name for c in plan.clusters] == ["mothernet1_", "mothernet2__", "mothernet3"]
    check_plan(plan)


def test_bad_arguments() -> None:
    e = load("examples/v5.mnet")
    for bad in (0, 6, True, 2.5, "2"):
        with pytest.raises(MNError):
            plan_ensemble(e, bad)  # type: ignore[arg-type]
    with pytest.raises(MNError):
        plan_ensemble(e, 2, seed=-1)
    with pytest.raises(MNError):
        plan_ensemble(e, 2, restarts=0)
