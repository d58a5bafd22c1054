"""Plan a Shared-MotherNet (Appendix C of the paper): one model holding a cluster's MotherNet once.

After hatching, every member's first units at each MotherNet-aligned layer are copies of the
MotherNet's units (a widening map is the identity on its first `old` units). The shared model
keeps those units once, as *shared groups*, and each member's other units (replicas made by
widening, and whole layers the MotherNet lacks) as that member's *own groups*:

- a shared unit reads every member's input to that layer (the shared units of the previous
  layer and every member's own units there) and sums them, each member's contribution weighted
  1/K, so with K identical hatched copies it computes exactly what each member computes;
- a member's own unit reads what that member's unit read: the shared units and that member's
  own units of the previous layer;
- the output layer has K heads, one per member.

The model is a sequence of *steps*. A layer step reads some live channel groups (gathered in
live order), applies one convolution or linear map whose weight is masked to the structure
above (a member's own rows only see its own columns, with its own kernel centred in the
step's largest kernel), then BatchNorm and ReLU where the members have them, and appends the
groups that members not taking part in this step still need (`carry`). Pool, global-average
and flatten steps act on every live channel.

`plan_sharing(mother, members, tables, input_shape, classes)` is pure (no torch) and returns a
`SharePlan`, or a `Refusal` saying why a cluster cannot be shared exactly and keeps separate
members. Plain (1-D and 2-D convolutions) and mlp clusters are shared; residual and dense
clusters are refused: their shortcuts and concatenations add member-specific terms to shared
channels, which this step structure does not express.

>>> from mncompile.api import loads
>>> from mncompile.passes.hatch_plan import plan_hatching
>>> e = loads("ensemble e { input 8 classes 3 net m mlp { dense 4 } net a mlp { dense 4 }"
...           " net b mlp { dense 6 5 } }")
>>> m, a, b = e.nets
>>> tables = {n.name: plan_hatching(m, n, e.input, e.classes, seed=0) for n in (a, b)}
>>> sp = plan_sharing(m, [a, b], tables, e.input, e.classes)
>>> [(s.op, s.name) for s in sp.steps]
[('flatten', ''), ('linear', 'head.fc1'), ('linear', 'head.fc2'), ('linear', 'head.out')]
>>> [(sp.group(g).owner, sp.group(g).size) for g in sp.steps[1].makes]
[(None, 4), ('b', 2)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from mncompile.ir import Net
from mncompile.passes.hatch_plan import HatchTable

Op = Literal["conv", "linear", "pool", "gap", "flatten"]


@dataclass(frozen=True)
class Group:
    """A run of channels of the shared model: the MotherNet's (owner None) or one member's."""

    id: int
    owner: str | None
    size: int


@dataclass(frozen=True)
class Part:
    """What one member's layer `key` becomes in a step.

    The member's output channels, in its own order, are the groups `rows`; its input channels
    are the groups `cols`. `kernel` is the member's kernel (None for linear layers).
    """

    member: str
    key: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    kernel: int | None


@dataclass(frozen=True)
class Step:
    """One step of the shared model's forward pass (see the module docstring)."""

    op: Op
    name: str = ""
    kernel: int | None = None
    reads: tuple[int, ...] = ()
    makes: tuple[int, ...] = ()
    carries: tuple[int, ...] = ()
    parts: tuple[Part, ...] = ()
    bn: bool = False
    relu: bool = False
    bias: bool = False


@dataclass(frozen=True)
class SharePlan:
    """A cluster's Shared-MotherNet: its channel groups and steps."""

    mother: str
    members: tuple[str, ...]
    family: str
    rank: int
    input: tuple[int, ...]
    classes: int
    groups: tuple[Group, ...]
    steps: tuple[Step, ...]
    #: the shared model reproduces the hatched members in eval mode / also in train mode
    exact: bool
    exact_train: bool

    def group(self, gid: int) -> Group:
        return self.groups[gid]

    def layer_steps(self) -> list[Step]:
        return [s for s in self.steps if s.op in ("conv", "linear")]


@dataclass(frozen=True)
class Refusal:
    """A cluster that keeps separate members, and why."""

    mother: str
    members: tuple[str, ...]
    reason: str


SHAREABLE_FAMILIES = ("plain", "mlp")


def _conv_layers(net: Net) -> list[list[tuple[int, int]]]:
    return [[(layer.kernel, layer.filters) for layer in block.layers] for block in net.blocks]


class _Builder:
    def __init__(self, members: Sequence[str], input_channels: int) -> None:
        self.groups: list[Group] = []
        self.steps: list[Step] = []
        first = self.new(None, input_channels)
        self.live: list[int] = [first]
        self.rep: dict[str, list[int]] = {m: [first] for m in members}
        self.members = list(members)

    def new(self, owner: str | None, size: int) -> int:
        self.groups.append(Group(len(self.groups), owner, size))
        return len(self.groups) - 1

    def layer(self, op: Op, name: str, keys: Mapping[str, str], widths: Mapping[str, int],
              kernels: Mapping[str, int | None], shared: int, *, bn: bool, relu: bool, bias: bool) -> None:
        """One layer position; `widths` has the members taking part, `shared` the MotherNet's units there."""
        takers = [m for m in self.members if m in widths]
        needed = {g for m in takers for g in self.rep[m]}
        reads = tuple(g for g in self.live if g in needed)
        makes: list[int] = []
        s = self.new(None, shared) if shared > 0 else None
        if s is not None:
            makes.append(s)
        rows: dict[str, tuple[int, ...]] = {}
        # own groups with the step's largest kernel first: each run of equal kernels is then one
        # contiguous block of rows, computed with its own kernel rather than masked taps
        for m in sorted(takers, key=lambda m: -(kernels[m] or 0)):
            own = widths[m] - shared
            o = self.new(m, own) if own > 0 else None
            if o is not None:
                makes.append(o)
            rows[m] = tuple(g for g in (s, o) if g is not None)
        idle = {g for m in self.members if m not in widths for g in self.rep[m]}
        carries = tuple(g for g in self.live if g in idle)
        ks = [k for k in kernels.values() if k is not None]
        parts = tuple(Part(m, keys[m], rows[m], tuple(self.rep[m]), kernels[m]) for m in takers)
        self.steps.append(Step(op, name, max(ks) if ks else None, reads, tuple(makes), carries, parts,
                               bn=bn, relu=relu, bias=bias))
        for m in takers:
            self.rep[m] = list(rows[m])
        self.live = list(makes) + list(carries)

    def whole(self, op: Op) -> None:
        self.steps.append(Step(op))


def plan_sharing(mother: Net, members: Sequence[Net], tables: Mapping[str, HatchTable],
                 input_shape: Sequence[int], classes: int) -> SharePlan | Refusal:
    """The Shared-MotherNet of one cluster, or why it keeps separate members (pure)."""
    names = tuple(n.name for n in members)

    def refuse(reason: str) -> Refusal:
        return Refusal(mother.name, names, reason)

    if mother.family == "residual":
        return refuse("residual nets are not shared yet: a member's added units and projection shortcuts "
                      "add member-specific terms to the MotherNet's stream channels")
    if mother.family == "dense":
        return refuse("dense nets are not shared yet: every later layer reads the concatenation, so the "
                      "MotherNet's channels would need member-specific slices in every block")
    if len(members) < 2:
        return refuse("a cluster of one net has no MotherNet to share")
    for n in members:
        t = tables.get(n.name)
        if t is None or t.mother != mother.name:
            return refuse(f"'{n.name}' has no hatching table from '{mother.name}'")
        if len(n.blocks) != len(mother.blocks):
            return refuse(f"'{n.name}' has {len(n.blocks)} blocks, its MotherNet {len(mother.blocks)}: "
                          "an added block is not a copy of MotherNet units")
        # the MotherNet's layers must sit at the first positions of each block and of the head
        for b, block in enumerate(mother.blocks, start=1):
            for i in range(1, len(block.layers) + 1):
                key = f"block{b}.layer{i}"
                if t.entry(f"{key}.conv.weight").source != f"{key}.conv.weight":
                    return refuse(f"'{n.name}' hatches {key} from another MotherNet layer "
                                  "(its MotherNet layers are not the block's first layers)")
        for i in range(1, len(mother.dense) + 1):
            key = f"head.fc{i}"
            if t.entry(f"{key}.weight").source != f"{key}.weight":
                return refuse(f"'{n.name}' hatches {key} from another MotherNet layer")

    rank = len(input_shape) - 1
    b = _Builder(names, input_shape[0] if mother.family == "plain" else math.prod(input_shape))
    if mother.family == "plain":
        convs = {n.name: _conv_layers(n) for n in members}
        for bi, mblock in enumerate(_conv_layers(mother)):
            depth = max(len(c[bi]) for c in convs.values())
            for li in range(depth):
                takers = [m for m in names if li < len(convs[m][bi])]
                key = f"block{bi + 1}.layer{li + 1}"
                b.layer("conv", key, {m: key for m in takers}, {m: convs[m][bi][li][1] for m in takers},
                        {m: convs[m][bi][li][0] for m in takers},
                        mblock[li][1] if li < len(mblock) else 0, bn=True, relu=True, bias=False)
            b.whole("pool")
        b.whole("gap")
    else:
        b.whole("flatten")
    hidden = {n.name: n.widths for n in members}
    for i in range(max(len(h) for h in hidden.values())):
        takers = [m for m in names if i < len(hidden[m])]
        key = f"head.fc{i + 1}"
        b.layer("linear", key, {m: key for m in takers}, {m: hidden[m][i] for m in takers},
                {m: None for m in takers}, mother.widths[i] if i < len(mother.widths) else 0,
                bn=False, relu=True, bias=True)
    b.layer("linear", "head.out", {m: "head.out" for m in names}, {m: classes for m in names},
            {m: None for m in names}, 0, bn=False, relu=False, bias=True)
    return SharePlan(
        mother=mother.name, members=names, family=mother.family, rank=rank,
        input=tuple(input_shape), classes=classes, groups=tuple(b.groups), steps=tuple(b.steps),
        exact=all(tables[m].exact for m in names), exact_train=all(tables[m].exact_train for m in names),
    )


def param_count(plan: SharePlan) -> int:
    """Trainable parameters of the shared model: unmasked weights, biases and BatchNorm affines."""
    total = 0
    for s in plan.layer_steps():
        out = sum(plan.group(g).size for g in s.makes)
        seen: set[tuple[int, int]] = set()
        for p in s.parts:
            for r in p.rows:
                for c in p.cols:
                    if (r, c) in seen:
                        continue
                    seen.add((r, c))
                    # shared rows gather every member's kernel: the union is the largest one
                    k = max((q.kernel or 1) for q in s.parts if r in q.rows and c in q.cols)
                    taps = k**plan.rank if s.op == "conv" else 1
                    total += plan.group(r).size * plan.group(c).size * taps
        total += out * (2 if s.bn else 0) + (out if s.bias else 0)
    return total
