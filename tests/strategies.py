"""Hypothesis strategies for random, valid ensembles of every family and input rank.

Shared by the property tests of every pass. Sizes are kept small so that generated modules
build and run in milliseconds.
"""

from __future__ import annotations

from hypothesis import strategies as st

from mncompile.ir import Block, Ensemble, Layer, Linear, Net
from mncompile.shapes import max_pools

KERNELS = st.sampled_from([1, 3, 5])
FILTERS = st.integers(min_value=1, max_value=12)


@st.composite
def input_shapes(draw: st.DrawFn, rank: int | None = None) -> tuple[int, ...]:
    r = draw(st.sampled_from([0, 1, 2])) if rank is None else rank
    if r == 0:
        return (draw(st.integers(2, 24)),)
    c = draw(st.integers(1, 3))
    return (c,) + tuple(draw(st.sampled_from([4, 6, 8, 9])) for _ in range(r))


@st.composite
def nets(
    draw: st.DrawFn,
    family: str,
    input_shape: tuple[int, ...],
    name: str = "n",
    max_blocks: int = 3,
    max_layers: int = 3,
) -> Net:
    """A random valid net of `family` for `input_shape`."""
    dense = tuple(Linear(width=w) for w in draw(st.lists(st.integers(1, 16), max_size=2)))
    if family == "mlp":
        return Net(name=name, family="mlp", dense=dense)
    pools = max_pools(input_shape)
    if family == "plain":
        n_blocks = draw(st.integers(1, max(1, min(max_blocks, pools))))
    elif family == "dense":
        n_blocks = draw(st.integers(1, max(1, min(max_blocks, pools + 1))))
    else:
        n_blocks = draw(st.integers(1, max_blocks))
    blocks = []
    for _ in range(n_blocks):
        n = draw(st.integers(1, max_layers))
        if family == "residual":
            w = draw(FILTERS)
            layers = tuple(Layer(kernel=draw(KERNELS), filters=w) for _ in range(n))
        else:
            layers = tuple(Layer(kernel=draw(KERNELS), filters=draw(FILTERS)) for _ in range(n))
        blocks.append(Block(layers=layers))
    stem = None
    if family in ("residual", "dense"):
        stem = Layer(kernel=draw(KERNELS), filters=draw(FILTERS))
    return Net(name=name, family=family, stem=stem, blocks=tuple(blocks), dense=dense)  # type: ignore[arg-type]


@st.composite
def ensembles(
    draw: st.DrawFn,
    families: tuple[str, ...] | None = None,
    rank: int | None = None,
    min_nets: int = 1,
    max_nets: int = 6,
) -> Ensemble:
    """A random valid ensemble; conv families only where the input has a spatial rank."""
    shape = draw(input_shapes(rank))
    allowed = ["mlp"] if len(shape) == 1 else ["plain", "residual", "dense", "mlp"]
    if families is not None:
        allowed = [f for f in allowed if f in families] or ["mlp"]
    count = draw(st.integers(min_nets, max_nets))
    members = tuple(
        draw(nets(draw(st.sampled_from(allowed)), shape, name=f"net{i}")) for i in range(count)
    )
    return Ensemble(name="ens", input=shape, classes=draw(st.integers(2, 5)), nets=members)
