"""MotherNet construction: the largest net every member of a cluster can be grown from.

>>> from mncompile.parse import parse_text
>>> e = parse_text('''ensemble e { input 3x16x16 classes 10
...   net a plain { block { 3:32 5:64 } block { 3:64 } dense 64 }
...   net b plain { block { 5:16 3:64 3:64 } block { 3:128 } dense 32 32 } }''')
>>> m = build_mothernet(e.nets, "mothernet1")
>>> [[(x.kernel, x.filters) for x in b.layers] for b in m.blocks], m.widths
([[(3, 16), (3, 64)], [(3, 64)]], (32,))

The rules are the paper's (Section 2 and Appendix A), per family:

- mlp (Algorithm A): as many hidden layers as the shallowest member; hidden layer i is the
  minimum width at position i.
- plain (Algorithm B): as many blocks as the member with the fewest; block k has as many layers as
  the member with the fewest in block k; layer (k, i) takes the minimum filters and,
  independently, the minimum kernel over the members at (k, i).
- residual: the stem takes the minimum kernel and filters; stage k the fewest units, the minimum
  width and, per unit position, the minimum kernel.
- dense: the stem likewise; dense block k the fewest layers and, per position, the minimum growth
  and kernel.
- The head of every family follows Algorithm A.

Three refinements keep every member reachable from the MotherNet by growth alone (widen, deepen
with identity layers, larger kernels), which is what hatching does. Each only ever lowers a
position-wise minimum, and none changes a MotherNet of ordinary ensembles such as the paper's:

1. Tail rule. A member's layers past the MotherNet's last layer of a segment (a plain block, a
   residual stage, the head) are hatched as identity layers of the width where they attach, then
   widened. So the last layer of each MotherNet segment also takes the minimum over the members'
   remaining layers of that segment; the last block also over the members' extra blocks; and, in
   plain and residual nets whose MotherNet has no hidden head layer, over the members' hidden
   widths. Dense blocks need no tail rule: a new dense layer's growth is independent of its input.
2. Residual shortcut rule. The first unit of the first stage has an identity shortcut when the
   stem's filters equal the stage's width, and a projection otherwise. A projection can be grown
   from an identity but not the reverse, so if any member has the identity there, the MotherNet's
   stem filters and first-stage width are both the smaller of the two minima.
3. Residual stages stay uniform: every unit of a stage takes the stage's (minimum) width.

With these rules the MotherNet has no more parameters and MACs than any member, except in one
case that no construction can avoid: an mlp (or dense) cluster whose shallowest member has no
hidden layer while another member has a hidden layer narrower than the features feeding the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mncompile.ir import Block, Layer, Linear, Net

Pair = tuple[int, int]


@dataclass(frozen=True)
class Skeleton:
    """A net's structure without names or spans: what construction and clustering compare.

    >>> Skeleton.of(Net(name="a", family="mlp", dense=(Linear(width=8),)))
    Skeleton(stem=None, blocks=(), dense=(8,))
    """

    stem: Pair | None
    blocks: tuple[tuple[Pair, ...], ...]
    dense: tuple[int, ...]

    @classmethod
    def of(cls, net: Net) -> Skeleton:
        """The skeleton of a net: (kernel, filters) pairs per block, and the head widths."""
        stem = (net.stem.kernel, net.stem.filters) if net.stem is not None else None
        blocks = tuple(tuple((x.kernel, x.filters) for x in b.layers) for b in net.blocks)
        return cls(stem, blocks, net.widths)

    def to_net(self, name: str, family: str) -> Net:
        """A span-less `Net` with this structure."""
        stem = Layer(kernel=self.stem[0], filters=self.stem[1]) if self.stem is not None else None
        blocks = tuple(Block(layers=tuple(Layer(kernel=k, filters=f) for k, f in b))
                       for b in self.blocks)
        dense = tuple(Linear(width=w) for w in self.dense)
        return Net(name=name, family=family, stem=stem, blocks=blocks, dense=dense)  # type: ignore[arg-type]


def arch_class(net: Net, ensemble_rank: int) -> tuple[str, int]:
    """A net's architecture class: (family, input rank). Only nets of one class share a MotherNet.

    >>> arch_class(Net(name="a", family="mlp"), 2)
    ('mlp', 2)
    """
    return (net.family, ensemble_rank)


def _head(heads: Sequence[tuple[int, ...]]) -> list[int]:
    """Algorithm A with the tail rule on the last hidden layer."""
    depth = min(len(h) for h in heads)
    widths = [min(h[i] for h in heads) for i in range(depth)]
    if depth:
        widths[-1] = min(widths[-1], min(w for h in heads for w in h[depth - 1:]))
    return widths


def _later(sks: Sequence[Skeleton], block: int, start: int) -> int | None:
    """The narrowest filters any member has from layer `start` of `block` on (later blocks too)."""
    rest = [f for s in sks for j, b in enumerate(s.blocks[block:]) for _, f in
            (b[start:] if j == 0 else b)]
    return min(rest) if rest else None


def mother_skeleton(family: str, sks: Sequence[Skeleton]) -> Skeleton:
    """The MotherNet structure of a cluster of one family (see the module notes for the rules).

    >>> a = Skeleton(None, (((3, 32),), ((3, 64), (3, 8))), (16,))
    >>> b = Skeleton(None, (((5, 16), (3, 16)),), ())
    >>> mother_skeleton("plain", [a, b])
    Skeleton(stem=None, blocks=(((3, 8),),), dense=())
    """
    if not sks:
        raise ValueError("a MotherNet needs at least one member")
    if len(sks) == 1:
        return sks[0]
    dense = _head([s.dense for s in sks])
    if family == "mlp":
        return Skeleton(None, (), tuple(dense))
    n_blocks = min(len(s.blocks) for s in sks)
    last = n_blocks - 1
    blocks: list[list[Pair]] = []
    for b in range(n_blocks):
        n_layers = min(len(s.blocks[b]) for s in sks)
        layers = [(min(s.blocks[b][i][0] for s in sks), min(s.blocks[b][i][1] for s in sks))
                  for i in range(n_layers)]
        blocks.append(layers)
    if family == "residual":
        for b, layers in enumerate(blocks):
            width = min(s.blocks[b][0][1] for s in sks)
            if b == last:
                width = min(width, min(f for s in sks for blk in s.blocks[b:] for _, f in blk))
            blocks[b] = [(k, width) for k, _ in layers]
    elif family == "plain":
        for b, layers in enumerate(blocks):
            i = len(layers) - 1
            if b == last:
                tail = _later(sks, b, i)
            else:
                tail = min(f for s in sks for _, f in s.blocks[b][i:])
            if tail is not None:
                layers[i] = (layers[i][0], min(layers[i][1], tail))
    if family in ("plain", "residual") and not dense:
        hidden = [w for s in sks for w in s.dense]
        if hidden:
            k, f = blocks[last][-1]
            if family == "residual":
                blocks[last] = [(k2, min(f, min(hidden))) for k2, _ in blocks[last]]
            else:
                blocks[last][-1] = (k, min(f, min(hidden)))
    stem: Pair | None = None
    if family in ("residual", "dense"):
        stems = [s.stem for s in sks if s.stem is not None]
        stem = (min(k for k, _ in stems), min(f for _, f in stems))
        if family == "residual" and any(s.stem is not None and s.stem[1] == s.blocks[0][0][1]
                                        for s in sks):
            shared = min(stem[1], blocks[0][0][1])
            stem = (stem[0], shared)
            blocks[0] = [(k, shared) for k, _ in blocks[0]]
    return Skeleton(stem, tuple(tuple(b) for b in blocks), tuple(dense))


def build_mothernet(cluster: Sequence[Net], name: str) -> Net:
    """The MotherNet of a cluster of nets of one family, named `name`. Pure.

    A cluster of one gives that net back, renamed (same layers, same spans).

    >>> a = Net(name="a", family="mlp", dense=(Linear(width=64), Linear(width=32)))
    >>> b = Net(name="b", family="mlp", dense=(Linear(width=48),))
    >>> build_mothernet([a, b], "m").widths
    (32,)
    >>> build_mothernet([a], "m") == a.model_copy(update={"name": "m"})
    True
    """
    if not cluster:
        raise ValueError("a MotherNet needs at least one member")
    families = {n.family for n in cluster}
    if len(families) != 1:
        raise ValueError(f"a cluster mixes families {sorted(families)}: each needs its own MotherNet")
    if len(cluster) == 1:
        return cluster[0].model_copy(update={"name": name})
    family = cluster[0].family
    return mother_skeleton(family, [Skeleton.of(n) for n in cluster]).to_net(name, family)
