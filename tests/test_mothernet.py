"""MotherNet construction: the paper's rules per family, dominance, and the growth refinements."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.api import load, loads
from mncompile.ir import Ensemble, Net
from mncompile.passes.check import check_net
from mncompile.passes.mothernet import Skeleton, arch_class, build_mothernet, mother_skeleton
from mncompile.shapes import infer_net
from tests.strategies import ensembles


def _blocks(net: Net) -> list[list[tuple[int, int]]]:
    return [[(x.kernel, x.filters) for x in b.layers] for b in net.blocks]


def _features(mother: Net, e: Ensemble) -> int:
    """What the head's first linear layer sees."""
    if mother.family == "mlp":
        return math.prod(e.input)
    if mother.family == "dense":
        assert mother.stem is not None
        return mother.stem.filters + sum(x.filters for b in mother.blocks for x in b.layers)
    return mother.blocks[-1].layers[-1].filters


def assert_dominated(mother: Net, member: Net) -> None:
    """Every aligned position of the MotherNet is no larger than the member's."""
    assert mother.family == member.family
    assert len(mother.blocks) <= len(member.blocks)
    for mb, nb in zip(mother.blocks, member.blocks, strict=False):
        assert len(mb.layers) <= len(nb.layers)
        for ml, nl in zip(mb.layers, nb.layers, strict=False):
            assert ml.kernel <= nl.kernel and ml.filters <= nl.filters
    assert len(mother.dense) <= len(member.dense)
    assert all(a <= b for a, b in zip(mother.widths, member.widths, strict=False))
    assert (mother.stem is None) == (member.stem is None)
    if mother.stem is not None and member.stem is not None:
        assert mother.stem.kernel <= member.stem.kernel
        assert mother.stem.filters <= member.stem.filters


def assert_growable(mother: Net, member: Net) -> None:
    """The member's extra layers attach where the MotherNet is no wider than they are.

    Extra layers are hatched as identity layers of the width where they attach, then widened;
    widening can only grow, so each extra layer must be at least that wide.
    """
    fam = mother.family
    if fam in ("plain", "residual"):
        for b, mb in enumerate(mother.blocks):
            attach = mb.layers[-1].filters
            extra = [x.filters for x in member.blocks[b].layers[len(mb.layers):]]
            if b == len(mother.blocks) - 1:
                extra += [x.filters for nb in member.blocks[b + 1:] for x in nb.layers]
                if not mother.dense:
                    extra += list(member.widths)
            assert all(f >= attach for f in extra), (b, attach, extra)
    if mother.dense:
        assert all(w >= mother.widths[-1] for w in member.widths[len(mother.dense):])
    if fam == "residual":
        assert mother.stem is not None and member.stem is not None
        identity = member.stem.filters == member.blocks[0].layers[0].filters
        if identity:  # a projection cannot be shrunk back to an identity shortcut
            assert mother.stem.filters == mother.blocks[0].layers[0].filters


def _exempt(mother: Net, members: list[Net], e: Ensemble) -> bool:
    """The one case no MotherNet can avoid: an empty head fed into a narrower hidden layer."""
    if mother.family not in ("mlp", "dense") or mother.dense:
        return False
    return any(w < _features(mother, e) for n in members for w in n.widths)


def _clusters(e: Ensemble, draw_random: random.Random) -> list[list[Net]]:
    by: dict[tuple[str, int], list[Net]] = {}
    for n in e.nets:
        by.setdefault(arch_class(n, e.rank), []).append(n)
    out = []
    for nets in by.values():
        nets = list(nets)
        draw_random.shuffle(nets)
        out.append(nets)
    return out


@settings(max_examples=120, deadline=None)
@given(ensembles(max_nets=5), st.randoms(use_true_random=False))
def test_mothernet_is_dominated_valid_and_smallest(e: Ensemble, rnd: random.Random) -> None:
    for cluster in _clusters(e, rnd):
        m = build_mothernet(cluster, "mothernet1")
        assert m.name == "mothernet1" and m.family == cluster[0].family
        check_net(m, e)
        ms = infer_net(m, e.input, e.classes)
        exempt = _exempt(m, cluster, e)
        for member in cluster:
            assert_dominated(m, member)
            assert_growable(m, member)
            if not exempt:
                s = infer_net(member, e.input, e.classes)
                assert ms.params <= s.params, (m, member)
                assert ms.macs <= s.macs, (m, member)


@settings(max_examples=80, deadline=None)
@given(ensembles(max_nets=5), st.randoms(use_true_random=False))
def test_mothernet_ignores_order_and_absorbs_itself(e: Ensemble, rnd: random.Random) -> None:
    for cluster in _clusters(e, rnd):
        m = build_mothernet(cluster, "m")
        assert build_mothernet(list(reversed(cluster)), "m") == m or len(cluster) == 1
        sks = [Skeleton.of(n) for n in cluster]
        # the MotherNet of the cluster plus its MotherNet is the same MotherNet
        assert mother_skeleton(m.family, sks + [Skeleton.of(m)]) == Skeleton.of(m)


@settings(max_examples=40, deadline=None)
@given(ensembles(max_nets=3))
def test_cluster_of_one_is_the_net_renamed(e: Ensemble) -> None:
    for n in e.nets:
        m = build_mothernet([n], "mothernet7")
        assert m == n.model_copy(update={"name": "mothernet7"})
        assert m.blocks == n.blocks and m.stem == n.stem and m.dense == n.dense


def test_v5_mothernet_is_the_positionwise_minimum() -> None:
    e = load("examples/v5.mnet")
    m = build_mothernet(e.nets, "mothernet1")
    assert _blocks(m) == [[(3, 64)] * 2, [(3, 128)] * 2, [(3, 256)] * 2, [(3, 512)] * 2,
                          [(3, 512)] * 2]
    assert m.widths == (512,)


def test_plain_kernels_and_filters_are_independent_minima() -> None:
    # the paper's Figure 3 style: kernel from one member, filters from another
    e = loads("""ensemble e { input 3x16x16 classes 10
      net a plain { block { 5:32 3:64 } block { 3:64 } dense 64 }
      net b plain { block { 3:48 5:32 3:128 } block { 3:96 3:96 } dense 128 16 } }""")
    m = build_mothernet(e.nets, "m")
    assert _blocks(m) == [[(3, 32), (3, 32)], [(3, 64)]]
    assert m.widths == (16,)  # tail rule: b's second hidden layer attaches after the first


def test_residual_stages_take_fewest_units_min_width_min_kernel() -> None:
    e = load("examples/r10.mnet")
    m = build_mothernet(e.nets, "m")
    assert m.stem is not None and (m.stem.kernel, m.stem.filters) == (3, 16)
    assert _blocks(m) == [[(3, 16)] * 3, [(3, 32)] * 3, [(3, 64)] * 3]
    e2 = loads("""ensemble e { input 3x16x16 classes 10
      net a residual { stem 5:16 block { 5:16 3:16 3:16 } block { 3:40 3:40 } }
      net b residual { stem 3:24 block { 3:24 5:24 } block { 5:32 } block { 3:64 } } }""")
    m2 = build_mothernet(e2.nets, "m")
    assert m2.stem is not None and (m2.stem.kernel, m2.stem.filters) == (3, 16)
    assert _blocks(m2) == [[(3, 16), (3, 16)], [(3, 32)]]


def test_residual_identity_shortcut_is_kept() -> None:
    # a: stem 4 = stage width 4 (identity shortcut); b: stem 2, stage 8 (projection).
    # Position-wise minima would give stem 2, stage 4: a projection that a cannot be grown from.
    e = loads("""ensemble e { input 1x8x8 classes 2
      net a residual { stem 1:4 block { 1:4 } }
      net b residual { stem 1:2 block { 1:8 } } }""")
    m = build_mothernet(e.nets, "m")
    assert m.stem is not None and m.stem.filters == 2 and _blocks(m) == [[(1, 2)]]
    names = [t.name for t in infer_net(m, e.input, e.classes).tensors]
    assert not any("shortcut" in n for n in names)
    for n in e.nets:
        assert infer_net(m, e.input, e.classes).params <= infer_net(n, e.input, e.classes).params


def test_dense_blocks_take_fewest_layers_min_growth_min_kernel() -> None:
    e = load("examples/d5.mnet")
    m = build_mothernet(e.nets, "m")
    assert m.stem is not None and (m.stem.kernel, m.stem.filters) == (3, 16)
    assert _blocks(m) == [[(3, 12)] * 12] * 3
    e2 = loads("""ensemble e { input 3x8x8 classes 10
      net a dense { stem 3:16 block { 5:12 3:24 } block { 3:12 } dense 32 }
      net b dense { stem 1:24 block { 3:16 1:8 3:4 } dense 48 16 } }""")
    m2 = build_mothernet(e2.nets, "m")
    assert m2.stem is not None and (m2.stem.kernel, m2.stem.filters) == (1, 16)
    # no tail rule inside dense blocks: a new dense layer's growth does not depend on its input
    assert _blocks(m2) == [[(3, 12), (1, 8)]]
    assert m2.widths == (16,)


def test_mlp_algorithm_a_with_tail_rule() -> None:
    e = load("examples/mlp.mnet")
    m = build_mothernet(e.nets, "m")
    # depth 2 (the shallowest); position-wise minima 192, 128; m192d3's third layer (64) is
    # hatched as an identity layer after the second, so the second may be at most 64 wide
    assert m.widths == (192, 64)
    pos = build_mothernet([n for n in e.nets if n.name != "m192d3"], "m")
    assert pos.widths == (256, 128)


def test_mlp_empty_head_can_outweigh_a_narrow_member() -> None:
    # Documented limit: the MotherNet must be as shallow as 'a' (no hidden layer), and no
    # growth turns 8 input features into a 1-wide hidden layer, so it outweighs 'b'.
    e = loads("ensemble e { input 8 classes 2 net a mlp { } net b mlp { dense 1 } }")
    m = build_mothernet(e.nets, "m")
    assert m.widths == ()
    mp = infer_net(m, e.input, e.classes).params
    assert (mp, infer_net(e.nets[1], e.input, e.classes).params) == (18, 13)
    assert _exempt(m, list(e.nets), e)


def test_mixed_families_are_refused() -> None:
    e = loads("""ensemble e { input 3x8x8 classes 2
      net a plain { block { 3:4 } }  net b mlp { dense 4 } }""")
    assert arch_class(e.nets[0], e.rank) == ("plain", 2)
    assert arch_class(e.nets[1], e.rank) == ("mlp", 2)
    with pytest.raises(ValueError, match="mixes families"):
        build_mothernet(e.nets, "m")
    with pytest.raises(ValueError):
        build_mothernet([], "m")
