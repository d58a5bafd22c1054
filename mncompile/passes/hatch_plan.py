"""Plan how a member's weights come from its MotherNet: the Net2Net hatching table.

`plan_hatching(mother, member, input_shape, classes, seed)` is pure compile-time work (no
torch): for every state_dict entry of the member's generated module (keys from
`mncompile.shapes.infer_net`) it records where the tensor comes from in the MotherNet and
how to map it, or how to initialise it when the MotherNet has nothing to give, and whether
the result preserves the MotherNet's function exactly. `mncompile.runtime.hatch`
applies a table to real tensors. The rules are those of `spec/mothernets.md` section 5 and
are documented with the JSON format in `docs/hatch-tables.md`.

>>> from mncompile.ir import Block, Layer, Net
>>> m = Net(name="m", family="plain", blocks=(Block(layers=(Layer(kernel=3, filters=4),)),))
>>> n = Net(name="n", family="plain", blocks=(Block(layers=(Layer(kernel=5, filters=6),
...                                                        Layer(kernel=3, filters=6))),))
>>> t = plan_hatching(m, n, (1, 8, 8), 3, seed=0)
>>> t.exact, t.exact_train
(True, False)
>>> t.entry("block1.layer1.conv.weight").kernel
(3, 5)
>>> t.entry("block1.layer2.conv.weight").init
'identity'
>>> table_from_json(table_to_json(t)) == t
True
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from mncompile.diagnostics import MNError

# the table's data model and JSON live in mncompile.formats (the runtime reads them without
# the compiler); re-exported so that `from mncompile.passes.hatch_plan import HatchTable` works
from mncompile.formats.hatch_table import (
    BN_EPS,
    INITS,
    SCHEMA_VERSION,
    Entry,
    HatchTable,
    Init,
    Layout,
    Segment,
    WidenMap,
    load_table,
    table_dumps,
    table_from_json,
    table_to_json,
)
from mncompile.ir import Layer, Net
from mncompile.shapes import TensorSpec, infer_net

__all__ = [
    "BN_EPS", "INITS", "MAX_ALIGNMENTS", "SCHEMA_VERSION", "Entry", "HatchTable", "Init", "Layout",
    "Segment", "WidenMap", "load_table", "plan_hatching", "table_dumps", "table_from_json",
    "table_to_json",
]

#: how many alignments of a block's layers to try before settling for the first one
MAX_ALIGNMENTS = 5000


# ---------------------------------------------------------------------------------- planning


#: below this many draws the plain loop is faster than handing the generator to numpy
_FEW_DRAWS = 48


def randrange_draws(seed: str, n: int, count: int) -> tuple[int, ...]:
    """`count` draws of `random.Random(seed).randrange(n)`, the same values, without a Python loop.

    A string seed is hashed with sha512 by `random`, so maps do not depend on PYTHONHASHSEED.
    `randrange(n)` keeps the top `n.bit_length()` bits of each 32-bit Mersenne Twister word and
    redraws values of n or more; numpy's MT19937 is the same generator, so from the same state
    its raw words, filtered the same way, are the same draws (a wide member draws thousands).

    >>> rng = random.Random("0/a/b")
    >>> randrange_draws("0/a/b", 100, 60) == tuple(rng.randrange(100) for _ in range(60))
    True
    """
    if count <= 0:
        return ()
    rng = random.Random(seed)
    bits = n.bit_length()
    if count < _FEW_DRAWS or not 0 < bits <= 32:
        return tuple(rng.randrange(n) for _ in range(count))
    state = rng.getstate()[1]
    gen = np.random.MT19937()
    gen.state = {"bit_generator": "MT19937",
                 "state": {"key": np.array(state[:624], dtype=np.uint32), "pos": state[624]}}
    shift = np.uint64(32 - bits)
    parts: list[np.ndarray] = []
    left = count
    while left > 0:
        # at least half the words are kept (n > 2**(bits - 1)): twice as many is usually enough
        words = gen.random_raw(2 * left + 16) >> shift
        kept = words[words < n][:left]
        parts.append(kept)
        left -= len(kept)
    return tuple(np.concatenate(parts).tolist())


def _one(name: str, size: int) -> Layout:
    return (Segment(map=name, at=0, size=size),)


def _mother_size(layout: Layout, maps: dict[str, WidenMap]) -> int:
    return max((s.at + maps[s.map].old for s in layout if s.map is not None), default=0)


class _Planner:
    def __init__(self, mother: Net, member: Net, input_shape: tuple[int, ...], classes: int,
                 seed: int) -> None:
        self.mother, self.member, self.seed = mother, member, seed
        self.input, self.classes = tuple(input_shape), classes
        self.rank = len(self.input) - 1
        self.mspecs = {t.name: t for t in infer_net(mother, self.input, classes).tensors}
        self.nspecs: dict[str, TensorSpec] = {
            t.name: t for t in infer_net(member, self.input, classes).tensors}
        self.maps: dict[str, WidenMap] = {}
        self.entries: dict[str, Entry] = {}
        self.reasons: list[str] = []
        self.exact_train = True
        #: while set, every entry made is marked not exact with this reason (already in `reasons`)
        self.scope: str | None = None

    # -- building blocks -------------------------------------------------------------------

    def new_map(self, name: str, old: int, new: int) -> str:
        extra = randrange_draws(f"{self.seed}/{self.member.name}/{name}", old, new - old)
        self.maps[name] = WidenMap(old=old, new=new, extra=extra)
        return name

    def inexact(self, reason: str) -> None:
        self.reasons.append(reason)

    def begin(self, reasons: Sequence[str] | None, outer: str | None = None) -> None:
        """Mark the entries made from now on not exact, for these reasons (or `outer`'s)."""
        if reasons:
            self.reasons.extend(reasons)
            self.scope = " | ".join(reasons)
        else:
            self.scope = outer

    def put(self, key: str, **kw: Any) -> None:
        spec = self.nspecs[key]
        reason = kw.get("reason")
        if reason is not None:
            self.inexact(reason)
        elif self.scope is not None:
            kw["reason"] = reason = self.scope
        if reason is not None:
            kw["exact"] = False
        self.entries[key] = Entry(key=key, shape=spec.shape, kind=spec.kind, **kw)

    def conv(self, key: str, source: str | None, rows: Layout, cols: Layout, k_from: int,
             k_to: int, reason: str | None = None) -> None:
        kernel = None if k_from == k_to else (k_from, k_to)
        if k_to < k_from:
            reason = reason or (f"{key}: kernel {k_to} is smaller than the MotherNet's {k_from}; "
                                "the centre is cropped")
        fill = "he_normal" if any(s.map is None for s in rows) else None
        self.put(f"{key}.weight", source=f"{source}.weight" if source else None, rows=rows,
                 cols=cols, kernel=kernel, fill=fill, reason=reason)

    def identity(self, key: str, rows: Layout, cols: Layout, k: int | None,
                 reason: str | None = None) -> None:
        """A virtual identity MotherNet tensor (n x n [x k...]) mapped into the member."""
        n = _mother_size(cols, self.maps)
        shape = (n, n) + ((k,) * self.rank if k is not None else ())
        fill = "he_normal" if any(s.map is None for s in rows) else None
        self.put(f"{key}.weight", init="identity", src_shape=shape, rows=rows, cols=cols,
                 fill=fill, reason=reason)

    def new(self, key: str, init: str) -> None:
        self.put(key, init=init)

    def bn(self, key: str, source: str | None, layout: Layout | None, mode: str = "gather") -> None:
        """A BatchNorm: gathered from the MotherNet, or a constant initialisation.

        mode `identity`: eval-mode identity (gamma 1, beta 0, mean 0, var 1 - eps; a fresh
        BN with var 1 is not); `fresh`: torch's defaults; `zero`: gamma = beta = 0.
        """
        if mode == "gather":
            assert source is not None and layout is not None
            for suffix, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                                 ("running_var", 1.0)):
                self.put(f"{key}.{suffix}", source=f"{source}.{suffix}", rows=layout,
                         fill=fill if any(s.map is None for s in layout) else None)
            self.put(f"{key}.num_batches_tracked", source=f"{source}.num_batches_tracked")
            return
        gamma = {"identity": "ones", "fresh": "ones", "zero": "zeros"}[mode]
        var = "bn_var" if mode == "identity" else "ones"
        self.new(f"{key}.weight", gamma)
        self.new(f"{key}.bias", "zeros")
        self.new(f"{key}.running_mean", "zeros")
        self.new(f"{key}.running_var", var)
        self.new(f"{key}.num_batches_tracked", "zeros")

    def fresh_conv(self, key: str) -> None:
        self.new(f"{key}.weight", "he_normal")

    # -- alignment of a block's layers -------------------------------------------------------

    def align(self, where: str, mlayers: Sequence[Layer], nlayers: Sequence[Layer], carried: int,
              nonneg: bool, keys: Sequence[str]) -> tuple[tuple[int, ...], dict[int, list[str]]]:
        """Place the MotherNet's layers at member positions; the rest become identities.

        Prefers the first layers (the MotherNet's construction); tries other placements only
        when that one is not exact. Returns the positions and, per member position, the
        reasons it is not exact.
        """
        m, n = len(mlayers), len(nlayers)
        if n < m:
            raise MNError(
                f"{where} of member '{self.member.name}' has {n} layers but the MotherNet "
                f"'{self.mother.name}' has {m} there: a member cannot lose layers",
                nlayers[-1].span if nlayers else None,
                hint="hatch members from a MotherNet built from their own cluster",
            )
        first_feasible: tuple[tuple[int, ...], dict[int, list[str]]] | None = None
        for pos in itertools.islice(itertools.combinations(range(n), m), MAX_ALIGNMENTS):
            reasons = self._check_alignment(mlayers, nlayers, carried, nonneg, keys, pos)
            if reasons is None:
                continue
            if not reasons:
                return pos, {}
            if first_feasible is None:
                first_feasible = (pos, reasons)
        if first_feasible is None:
            i = next(i for i in range(m) if nlayers[i].filters < mlayers[i].filters)
            raise MNError(
                f"{keys[i]} of member '{self.member.name}' has {nlayers[i].filters} units but the "
                f"MotherNet '{self.mother.name}' has {mlayers[i].filters} there: a member cannot "
                "be narrower than its MotherNet",
                nlayers[i].span,
                hint="hatch members from a MotherNet built from their own cluster",
            )
        return first_feasible

    @staticmethod
    def _check_alignment(mlayers: Sequence[Layer], nlayers: Sequence[Layer], carried: int,
                         nonneg: bool, keys: Sequence[str], pos: tuple[int, ...]
                         ) -> dict[int, list[str]] | None:
        where = dict(zip(pos, range(len(pos)), strict=True))
        reasons: dict[int, list[str]] = {}
        for j, nl in enumerate(nlayers):
            if j in where:
                ml = mlayers[where[j]]
                if nl.filters < ml.filters:
                    return None
                if nl.kernel < ml.kernel:
                    reasons.setdefault(j, []).append(
                        f"{keys[j]}.conv: kernel {nl.kernel} is smaller than the MotherNet's "
                        f"{ml.kernel}; the centre is cropped")
                carried = ml.filters
                continue
            if nl.filters < carried:
                reasons.setdefault(j, []).append(f"{keys[j]}: an added identity layer of {nl.filters} units "
                               f"cannot carry the MotherNet's {carried} channels")
            if j == 0 and not nonneg:
                reasons.setdefault(j, []).append(
                    f"{keys[j]}: an added identity layer here sees raw inputs, which may be "
                    "negative (relu(x) != x)")
        return reasons

    # -- families ------------------------------------------------------------------------------

    def plan(self) -> None:
        m, n = self.mother, self.member
        if m.family != n.family:
            raise MNError(
                f"member '{n.name}' is a {n.family} net but MotherNet '{m.name}' is {m.family}",
                n.family_span, hint="nets of different architecture classes never share a MotherNet")
        if self.rank == 0 and n.family != "mlp":
            raise MNError(f"a {n.family} net needs a CxL or CxHxW input, got {self.input}",
                          n.span)
        if n.family != "mlp" and len(n.blocks) < len(m.blocks):
            raise MNError(
                f"member '{n.name}' has {len(n.blocks)} blocks but its MotherNet "
                f"'{m.name}' has {len(m.blocks)}: a member cannot lose blocks",
                n.span, hint="hatch members from a MotherNet built from their own cluster")
        if n.stem is not None and m.stem is not None and n.stem.filters < m.stem.filters:
            raise MNError(
                f"the stem of member '{n.name}' has {n.stem.filters} filters but its MotherNet's "
                f"has {m.stem.filters}: a member cannot be narrower than its MotherNet",
                n.stem_span, hint="hatch members from a MotherNet built from their own cluster")
        getattr(self, f"_{n.family}")()
        missing = [k for k in self.nspecs if k not in self.entries]
        assert not missing, f"hatch planner left member tensors unplanned: {missing}"

    def _input(self) -> Layout:
        # an mlp flattens its input; a conv net's first layer sees the channels
        c = math.prod(self.input) if self.member.family == "mlp" else self.input[0]
        return _one(self.new_map("input", c, c), c)

    def _head(self, layout: Layout, carried: int, nonneg: bool) -> None:
        mw, nw = self.mother.dense, self.member.dense
        keys = [f"head.fc{i}" for i in range(1, len(nw) + 1)]
        mlayers = [Layer(kernel=1, filters=d.width, span=d.span) for d in mw]
        nlayers = [Layer(kernel=1, filters=d.width, span=d.span) for d in nw]
        pos, why = self.align("the head", mlayers, nlayers, carried, nonneg, keys)
        aligned = dict(zip(pos, range(len(pos)), strict=True))
        for j, key in enumerate(keys):
            width = nw[j].width
            if j in aligned:
                src = f"head.fc{aligned[j] + 1}"
                old = mw[aligned[j]].width
                out = _one(self.new_map(key, old, width), width)
                self.put(f"{key}.weight", source=f"{src}.weight", rows=out, cols=layout)
                self.put(f"{key}.bias", source=f"{src}.bias", rows=out)
                carried = old
            else:
                self.begin(why.get(j))
                out = _one(self.new_map(key, carried, width), width)
                self.identity(key, out, layout, None)
                self.new(f"{key}.bias", "zeros")
                self.scope = None
            layout = out
        self.put("head.out.weight", source="head.out.weight", cols=layout)
        self.put("head.out.bias", source="head.out.bias")

    def _mlp(self) -> None:
        layout = self._input()
        self._head(layout, _mother_size(layout, self.maps), nonneg=False)

    def _plain(self) -> None:
        m, n = self.mother, self.member
        layout = self._input()
        carried = self.input[0]
        for b, nblock in enumerate(n.blocks, start=1):
            keys = [f"block{b}.layer{j}" for j in range(1, len(nblock.layers) + 1)]
            if b <= len(m.blocks):
                mlayers = m.blocks[b - 1].layers
                pos, why = self.align(f"block {b}", mlayers, nblock.layers, carried, b > 1, keys)
            else:
                mlayers, pos, why = (), (), {}
                self.begin([f"block{b}: the MotherNet has no block {b}; its 2x max-pool is not "
                            "an identity"])
            block_scope = self.scope
            aligned = dict(zip(pos, range(len(pos)), strict=True))
            for j, (key, nl) in enumerate(zip(keys, nblock.layers, strict=True)):
                if j in aligned:
                    ml = mlayers[aligned[j]]
                    src = f"block{b}.layer{aligned[j] + 1}"
                    out = _one(self.new_map(key, ml.filters, nl.filters), nl.filters)
                    self.conv(f"{key}.conv", f"{src}.conv", out, layout, ml.kernel, nl.kernel)
                    self.bn(f"{key}.bn", f"{src}.bn", out)
                    carried = ml.filters
                else:
                    # an identity conv after a ReLU, then BN set to the eval-mode identity
                    self.begin(why.get(j), block_scope)
                    out = _one(self.new_map(key, carried, nl.filters), nl.filters)
                    self.identity(f"{key}.conv", out, layout, nl.kernel)
                    self.bn(f"{key}.bn", None, None, mode="identity")
                    self.exact_train = False
                    self.scope = block_scope
                layout = out
            self.scope = None
        self._head(layout, carried, nonneg=True)

    def _stem(self) -> Layout:
        ms, ns = self.mother.stem, self.member.stem
        assert ms is not None and ns is not None
        out = _one(self.new_map("stem", ms.filters, ns.filters), ns.filters)
        self.conv("stem.conv", "stem.conv", out, self._input(), ms.kernel, ns.kernel)
        self.bn("stem.bn", "stem.bn", out)
        return out

    def _residual(self) -> None:
        m, n = self.mother, self.member
        stream = self._stem()
        assert m.stem is not None and n.stem is not None
        carried, width = m.stem.filters, n.stem.filters
        for s, nblock in enumerate(n.blocks, start=1):
            mblock = m.blocks[s - 1] if s <= len(m.blocks) else None
            w = nblock.layers[0].filters
            if mblock is None:
                self.begin([f"block{s}: the MotherNet has no stage {s}; its first unit's stride 2 "
                            "subsamples the feature map, which is not an identity"])
            elif len(nblock.layers) < len(mblock.layers):
                raise MNError(
                    f"stage {s} of member '{n.name}' has {len(nblock.layers)} units but the "
                    f"MotherNet '{m.name}' has {len(mblock.layers)}: a member cannot lose units",
                    nblock.span, hint="hatch members from a MotherNet built from their own cluster")
            elif w < mblock.layers[0].filters:
                raise MNError(
                    f"stage {s} of member '{n.name}' is {w} wide but the MotherNet '{m.name}' "
                    f"is {mblock.layers[0].filters} wide there: a member cannot be narrower",
                    nblock.span, hint="hatch members from a MotherNet built from their own cluster")
            for u, nl in enumerate(nblock.layers, start=1):
                p = f"block{s}.unit{u}"
                stride = 2 if (s > 1 and u == 1) else 1
                nproj = stride != 1 or width != w
                if mblock is not None and u <= len(mblock.layers):
                    ml = mblock.layers[u - 1]
                    mproj = f"{p}.shortcut.conv.weight" in self.mspecs
                    if mproj and not nproj:
                        self.begin([f"{p}: the member's identity shortcut replaces the MotherNet's "
                                    "projection"])
                    inner = _one(self.new_map(f"{p}.inner", ml.filters, w), w)
                    out = stream
                    if nproj or mproj:
                        out = _one(self.new_map(f"{p}.stream", ml.filters, w), w)
                    self.conv(f"{p}.conv1", f"{p}.conv1", inner, stream, ml.kernel, nl.kernel)
                    self.bn(f"{p}.bn1", f"{p}.bn1", inner)
                    self.conv(f"{p}.conv2", f"{p}.conv2", out, inner, ml.kernel, nl.kernel)
                    self.bn(f"{p}.bn2", f"{p}.bn2", out)
                    if nproj and mproj:
                        self.conv(f"{p}.shortcut.conv", f"{p}.shortcut.conv", out, stream, 1, 1)
                        self.bn(f"{p}.shortcut.bn", f"{p}.shortcut.bn", out)
                    elif nproj:
                        # the MotherNet's identity shortcut, as a 1x1 projection
                        self.identity(f"{p}.shortcut.conv", out, stream, 1)
                        self.bn(f"{p}.shortcut.bn", None, None, mode="identity")
                        self.exact_train = False
                    self.scope = None
                    carried = ml.filters
                else:
                    out = stream
                    if nproj:
                        out = _one(self.new_map(f"{p}.stream", carried, w), w)
                        reason = None
                        if w < carried:
                            reason = (f"{p}.shortcut: {w} channels cannot carry the MotherNet's "
                                      f"{carried}")
                        self.identity(f"{p}.shortcut.conv", out, stream, 1, reason=reason)
                        self.bn(f"{p}.shortcut.bn", None, None, mode="identity")
                        self.exact_train = False
                    # an added unit whose residual branch starts at zero: relu(x + 0) = x, x >= 0
                    self.fresh_conv(f"{p}.conv1")
                    self.bn(f"{p}.bn1", None, None, mode="fresh")
                    self.fresh_conv(f"{p}.conv2")
                    self.bn(f"{p}.bn2", None, None, mode="zero")
                stream, width = out, w
            self.scope = None
        self._head(stream, carried, nonneg=True)

    def _dense(self) -> None:
        m, n = self.mother, self.member
        layout = self._stem()
        assert m.stem is not None
        mc = m.stem.filters
        for b, nblock in enumerate(n.blocks, start=1):
            mblock = m.blocks[b - 1] if b <= len(m.blocks) else None
            mlayers = mblock.layers if mblock is not None else ()
            if len(nblock.layers) < len(mlayers):
                raise MNError(
                    f"dense block {b} of member '{n.name}' has {len(nblock.layers)} layers but "
                    f"the MotherNet '{m.name}' has {len(mlayers)}: a member cannot lose layers",
                    nblock.span, hint="hatch members from a MotherNet built from their own cluster")
            for j, nl in enumerate(nblock.layers, start=1):
                p = f"block{b}.layer{j}"
                if j <= len(mlayers):
                    ml = mlayers[j - 1]
                    if nl.filters < ml.filters:
                        raise MNError(
                            f"{p} of member '{n.name}' grows by {nl.filters} but the MotherNet "
                            f"'{m.name}' grows by {ml.filters} there: a member cannot be narrower",
                            nl.span,
                            hint="hatch members from a MotherNet built from their own cluster")
                    self.bn(f"{p}.bn", f"{p}.bn", layout)
                    out = _one(self.new_map(p, ml.filters, nl.filters), nl.filters)
                    self.conv(f"{p}.conv", f"{p}.conv", out, layout, ml.kernel, nl.kernel)
                    layout = layout + (Segment(map=out[0].map, at=mc, size=nl.filters),)
                    mc += ml.filters
                else:
                    # a new slice: every later consumer gets zero input weights for it
                    self.bn(f"{p}.bn", None, None, mode="fresh")
                    self.fresh_conv(f"{p}.conv")
                    layout = layout + (Segment(map=None, at=0, size=nl.filters),)
            if b < len(n.blocks):
                t = f"transition{b}"
                if b < len(m.blocks):
                    self.bn(f"{t}.bn", f"{t}.bn", layout)
                    self.conv(f"{t}.conv", f"{t}.conv", layout, layout, 1, 1)
                else:
                    self.begin([f"{t}: the MotherNet has no transition here; its ReLU and 2x "
                                "average pool are not an identity"])
                    self.bn(f"{t}.bn", None, None, mode="identity")
                    self.identity(f"{t}.conv", layout, layout, 1)
                    self.exact_train = False
                    self.scope = None
        self.bn("head.bn", "head.bn", layout)
        self._head(layout, mc, nonneg=True)


def plan_hatching(mother: Net, member: Net, input_shape: Sequence[int], classes: int,
                  seed: int = 0) -> HatchTable:
    """The hatching table that turns `mother` into `member`; deterministic for a seed.

    Raises `MNError` when the member cannot be produced at all (a MotherNet wider or deeper
    than the member at some position, or a different family). Where a transform exists but
    is not function-preserving (extra blocks, narrow identity layers, cropped kernels), the
    table says `exact=False` and gives the reasons.

    >>> from mncompile.ir import Linear, Net
    >>> t = plan_hatching(Net(name="m", family="mlp", dense=(Linear(width=4),)),
    ...                   Net(name="n", family="mlp", dense=(Linear(width=6), Linear(width=8))),
    ...                   (5,), 2, seed=1)
    >>> t.exact, [e.key for e in t.entries][:3]
    (True, ['head.fc1.bias', 'head.fc1.weight', 'head.fc2.bias'])
    >>> t.maps["head.fc1"].old, t.maps["head.fc1"].new
    (4, 6)
    """
    p = _Planner(mother, member, tuple(input_shape), classes, seed)
    p.plan()
    mother_tensors = {k: s.shape for k, s in p.mspecs.items()}
    used = {e.source for e in p.entries.values() if e.source is not None}
    unknown = used - set(mother_tensors)
    assert not unknown, f"hatch planner refers to MotherNet tensors that do not exist: {unknown}"
    reasons = tuple(dict.fromkeys(p.reasons))
    exact = not reasons
    return HatchTable(
        member=member.name, mother=mother.name, family=member.family, input=tuple(input_shape),
        classes=classes, seed=seed, exact=exact, exact_train=exact and p.exact_train,
        reasons=reasons, maps=dict(sorted(p.maps.items())), mother_tensors=mother_tensors,
        entries=tuple(sorted(p.entries.values(), key=lambda e: e.key)),
    )
