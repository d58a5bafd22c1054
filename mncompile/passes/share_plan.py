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

The model is a sequence of *steps* over *live* channel groups. A layer step gathers the groups
it reads (in live order), optionally applies ReLU or BatchNorm + ReLU to them first (`pre`: a
dense layer's, a transition's or a residual unit's second convolution's input), then one
convolution or linear map whose weight is masked to the structure above (a member's own rows
only see its own columns, with its own kernel centred in the step's largest), then BatchNorm
and ReLU where the members have them. A `norm` step is BatchNorm + ReLU alone (a DenseNet's
head), an `add` step a residual sum: each made group is a weighted sum of live groups, then
ReLU; a shared group sums the unit's shared output and the mean of the members' shortcuts.
Every step keeps (`carries`) the live groups some member still refers to. Pool, average-pool,
global-average and flatten steps act on every live channel.

`plan_sharing(mother, members, tables, input_shape, classes)` is pure (no torch) and returns a
`SharePlan`, or a `Refusal` saying why a cluster keeps separate members: a member with more
blocks than its MotherNet, a MotherNet layer hatched away from its block's first positions, or
a residual unit whose shortcut is the identity in the member and a projection in the MotherNet.
A member's projection where the MotherNet has the identity is the member's own.

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
from dataclasses import dataclass, field
from typing import Literal

from mncompile.ir import Net
from mncompile.passes.hatch_plan import HatchTable

Op = Literal["conv", "linear", "norm", "add", "pool", "avgpool", "gap", "flatten"]
Pre = Literal["relu", "bn_relu"]


@dataclass(frozen=True)
class Group:
    """A run of channels of the shared model: the MotherNet's (owner None) or one member's."""

    id: int
    owner: str | None
    size: int


@dataclass(frozen=True)
class Part:
    """What one member tensor set becomes in a step.

    The member's output channels, in its own order, are the groups `rows`; its input channels
    are the groups `cols`. `key` is the member's weight (`key.weight`, and `key.bias`), `bn` its
    BatchNorm after the layer, `pre` its BatchNorm before (over the input channels); `kernel`
    is the member's kernel (None for linear layers and norm steps).
    """

    member: str
    key: str | None
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    kernel: int | None
    bn: str | None = None
    pre: str | None = None


@dataclass(frozen=True)
class Step:
    """One step of the shared model's forward pass (see the module docstring).

    `sums` (add steps only): per made group, its (source group, coefficient) terms.
    """

    op: Op
    name: str = ""
    kernel: int | None = None
    stride: int = 1
    pre: Pre | None = None
    bn: bool = False
    relu: bool = False
    bias: bool = False
    reads: tuple[int, ...] = ()
    makes: tuple[int, ...] = ()
    carries: tuple[int, ...] = ()
    parts: tuple[Part, ...] = ()
    sums: tuple[tuple[int, tuple[tuple[int, float], ...]], ...] = ()
    #: the made groups split into weight blocks: each is one convolution (or linear map) over
    #: just the groups its rows read, with its own kernel
    blocks: tuple[tuple[int, ...], ...] = ()


#: adjacent weight blocks with one kernel merge into one convolution while that costs at most
#: this factor more multiply-adds than the two apart (fewer, larger calls are faster)
MERGE_FACTOR = 1.3


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
        return [s for s in self.steps if s.op in ("conv", "linear", "norm")]


@dataclass(frozen=True)
class Refusal:
    """A cluster that keeps separate members, and why."""

    mother: str
    members: tuple[str, ...]
    reason: str


class _Refused(Exception):
    pass


@dataclass
class _PartSpec:
    """A member's part of a layer step, before groups exist.

    `rows` are (shared token, size) or (None, size) runs in the member's channel order; one
    shared group is made per token and step. The member's `dst` slot then refers to the rows
    (after its `src` groups if `append`: a dense layer's concatenation).
    """

    member: str
    key: str | None
    kernel: int | None
    rows: list[tuple[str | None, int]]
    bn: str | None = None
    pre: str | None = None
    src: str = "x"
    dst: str = "x"
    append: bool = False


@dataclass
class _Builder:
    members: list[str]
    input_channels: int
    rank: int = 0
    groups: list[Group] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    rep: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    live: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        first = self.new(None, self.input_channels)
        self.live = [first]
        self.rep = {(m, "x"): [first] for m in self.members}

    def new(self, owner: str | None, size: int) -> int:
        self.groups.append(Group(len(self.groups), owner, size))
        return len(self.groups) - 1

    def _reads(self, keys: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        needed = {g for k in keys for g in self.rep[k]}
        return tuple(g for g in self.live if g in needed)

    def _finish(self, makes: Sequence[int], updates: Mapping[tuple[str, str], list[int]],
                drop: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        for k in drop:
            self.rep.pop(k, None)
        self.rep.update(updates)
        referenced = {g for groups in self.rep.values() for g in groups}
        carries = tuple(g for g in self.live if g in referenced and g not in makes)
        self.live = [*makes, *carries]
        return carries

    def mirror(self, member: str, slot: str = "x") -> list[tuple[str | None, int]]:
        """Rows that mirror a member's groups: one shared group per shared input group."""
        return [(f"g{g}" if self.groups[g].owner is None else None, self.groups[g].size)
                for g in self.rep[(member, slot)]]

    def layer(self, op: Op, name: str, specs: Sequence[_PartSpec], *, stride: int = 1,
              pre: Pre | None = None, bn: bool = False, relu: bool = False, bias: bool = False,
              drop: Sequence[tuple[str, str]] = ()) -> None:
        reads = self._reads([(s.member, s.src) for s in specs])
        tokens: dict[str, int] = {}
        kernel_of: dict[int, int] = {}
        rows: list[tuple[int, ...]] = []
        for s in specs:
            ids = []
            for token, size in s.rows:
                if size < 0:
                    raise _Refused(f"'{s.member}' is narrower than its MotherNet at {name}")
                if size == 0:
                    continue
                if token is None:
                    g = self.new(s.member, size)
                elif token in tokens:
                    g = tokens[token]
                    if self.groups[g].size != size:
                        raise AssertionError(f"shared group {token} of {name} has two sizes")
                else:
                    g = tokens[token] = self.new(None, size)
                kernel_of[g] = max(kernel_of.get(g, 0), s.kernel or 0)
                ids.append(g)
            rows.append(tuple(ids))
        member_index = {m: i for i, m in enumerate(self.members)}
        made = sorted(kernel_of, key=lambda g: (self.groups[g].owner is not None, -kernel_of[g],
                                                member_index.get(self.groups[g].owner or "", -1), g))
        if op == "norm":
            # BatchNorm + ReLU alone: the output channels are the read channels, in their order
            mirror = {r: g for s, ids in zip(specs, rows, strict=True)
                      for r, g in zip(self.rep[(s.member, s.src)], ids, strict=True)}
            made = [mirror[r] for r in reads]
        parts = tuple(Part(s.member, s.key, ids, tuple(self.rep[(s.member, s.src)]), s.kernel, s.bn, s.pre)
                      for s, ids in zip(specs, rows, strict=True))
        updates = {(s.member, s.dst): ([*self.rep[(s.member, s.src)]] if s.append else []) + list(ids)
                   for s, ids in zip(specs, rows, strict=True)}
        carries = self._finish(made, updates, drop)
        if stride != 1 and carries:
            raise AssertionError(f"{name}: a strided step cannot carry groups at the old resolution")
        kernels = [s.kernel for s in specs if s.kernel is not None]
        blocks = self._blocks(made, kernel_of, parts, reads) if op != "norm" else ()
        self.steps.append(Step(op, name, max(kernels) if kernels else None, stride, pre, bn, relu, bias,
                               reads, tuple(made), carries, parts, blocks=blocks))

    def _blocks(self, made: Sequence[int], kernel_of: Mapping[int, int], parts: Sequence[Part],
                reads: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Runs of made groups with one owner and kernel, merged while that costs little (MERGE_FACTOR)."""
        # the columns each row group meets, once: a cluster of K members has K parts per step
        cols_of: dict[int, set[int]] = {}
        for p in parts:
            for r in p.rows:
                cols_of.setdefault(r, set()).update(p.cols)

        def cost(rows: Sequence[int]) -> int:
            cols = set().union(*(cols_of.get(g, ()) for g in rows))
            k = max(kernel_of[g] for g in rows) or 1
            return (sum(self.groups[g].size for g in rows) * sum(self.groups[c].size for c in cols)
                    * k ** self.rank)

        runs: list[list[int]] = []
        for g in made:
            if runs and (self.groups[runs[-1][0]].owner, kernel_of[runs[-1][0]]) == (
                    self.groups[g].owner, kernel_of[g]):
                runs[-1].append(g)
            else:
                runs.append([g])
        blocks: list[list[int]] = []
        for run in runs:
            last = blocks[-1] if blocks else None
            if (last is not None and kernel_of[last[0]] == kernel_of[run[0]]
                    and cost(last + run) <= MERGE_FACTOR * (cost(last) + cost(run))):
                last.extend(run)
            else:
                blocks.append(list(run))
        return tuple(tuple(b) for b in blocks)

    def add(self, name: str, members: Sequence[str]) -> None:
        """Residual sums: each member's `main` plus its `short` (group by group), then ReLU, into `x`."""
        sources: dict[int, dict[int, float]] = {}
        outputs: dict[int, int] = {}
        updates: dict[tuple[str, str], list[int]] = {}
        k = len(members)
        for m in members:
            main, short = self.rep[(m, "main")], self.rep[(m, "short")]
            if [self.groups[g].size for g in main] != [self.groups[g].size for g in short]:
                raise _Refused(f"'{m}' has a shortcut at {name} that does not line up with its "
                               "MotherNet's channels")
            out = []
            for g, s in zip(main, short, strict=True):
                if g not in outputs:
                    outputs[g] = self.new(self.groups[g].owner, self.groups[g].size)
                    sources[outputs[g]] = {g: 1.0}
                o = outputs[g]
                # a shared output sums the mean of the members' shortcuts; an own one its member's
                w = 1.0 / k if self.groups[g].owner is None else 1.0
                sources[o][s] = sources[o].get(s, 0.0) + w
                out.append(o)
            updates[(m, "x")] = out
        reads = self._reads([(m, slot) for m in members for slot in ("main", "short")])
        made = list(outputs.values())
        carries = self._finish(made, updates, [(m, slot) for m in members for slot in ("main", "short")])
        sums = tuple((o, tuple(sorted((g, round(w, 12)) for g, w in sources[o].items()))) for o in made)
        self.steps.append(Step("add", name, relu=True, reads=reads, makes=tuple(made), carries=carries,
                               sums=sums))

    def whole(self, op: Op) -> None:
        self.steps.append(Step(op))


def _rows(aligned: bool, token: str, shared: int, width: int) -> list[tuple[str | None, int]]:
    """A MotherNet-aligned layer: the shared units, then the member's own; otherwise all own."""
    return [(token, shared), (None, width - shared)] if aligned else [(None, width)]


def _check_placement(n: Net, t: HatchTable, keys: Sequence[str]) -> None:
    for key in keys:
        if t.entry(key).source != key:
            raise _Refused(f"'{n.name}' hatches {key} from another MotherNet tensor "
                           "(its MotherNet layers are not at the first positions of the part)")


def plan_sharing(mother: Net, members: Sequence[Net], tables: Mapping[str, HatchTable],
                 input_shape: Sequence[int], classes: int) -> SharePlan | Refusal:
    """The Shared-MotherNet of one cluster, or why it keeps separate members (pure)."""
    names = tuple(n.name for n in members)
    if len(members) < 2:
        return Refusal(mother.name, names, "a cluster of one net has no MotherNet to share")
    try:
        for n in members:
            t = tables.get(n.name)
            if t is None or t.mother != mother.name:
                raise _Refused(f"'{n.name}' has no hatching table from '{mother.name}'")
            if len(n.blocks) != len(mother.blocks):
                raise _Refused(f"'{n.name}' has {len(n.blocks)} blocks, its MotherNet {len(mother.blocks)}: "
                               "an added block is not made of MotherNet units")
            keys = [f"head.fc{i}.weight" for i in range(1, len(mother.dense) + 1)]
            for bi, block in enumerate(mother.blocks, start=1):
                for i in range(1, len(block.layers) + 1):
                    keys.append(f"block{bi}.unit{i}.conv1.weight" if mother.family == "residual"
                                else f"block{bi}.layer{i}.conv.weight")
            _check_placement(n, t, keys)
        rank = len(input_shape) - 1
        channels = math.prod(input_shape) if mother.family == "mlp" else input_shape[0]
        b = _Builder(list(names), channels, rank if mother.family != "mlp" else 0)
        if mother.family == "mlp":
            b.whole("flatten")
        else:
            {"plain": _plain, "residual": _residual, "dense": _dense}[mother.family](b, mother, members)
            b.whole("gap")
        _head(b, mother, members, classes)
    except _Refused as why:
        return Refusal(mother.name, names, str(why))
    return SharePlan(
        mother=mother.name, members=names, family=mother.family, rank=rank,
        input=tuple(input_shape), classes=classes, groups=tuple(b.groups), steps=tuple(b.steps),
        exact=all(tables[m].exact for m in names), exact_train=all(tables[m].exact_train for m in names),
    )


def _block_layers(mother: Net, members: Sequence[Net], bi: int) -> list[tuple[str, list[_PartSpec]]]:
    """Per layer position of block `bi`: its key and the conv part of every member that has it."""
    mblock = mother.blocks[bi]
    out = []
    for li in range(max(len(n.blocks[bi].layers) for n in members)):
        key = f"block{bi + 1}.layer{li + 1}"
        aligned = li < len(mblock.layers)
        shared = mblock.layers[li].filters if aligned else 0
        out.append((key, [_PartSpec(n.name, f"{key}.conv", layer.kernel,
                                    _rows(aligned, "s", shared, layer.filters))
                          for n in members if li < len(n.blocks[bi].layers)
                          for layer in [n.blocks[bi].layers[li]]]))
    return out


def _plain(b: _Builder, mother: Net, members: Sequence[Net]) -> None:
    for bi in range(len(mother.blocks)):
        for key, specs in _block_layers(mother, members, bi):
            for s in specs:
                s.bn = f"{key}.bn"
            b.layer("conv", key, specs, bn=True, relu=True)
        b.whole("pool")


def _stem(b: _Builder, mother: Net, members: Sequence[Net]) -> None:
    assert mother.stem is not None
    specs = []
    for n in members:
        assert n.stem is not None
        specs.append(_PartSpec(n.name, "stem.conv", n.stem.kernel,
                               _rows(True, "s", mother.stem.filters, n.stem.filters), bn="stem.bn"))
    b.layer("conv", "stem", specs, bn=True, relu=True)


def _residual(b: _Builder, mother: Net, members: Sequence[Net]) -> None:
    _stem(b, mother, members)
    assert mother.stem is not None
    m_in = mother.stem.filters
    width = {n.name: n.stem.filters for n in members if n.stem is not None}
    for bi, mblock in enumerate(mother.blocks):
        depth = max(len(n.blocks[bi].layers) for n in members)
        for u in range(depth):
            prefix = f"block{bi + 1}.unit{u + 1}"
            stride = 2 if bi > 0 and u == 0 else 1
            aligned = u < len(mblock.layers)
            mw = mblock.layers[u].filters if aligned else 0
            m_proj = aligned and (stride != 1 or m_in != mw)
            takers = [n for n in members if u < len(n.blocks[bi].layers)]
            first, second = [], []
            for n in takers:
                layer = n.blocks[bi].layers[u]
                proj = stride != 1 or width[n.name] != layer.filters
                if aligned and m_proj and not proj:
                    raise _Refused(f"'{n.name}' has an identity shortcut in {prefix} where its MotherNet has "
                                   "a projection")
                first.append(_PartSpec(n.name, f"{prefix}.conv1", layer.kernel,
                                       _rows(aligned, "inner", mw, layer.filters), bn=f"{prefix}.bn1",
                                       dst="inner"))
                if proj:
                    # a projection where the MotherNet has the identity is the member's own (it
                    # starts as the identity), split like the unit's output
                    short: list[tuple[str | None, int]] = (
                        _rows(aligned, "short", mw, layer.filters) if m_proj or not aligned
                        else [(None, mw), (None, layer.filters - mw)])
                    first.append(_PartSpec(n.name, f"{prefix}.shortcut.conv", 1, short,
                                           bn=f"{prefix}.shortcut.bn", dst="short"))
                else:
                    b.rep[(n.name, "short")] = list(b.rep[(n.name, "x")])
                # an added unit (the MotherNet has none here) writes the whole stream: its output
                # is split like its shortcut, so later shared sums find the MotherNet's positions
                out: list[tuple[str | None, int]] = (
                    _rows(True, "out", mw, layer.filters) if aligned
                    else [(None, b.groups[g].size) for g in b.rep[(n.name, "short")]] if not proj
                    else [(None, layer.filters)])
                second.append(_PartSpec(n.name, f"{prefix}.conv2", layer.kernel, out, bn=f"{prefix}.bn2",
                                        src="inner", dst="main"))
            b.layer("conv", f"{prefix}.conv1", first, stride=stride, bn=True,
                    drop=[(n.name, "x") for n in takers])
            b.layer("conv", f"{prefix}.conv2", second, pre="relu", bn=True,
                    drop=[(n.name, "inner") for n in takers])
            b.add(prefix, [n.name for n in takers])
            for n in takers:
                width[n.name] = n.blocks[bi].layers[u].filters
            if aligned:
                m_in = mw


def _dense(b: _Builder, mother: Net, members: Sequence[Net]) -> None:
    _stem(b, mother, members)
    last = len(mother.blocks) - 1
    for bi in range(len(mother.blocks)):
        for key, specs in _block_layers(mother, members, bi):
            for s in specs:
                s.pre, s.append = f"{key}.bn", True
            b.layer("conv", key, specs, pre="bn_relu")
        if bi < last:
            key = f"transition{bi + 1}"
            specs = [_PartSpec(n.name, f"{key}.conv", 1, b.mirror(n.name), pre=f"{key}.bn") for n in members]
            b.layer("conv", key, specs, pre="bn_relu")
            b.whole("avgpool")
    norms = [_PartSpec(n.name, None, None, b.mirror(n.name), pre="head.bn") for n in members]
    b.layer("norm", "head.bn", norms, pre="bn_relu")


def _head(b: _Builder, mother: Net, members: Sequence[Net], classes: int) -> None:
    hidden = {n.name: n.widths for n in members}
    for i in range(max(len(h) for h in hidden.values())):
        key = f"head.fc{i + 1}"
        aligned = i < len(mother.widths)
        shared = mother.widths[i] if aligned else 0
        specs = [_PartSpec(n.name, key, None, _rows(aligned, "s", shared, hidden[n.name][i]))
                 for n in members if i < len(hidden[n.name])]
        b.layer("linear", key, specs, relu=True, bias=True)
    b.layer("linear", "head.out", [_PartSpec(n.name, "head.out", None, [(None, classes)]) for n in members],
            bias=True)


def param_count(plan: SharePlan, stored: bool = False) -> int:
    """Trainable parameters of the shared model: weights, biases and BatchNorm affines.

    By default the weights count only their unmasked entries (what trains); with `stored`,
    every entry of every weight block (what the module holds in memory).
    """
    total = 0
    for s in plan.layer_steps():
        out = sum(plan.group(g).size for g in s.makes)
        # the parts that write each row group (a step has one part per member)
        parts_of: dict[int, list[Part]] = {}
        for p in s.parts:
            for r in set(p.rows):
                parts_of.setdefault(r, []).append(p)
        for block in s.blocks:
            rows = set(block)
            taps: dict[tuple[int, int], int] = {}
            for r in rows:
                for p in parts_of.get(r, ()):
                    for c in p.cols:
                        # shared rows gather every member's kernel: the union is the largest one
                        t = (p.kernel or 1) ** plan.rank if s.kernel else 1
                        taps[(r, c)] = max(taps.get((r, c), 1), t)
            if stored:
                cols = {c for (_, c) in taps}
                k = max((p.kernel or 1) for r in rows for p in parts_of.get(r, ())) if s.kernel else 1
                k = k**plan.rank if s.kernel else 1
                total += sum(plan.group(r).size for r in rows) * sum(plan.group(c).size for c in cols) * k
            else:
                total += sum(plan.group(r).size * plan.group(c).size * t for (r, c), t in taps.items())
        total += out * (2 if s.bn else 0) + (out if s.bias else 0)
        if s.pre == "bn_relu":
            total += 2 * sum(plan.group(g).size for g in s.reads)
    return total
