"""Shape inference, parameter and MAC counts, and the tensor list of every net, from the IR.

This module is the single source of truth for what a generated module contains: its
state_dict keys (see `docs/parameter-names.md`), their shapes, and which are trained
parameters and which are buffers. The code generator, the hatching planner and the tests
all read it, so the three cannot drift apart.

>>> from mncompile.parse import parse_text
>>> e = parse_text("ensemble e { input 40; classes 10; net a mlp { dense 32 } }")
>>> s = infer_net(e.nets[0], e.input, e.classes)
>>> s.params, s.macs
(1642, 1600)
>>> [t.name for t in s.tensors]
['head.fc1.weight', 'head.fc1.bias', 'head.out.weight', 'head.out.bias']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mncompile.diagnostics import MNError
from mncompile.ir import Block, Layer, Net

BN_TENSORS: tuple[tuple[str, Literal["param", "buffer"]], ...] = (
    ("weight", "param"),
    ("bias", "param"),
    ("running_mean", "buffer"),
    ("running_var", "buffer"),
    ("num_batches_tracked", "buffer"),
)


@dataclass(frozen=True)
class TensorSpec:
    """One state_dict entry of a generated module."""

    name: str
    shape: tuple[int, ...]
    kind: Literal["param", "buffer"]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class NetShape:
    """What shape inference learns about one net."""

    name: str
    family: str
    input: tuple[int, ...]
    classes: int
    tensors: list[TensorSpec] = field(default_factory=list)
    macs: int = 0
    #: the feature shape after the stem and after each block (and its pooling), C x spatial
    trace: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    @property
    def params(self) -> int:
        """Trainable parameters: what `sum(p.numel() for p in module.parameters())` gives."""
        return sum(t.numel for t in self.tensors if t.kind == "param")

    @property
    def layers(self) -> int:
        """Weight layers: convolutions (shortcut projections included) and linear layers."""
        return sum(
            1 for t in self.tensors if t.name.endswith(".weight") and len(t.shape) != 1
        )


class _Builder:
    def __init__(self, net: Net, input_shape: tuple[int, ...], classes: int) -> None:
        self.net = net
        self.rank = len(input_shape) - 1
        self.out = NetShape(net.name, net.family, tuple(input_shape), classes)

    def conv(self, prefix: str, cin: int, cout: int, k: int, spatial: tuple[int, ...],
             stride: int = 1) -> tuple[int, ...]:
        pad = k // 2
        out = tuple((s + 2 * pad - k) // stride + 1 for s in spatial)
        self.out.tensors.append(TensorSpec(f"{prefix}.weight", (cout, cin) + (k,) * self.rank,
                                           "param"))
        self.out.macs += cout * cin * k**self.rank * math.prod(out)
        return out

    def bn(self, prefix: str, c: int) -> None:
        for suffix, kind in BN_TENSORS:
            shape: tuple[int, ...] = () if suffix == "num_batches_tracked" else (c,)
            self.out.tensors.append(TensorSpec(f"{prefix}.{suffix}", shape, kind))

    def linear(self, prefix: str, fin: int, fout: int) -> None:
        self.out.tensors.append(TensorSpec(f"{prefix}.weight", (fout, fin), "param"))
        self.out.tensors.append(TensorSpec(f"{prefix}.bias", (fout,), "param"))
        self.out.macs += fin * fout

    def head(self, features: int) -> None:
        for i, d in enumerate(self.net.dense, start=1):
            self.linear(f"head.fc{i}", features, d.width)
            features = d.width
        self.linear("head.out", features, self.out.classes)

    def pool(self, block: Block, index: int, spatial: tuple[int, ...], what: str) -> tuple[int, ...]:
        out = tuple(s // 2 for s in spatial)
        if min(out) < 1:
            shown = "x".join(map(str, spatial))
            raise MNError(
                f"pooling shrinks the input below 1: block {index} of net '{self.net.name}' "
                f"gets {shown} and its {what} would give "
                + "x".join(map(str, out)),
                block.span,
                hint=f"with input {'x'.join(map(str, self.out.input))} this net can have at "
                f"most {max_pools(self.out.input)} pooling steps",
            )
        return out

    def build(self) -> NetShape:
        net, shape = self.net, self.out.input
        if net.family == "mlp":
            self.head(math.prod(shape))
            return self.out
        channels, spatial = shape[0], tuple(shape[1:])
        getattr(self, f"_{net.family}")(channels, spatial)
        return self.out

    def _plain(self, c: int, spatial: tuple[int, ...]) -> None:
        for b, block in enumerate(self.net.blocks, start=1):
            for j, layer in enumerate(block.layers, start=1):
                spatial = self.conv(f"block{b}.layer{j}.conv", c, layer.filters, layer.kernel,
                                    spatial)
                self.bn(f"block{b}.layer{j}.bn", layer.filters)
                c = layer.filters
            spatial = self.pool(block, b, spatial, "2x max-pool")
            self.out.trace.append((f"block{b}", (c,) + spatial))
        self.head(c)

    def _stem(self, c: int, spatial: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        stem = self.net.stem
        assert stem is not None
        spatial = self.conv("stem.conv", c, stem.filters, stem.kernel, spatial)
        self.bn("stem.bn", stem.filters)
        self.out.trace.append(("stem", (stem.filters,) + spatial))
        return stem.filters, spatial

    def _residual(self, c: int, spatial: tuple[int, ...]) -> None:
        c, spatial = self._stem(c, spatial)
        for b, block in enumerate(self.net.blocks, start=1):
            for u, layer in enumerate(block.layers, start=1):
                stride = 2 if (b > 1 and u == 1) else 1
                w, p = layer.filters, f"block{b}.unit{u}"
                inner = self.conv(f"{p}.conv1", c, w, layer.kernel, spatial, stride)
                self.bn(f"{p}.bn1", w)
                self.conv(f"{p}.conv2", w, w, layer.kernel, inner)
                self.bn(f"{p}.bn2", w)
                if stride != 1 or c != w:
                    self.conv(f"{p}.shortcut.conv", c, w, 1, spatial, stride)
                    self.bn(f"{p}.shortcut.bn", w)
                c, spatial = w, inner
            self.out.trace.append((f"block{b}", (c,) + spatial))
        self.head(c)

    def _dense(self, c: int, spatial: tuple[int, ...]) -> None:
        c, spatial = self._stem(c, spatial)
        last = len(self.net.blocks)
        for b, block in enumerate(self.net.blocks, start=1):
            for j, layer in enumerate(block.layers, start=1):
                self.bn(f"block{b}.layer{j}.bn", c)
                self.conv(f"block{b}.layer{j}.conv", c, layer.filters, layer.kernel, spatial)
                c += layer.filters
            if b < last:
                self.bn(f"transition{b}.bn", c)
                self.conv(f"transition{b}.conv", c, c, 1, spatial)
                spatial = self.pool(block, b, spatial, "transition's 2x average pool")
            self.out.trace.append((f"block{b}", (c,) + spatial))
        self.bn("head.bn", c)
        self.head(c)


def max_pools(input_shape: tuple[int, ...]) -> int:
    """How many 2x poolings an input of this shape survives."""
    smallest = min(input_shape[1:]) if len(input_shape) > 1 else 1
    return int(math.floor(math.log2(smallest))) if smallest >= 1 else 0


def infer_net(net: Net, input_shape: tuple[int, ...], classes: int) -> NetShape:
    """Infer shapes through `net`; raises `MNError` where pooling empties the feature map."""
    key = (id(net), tuple(input_shape), classes)
    hit = _SHAPES.get(key)
    if hit is None or hit[0] is not net:
        shape = _Builder(net, tuple(input_shape), classes).build()
        if len(_SHAPES) >= _SHAPES_KEPT:
            _SHAPES.pop(next(iter(_SHAPES)))
        hit = _SHAPES[key] = (net, shape)
    s = hit[1]
    # a copy: the caller may change its lists, never the cached ones
    return NetShape(s.name, s.family, s.input, s.classes, list(s.tensors), s.macs, list(s.trace))


#: How many nets' shapes `infer_net` keeps. The passes, the emitter and the commands each ask
#: for every net's shapes (a compile asks about eight times per net); nets are frozen, so a
#: net's shapes are those of the object itself, which the cache holds so that its id stays its own.
_SHAPES_KEPT = 8192
_SHAPES: dict[tuple[int, tuple[int, ...], int], tuple[Net, NetShape]] = {}


def layer_count(net: Net) -> int:
    """The net's depth as its family counts it: ResNet-20 is 20, DenseNet-40 is 40, VGG-16 is 16.

    Weight layers on the main path: convolutions (the stem; two per residual unit; one per plain
    or dense layer and per transition) plus the linear layers (the output included). Shortcut
    projections are not counted, as in the papers' names.
    """
    stem = 1 if net.stem is not None else 0
    per_layer = 2 if net.family == "residual" else 1
    convs = sum(len(b.layers) for b in net.blocks) * per_layer
    transitions = max(0, len(net.blocks) - 1) if net.family == "dense" else 0
    return stem + convs + transitions + len(net.dense) + 1


def same_layer(a: Layer, b: Layer) -> bool:
    return a.kernel == b.kernel and a.filters == b.filters
