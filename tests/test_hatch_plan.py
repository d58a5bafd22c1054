"""Unit tests of the hatching planner (tables) and of the runtime that applies them, on
state_dicts; the numerical function-preservation checks live in test_hatch_props.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.api import loads
from mncompile.diagnostics import MNError
from mncompile.emit import load_models, models_source
from mncompile.ir import Block, Ensemble, Layer, Linear, Net
from mncompile.passes.cluster import plan_ensemble
from mncompile.passes.hatch_plan import (
    HatchTable,
    WidenMap,
    plan_hatching,
    table_dumps,
    table_from_json,
    table_to_json,
)
from mncompile.runtime.hatching import hatch, verify_hatch
from mncompile.shapes import infer_net
from mncompile.zoo import vgg16_variants
from tests.test_hatch_props import pairs


def plain(*blocks: list[tuple[int, int]], dense: tuple[int, ...] = (), name: str = "n") -> Net:
    return Net(name=name, family="plain", dense=tuple(Linear(width=w) for w in dense),
               blocks=tuple(Block(layers=tuple(Layer(kernel=k, filters=f) for k, f in b)) for b in blocks))


def staged(family: str, stem: tuple[int, int], *blocks: list[tuple[int, int]], name: str = "n") -> Net:
    return Net(name=name, family=family, stem=Layer(kernel=stem[0], filters=stem[1]),  # type: ignore[arg-type]
               blocks=tuple(Block(layers=tuple(Layer(kernel=k, filters=f) for k, f in b)) for b in blocks))


def mlp(*widths: int, name: str = "n") -> Net:
    return Net(name=name, family="mlp", dense=tuple(Linear(width=w) for w in widths))


def state_of(net: Net, shape: tuple[int, ...], classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state_dict with the keys and shapes of `net`'s generated module."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for t in infer_net(net, shape, classes).tensors:
        if t.name.endswith("num_batches_tracked"):
            out[t.name] = torch.tensor(5)
        elif t.name.endswith("running_var"):
            out[t.name] = torch.rand(t.shape, generator=gen) + 0.5
        else:
            out[t.name] = torch.randn(t.shape, generator=gen)
    return out


SHAPE = (2, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ tables


def test_widen_map_index_and_counts() -> None:
    g = WidenMap(old=4, new=7, extra=(1, 3, 1))
    assert g.index() == [0, 1, 2, 3, 1, 3, 1]
    assert g.counts() == [1, 3, 1, 2]
    narrow = WidenMap(old=4, new=2)
    assert narrow.index() == [0, 1] and narrow.counts() == [1, 1, 0, 0]


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_tables_cover_the_member_and_are_deterministic(data: st.DataObject) -> None:
    family, rank = data.draw(st.sampled_from([("mlp", 0), ("plain", 2), ("residual", 1), ("dense", 2)]))
    shape, mother, member = data.draw(pairs(family, rank))
    table = plan_hatching(mother, member, shape, 3, seed=5)
    specs = infer_net(member, shape, 3).tensors
    assert [e.key for e in table.entries] == sorted(t.name for t in specs)
    assert {e.key: (e.shape, e.kind) for e in table.entries} == {t.name: (t.shape, t.kind) for t in specs}
    assert table.mother_tensors == {t.name: t.shape for t in infer_net(mother, shape, 3).tensors}
    for e in table.entries:
        assert e.source is None or e.source in table.mother_tensors
        assert (e.source is None) != (e.init is None) or e.init == "identity"
    for g in table.maps.values():
        assert len(g.extra) == max(0, g.new - g.old) and all(0 <= i < g.old for i in g.extra)
    assert table_dumps(table) == table_dumps(plan_hatching(mother, member, shape, 3, seed=5))
    assert table_from_json(json.loads(table_dumps(table))) == table
    if any(g.new > g.old > 1 for g in table.maps.values()):
        others = [plan_hatching(mother, member, shape, 3, seed=s).maps for s in range(6, 12)]
        assert any(o != table.maps for o in others)


def test_plain_widening_gathers_bn_and_divides_the_consumer() -> None:
    t = plan_hatching(plain([(3, 4)], [(3, 6)], name="m"), plain([(3, 7)], [(5, 6)]), SHAPE, 3)
    assert t.exact and t.exact_train
    g = t.maps["block1.layer1"]
    assert (g.old, g.new) == (4, 7)
    w1 = t.entry("block1.layer1.conv.weight")
    assert w1.source == "block1.layer1.conv.weight" and w1.rows and w1.rows[0].map == "block1.layer1"
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        e = t.entry(f"block1.layer1.bn.{suffix}")
        assert e.rows == w1.rows, suffix
    w2 = t.entry("block2.layer1.conv.weight")
    assert w2.cols == w1.rows and w2.kernel == (3, 5)
    assert t.entry("head.out.weight").cols == w2.rows


def test_extra_plain_layers_are_identities_in_eval_mode() -> None:
    t = plan_hatching(plain([(3, 4)], name="m"), plain([(3, 4), (5, 6), (1, 4)]), SHAPE, 3)
    assert t.exact and not t.exact_train
    e = t.entry("block1.layer2.conv.weight")
    assert e.init == "identity" and e.src_shape == (4, 4, 5, 5)
    assert t.entry("block1.layer2.bn.running_var").init == "bn_var"
    assert t.entry("block1.layer3.conv.weight").cols == e.rows


def test_identity_layer_is_placed_where_exactness_holds() -> None:
    # first-aligned, the MotherNet's 8-filter layer would land on a 4-filter one
    t = plan_hatching(plain([(3, 4), (3, 8)], name="m"), plain([(3, 4), (3, 4), (3, 8)]), SHAPE, 3)
    assert t.exact, t.reasons
    assert t.entry("block1.layer2.conv.weight").init == "identity"
    assert t.entry("block1.layer3.conv.weight").source == "block1.layer2.conv.weight"


@pytest.mark.parametrize(
    ("mother", "member", "words"),
    [
        (plain([(3, 4), (3, 8)], name="m"), plain([(3, 4), (3, 8), (3, 4)]), "cannot carry"),
        (plain([(5, 4)], name="m"), plain([(3, 4)]), "cropped"),
        (plain([(3, 4)], name="m"), plain([(3, 4)], [(3, 4)]), "max-pool"),
        (mlp(name="m"), mlp(8), "raw inputs"),
        (staged("residual", (3, 4), [(3, 4)], name="m"), staged("residual", (3, 4), [(3, 4)], [(3, 4)]),
         "stride 2"),
        (staged("residual", (3, 2), [(3, 4)], name="m"), staged("residual", (3, 4), [(3, 4)]),
         "replaces the MotherNet's projection"),
        (staged("dense", (3, 4), [(3, 2)], name="m"), staged("dense", (3, 4), [(3, 2)], [(3, 2)]),
         "transition"),
    ],
)
def test_inexact_tables_say_why(mother: Net, member: Net, words: str) -> None:
    t = plan_hatching(mother, member, (2, 8, 8) if mother.family != "mlp" else (5,), 3)
    assert not t.exact and not t.exact_train
    assert any(words in r for r in t.reasons), t.reasons
    flagged = [e for e in t.entries if not e.exact]
    assert flagged and all(e.reason for e in flagged)
    assert {r for e in flagged for r in (e.reason or "").split(" | ")} == set(t.reasons)
    hatch(state_of(mother, t.input), t)  # still produces a member


@pytest.mark.parametrize(
    ("mother", "member", "words"),
    [
        (plain([(3, 8)], name="m"), plain([(3, 4)]), "narrower"),
        (plain([(3, 4), (3, 4)], name="m"), plain([(3, 4)]), "cannot lose layers"),
        (plain([(3, 4)], [(3, 4)], name="m"), plain([(3, 4)]), "cannot lose blocks"),
        (mlp(4, name="m"), plain([(3, 4)]), "mlp"),
        (staged("residual", (3, 4), [(3, 8)], name="m"), staged("residual", (3, 4), [(3, 6)]), "narrower"),
        (staged("dense", (3, 4), [(3, 3)], name="m"), staged("dense", (3, 4), [(3, 2)]), "narrower"),
        (staged("dense", (3, 8), [(3, 3)], name="m"), staged("dense", (3, 4), [(3, 3)]), "stem"),
    ],
)
def test_members_that_cannot_be_hatched_raise(mother: Net, member: Net, words: str) -> None:
    with pytest.raises(MNError, match=words) as err:
        plan_hatching(mother, member, SHAPE, 3)
    assert err.value.hint


def test_residual_stream_has_one_map_per_stage() -> None:
    m = staged("residual", (3, 4), [(3, 4), (3, 4)], [(3, 6), (3, 6)], name="m")
    n = staged("residual", (3, 4), [(3, 5), (3, 5), (3, 5)], [(3, 6), (3, 6), (5, 6)])
    t = plan_hatching(m, n, SHAPE, 3, seed=3)
    assert t.exact and not t.exact_train, t.reasons
    stream1 = t.entry("block1.unit1.conv2.weight").rows
    for key in ("block1.unit1.shortcut.conv.weight", "block1.unit2.conv2.weight"):
        assert t.entry(key).rows == stream1
    for key in ("block1.unit2.conv1.weight", "block2.unit1.conv1.weight",
                "block2.unit1.shortcut.conv.weight"):
        assert t.entry(key).cols == stream1, key
    # the MotherNet's identity shortcut becomes a projection: exact in eval mode only
    assert t.entry("block1.unit1.shortcut.conv.weight").init == "identity"
    assert t.entry("block1.unit1.conv1.weight").rows != stream1
    # an added unit: its residual branch starts at zero, its shortcut is the identity
    assert t.entry("block1.unit3.bn2.weight").init == "zeros"
    assert t.entry("block1.unit3.bn2.bias").init == "zeros"
    assert "block1.unit3.shortcut.conv.weight" not in t.mother_tensors
    assert t.entry("head.out.weight").cols == t.entry("block2.unit2.conv2.weight").rows
    assert t.entry("block2.unit3.conv1.weight").init == "he_normal"


def test_dense_slices_shift_and_new_slices_get_zero_weights() -> None:
    m = staged("dense", (3, 4), [(3, 2), (3, 2)], [(3, 2)], name="m")
    n = staged("dense", (3, 5), [(3, 3), (3, 2), (3, 4)], [(3, 2)])
    t = plan_hatching(m, n, SHAPE, 3)
    assert t.exact and t.exact_train
    cols = t.entry("transition1.conv.weight").cols
    assert cols is not None
    assert [(s.map, s.at, s.size) for s in cols] == [
        ("stem", 0, 5), ("block1.layer1", 4, 3), ("block1.layer2", 6, 2), (None, 0, 4)]
    assert t.entry("transition1.conv.weight").rows == cols
    assert t.entry("transition1.bn.running_var").rows == cols
    assert t.entry("block2.layer1.conv.weight").cols == cols
    assert t.entry("block1.layer3.conv.weight").init == "he_normal"


def test_json_is_compact_and_versioned(tmp_path: Path) -> None:
    t = plan_hatching(plain([(3, 4)], name="m"), plain([(3, 9)]), SHAPE, 3)
    d = table_to_json(t)
    assert d["schema_version"] == 1 and d["exact"] is True and d["member"] == "n"
    assert d["maps"]["block1.layer1"] == {"old": 4, "extra": list(t.maps["block1.layer1"].extra)}
    assert [e["key"] for e in d["entries"]] == sorted(e["key"] for e in d["entries"])
    with pytest.raises(MNError, match="schema_version"):
        table_from_json({**d, "schema_version": 99})
    with pytest.raises(MNError, match="malformed"):
        table_from_json({k: v for k, v in d.items() if k != "maps"})
    path = tmp_path / "n.json"
    path.write_text(table_dumps(t))
    mother = state_of(plain([(3, 4)], name="m"), SHAPE)
    a, b = hatch(mother, path), hatch(mother, d)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_v100_tables_fit_in_20_mb() -> None:
    e = loads(vgg16_variants(100))
    plan = plan_ensemble(e, clusters=8)
    size, exact = 0, 0
    for c in plan.clusters:
        for name in c.members:
            t = plan_hatching(c.mother, e.net(name), e.input, e.classes, seed=0)
            size += len(table_dumps(t).encode())
            exact += t.exact
    print(f"V100, g=8: 100 tables, {size / 1e6:.2f} MB, {exact} exact")
    assert exact == 100
    assert size <= 20e6


# ----------------------------------------------------------------------------------- runtime


def test_runtime_applies_the_rules() -> None:
    m, n = plain([(3, 4)], [(3, 6)], name="m"), plain([(3, 7)], [(5, 6), (3, 8)])
    t = plan_hatching(m, n, SHAPE, 3, seed=1)
    sd = state_of(m, SHAPE)
    out = hatch(sd, t)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        x.name: x.shape for x in infer_net(n, SHAPE, 3).tensors}
    g = torch.tensor(t.maps["block1.layer1"].index())
    assert torch.equal(out["block1.layer1.conv.weight"], sd["block1.layer1.conv.weight"][g])
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(out[f"block1.layer1.bn.{suffix}"], sd[f"block1.layer1.bn.{suffix}"][g])
    # the consumer's columns over the replicas of an old unit add up to its old column
    w = out["block2.layer1.conv.weight"]
    summed = torch.zeros(6, 4, 5, 5).index_add_(1, g, w)
    assert torch.allclose(summed[:, :, 1:4, 1:4], sd["block2.layer1.conv.weight"], atol=1e-6)
    assert summed[:, :, 0].abs().max() == 0 and summed[:, :, :, 4].abs().max() == 0
    # the added layer: a delta at the centre tap (index k // 2), identity BN in eval mode
    ident = out["block2.layer2.conv.weight"]
    assert torch.equal(ident[:6, :, 1, 1], torch.eye(6)) and ident[:, :, 0].abs().sum() == 0
    assert torch.allclose(out["block2.layer2.bn.running_var"], torch.full((8,), 1 - 1e-5))
    assert out["block1.layer1.bn.num_batches_tracked"].item() == 5


def test_outputs_are_fresh_tensors() -> None:
    m, n = plain([(3, 4)], dense=(3,), name="m"), plain([(3, 6)], dense=(5,))
    sd = state_of(m, SHAPE)
    before = {k: v.clone() for k, v in sd.items()}
    out = hatch(sd, plan_hatching(m, n, SHAPE, 3), noise=0.1)
    ptrs = [v.untyped_storage().data_ptr() for v in out.values()]
    assert len(set(ptrs)) == len(ptrs)
    assert not set(ptrs) & {v.untyped_storage().data_ptr() for v in sd.values()}
    assert all(torch.equal(sd[k], before[k]) for k in sd)


def test_wrong_mother_is_named() -> None:
    m, n = plain([(3, 4)], name="m"), plain([(3, 6)])
    t = plan_hatching(m, n, SHAPE, 3)
    sd = state_of(m, SHAPE)
    with pytest.raises(MNError, match=r"'block1\.layer1\.conv\.weight' has shape \(5, 2, 3, 3\)"):
        hatch({**sd, "block1.layer1.conv.weight": torch.zeros(5, 2, 3, 3)}, t)
    with pytest.raises(MNError, match=r"no tensor 'head\.out\.bias'"):
        hatch({k: v for k, v in sd.items() if k != "head.out.bias"}, t)
    with pytest.raises(MNError, match="'extra.weight'"):
        hatch({**sd, "extra.weight": torch.zeros(1)}, t)
    with pytest.raises(MNError, match="noise_mode"):
        hatch(sd, t, noise=0.1, noise_mode="uniform")
    with pytest.raises(MNError, match="does not exist"):
        hatch(sd, "/nonexistent/table.json")


def test_gaussian_noise_is_relative_seeded_and_spares_buffers() -> None:
    m, n = plain([(3, 16)], dense=(32,), name="m"), plain([(3, 24)], dense=(48,))
    t = plan_hatching(m, n, SHAPE, 3)
    sd = state_of(m, SHAPE)
    clean = hatch(sd, t)
    a, b, c = (hatch(sd, t, noise=0.1, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.fc1.weight"], c["head.fc1.weight"])
    for e in t.entries:
        if e.kind == "buffer":
            assert torch.equal(a[e.key], clean[e.key])
    w = clean["head.fc1.weight"]
    ratio = float((a["head.fc1.weight"] - w).std() / w.std())
    assert 0.08 < ratio < 0.12
    # replicas get independent noise, not one shared perturbation
    g = t.maps["head.fc1"]
    j = g.old
    assert not torch.equal(a["head.fc1.weight"][j], a["head.fc1.weight"][g.extra[0]])


def test_symmetric_noise_keeps_column_sums() -> None:
    m, n = mlp(4, name="m"), mlp(12)
    t = plan_hatching(m, n, (5,), 3, seed=2)
    sd = state_of(m, (5,))
    clean, sym = hatch(sd, t), hatch(sd, t, noise=0.2, noise_mode="symmetric", seed=0)
    g = torch.tensor(t.maps["head.fc1"].index())
    def sums(w: torch.Tensor) -> torch.Tensor:
        return torch.zeros(3, 4).index_add_(1, g, w)

    assert torch.allclose(sums(sym["head.out.weight"]), sums(clean["head.out.weight"]), atol=1e-6)
    assert not torch.equal(sym["head.out.weight"], clean["head.out.weight"])
    assert torch.equal(sym["head.fc1.weight"], clean["head.fc1.weight"])


def test_verify_hatch_restores_modes() -> None:
    e = Ensemble(name="e", input=SHAPE, classes=3,
                 nets=(plain([(3, 4)], name="m"), plain([(3, 6), (3, 6)])))
    models = load_models(models_source(e, list(e.nets))).MODELS
    mother, member = models["m"](), models["n"]()
    member.load_state_dict(hatch(mother, plan_hatching(e.nets[0], e.nets[1], SHAPE, 3)))
    mother.train()
    member.train()
    member.block1.eval() if hasattr(member, "block1") else None
    modes = [x.training for x in member.modules()]
    assert verify_hatch(mother, member, torch.randn(2, *SHAPE)) < 1e-5
    assert mother.training and [x.training for x in member.modules()] == modes


def test_a_table_of_the_identity_copies_the_mother() -> None:
    net = staged("residual", (3, 4), [(3, 4)], [(3, 8)], name="m")
    t = plan_hatching(net, net.model_copy(update={"name": "n"}), SHAPE, 3)
    assert t.exact and t.exact_train and all(g.new == g.old for g in t.maps.values())
    sd = state_of(net, SHAPE)
    out = hatch(sd, t)
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    assert isinstance(t, HatchTable) and math.isclose(t.bn_eps, 1e-5)


def test_runtime_package_exports_the_hatch_function() -> None:
    import mncompile.runtime as rt
    from mncompile.runtime import hatching

    assert rt.hatch is hatching.hatch and callable(rt.hatch)
    assert rt.verify_hatch is hatching.verify_hatch
