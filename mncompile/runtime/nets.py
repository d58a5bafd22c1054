"""Modules from net descriptions: the generated models.py classes, rebuilt from data.

`build_net(description)` makes the `nn.Module` that the generated models.py class of that net
is: the same building blocks (`ConvBN`, `PlainBlock`, `ResidualUnit`, `ResidualStage`,
`DenseLayer`, `DenseBlock`, `Transition`, `Head`, as templates/blocks/ writes them), registered in
the same order, so its state_dict has the same keys, shapes and order
(docs/parameter-names.md), and the same forward pass. `mncompile.runtime.load_ensemble` uses it
to rebuild a trained ensemble without the generated folder: no file is imported.
`tests/test_ensemble_file.py` checks it against the generated classes of every example and of
random nets of every family.

>>> import torch
>>> from mncompile.formats.ensemble_file import NetDescription
>>> net = build_net(NetDescription("residual", (1, 8), 3, (3, 4), (((3, 4),), ((3, 6),)), (5,)))
>>> [k for k in net.state_dict() if "shortcut" in k][:2]
['block2.unit1.shortcut.conv.weight', 'block2.unit1.shortcut.bn.weight']
>>> net.eval()(torch.zeros(2, 1, 8)).shape
torch.Size([2, 3])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mncompile.formats.ensemble_file import NetDescription


def _conv(rank: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    return nn.Conv1d if rank == 1 else nn.Conv2d


def _bn(rank: int) -> type[nn.BatchNorm1d] | type[nn.BatchNorm2d]:
    return nn.BatchNorm1d if rank < 2 else nn.BatchNorm2d


class ConvBN(nn.Sequential):
    """Convolution ('same' padding kernel // 2, no bias) -> BatchNorm, then ReLU unless `relu=False`."""

    def __init__(self, rank: int, in_channels: int, out_channels: int, kernel: int, stride: int = 1,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = _conv(rank)(in_channels, out_channels, kernel, stride, kernel // 2, bias=False)
        self.bn = _bn(rank)(out_channels)
        if relu:
            self.relu = nn.ReLU()


class PlainBlock(nn.Sequential):
    """Conv -> BN -> ReLU layers, then a 2x max-pool. `layers` are (kernel, filters)."""

    def __init__(self, rank: int, in_channels: int, layers: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        for i, (kernel, filters) in enumerate(layers, start=1):
            self.add_module(f"layer{i}", ConvBN(rank, in_channels, filters, kernel))
            in_channels = filters
        self.pool = nn.MaxPool1d(2) if rank == 1 else nn.MaxPool2d(2)


class ResidualUnit(nn.Module):
    """Basic unit: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); a 1x1 projection shortcut
    when the unit changes the width or the resolution, the identity otherwise."""

    def __init__(self, rank: int, in_channels: int, width: int, kernel: int, stride: int) -> None:
        super().__init__()
        conv, bn = _conv(rank), _bn(rank)
        self.conv1 = conv(in_channels, width, kernel, stride, kernel // 2, bias=False)
        self.bn1 = bn(width)
        self.conv2 = conv(width, width, kernel, 1, kernel // 2, bias=False)
        self.bn2 = bn(width)
        if stride != 1 or in_channels != width:
            self.shortcut: nn.Module = ConvBN(rank, in_channels, width, 1, stride, relu=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResidualStage(nn.Sequential):
    """Residual units, given as (kernel, width); the first unit has `stride`."""

    def __init__(self, rank: int, in_channels: int, units: Sequence[tuple[int, int]], stride: int) -> None:
        super().__init__()
        for i, (kernel, width) in enumerate(units, start=1):
            unit = ResidualUnit(rank, in_channels, width, kernel, stride if i == 1 else 1)
            self.add_module(f"unit{i}", unit)
            in_channels = width


class DenseLayer(nn.Module):
    """BN -> ReLU -> conv(kernel, growth), concatenated to the layer's input."""

    def __init__(self, rank: int, in_channels: int, growth: int, kernel: int) -> None:
        super().__init__()
        self.bn = _bn(rank)(in_channels)
        self.conv = _conv(rank)(in_channels, growth, kernel, 1, kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class DenseBlock(nn.Sequential):
    """Dense layers, given as (kernel, growth); each sees every channel before it."""

    def __init__(self, rank: int, in_channels: int, layers: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        for i, (kernel, growth) in enumerate(layers, start=1):
            self.add_module(f"layer{i}", DenseLayer(rank, in_channels, growth, kernel))
            in_channels += growth


class Transition(nn.Module):
    """Between dense blocks: BN -> ReLU -> 1x1 conv (same channel count) -> 2x average pool."""

    def __init__(self, rank: int, channels: int) -> None:
        super().__init__()
        self.bn = _bn(rank)(channels)
        self.conv = _conv(rank)(channels, channels, 1, bias=False)
        self.pool = nn.AvgPool1d(2) if rank == 1 else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.bn(x))))


class Head(nn.Sequential):
    """Global average pooling (flatten with `pool=False`), hidden Linear -> ReLU layers, Linear(classes);
    a DenseNet head (`bn=True`) starts with BN -> ReLU."""

    def __init__(self, rank: int, features: int, hidden: Sequence[int], classes: int, pool: bool = True,
                 bn: bool = False) -> None:
        super().__init__()
        if bn:
            self.bn = _bn(rank)(features)
            self.relu = nn.ReLU()
        if pool:
            self.pool = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        for i, width in enumerate(hidden, start=1):
            self.add_module(f"fc{i}", nn.Linear(features, width))
            self.add_module(f"relu{i}", nn.ReLU())
            features = width
        self.out = nn.Linear(features, classes)


class Net(nn.Module):
    """One net of a description: the stem, the blocks (and transitions), the head, in that order.

    `arch` is the net's name (its models.py class's key in `MODELS`) and `description` what it
    was built from, so that an ensemble rebuilt from a file can be saved again.
    """

    def __init__(self, net: NetDescription, arch: str = "") -> None:
        super().__init__()
        self.arch = arch
        self.description = net
        self.INPUT_SHAPE = tuple(net.input)
        self.NUM_CLASSES = net.classes
        self.family = net.family
        rank = net.rank
        self.order: list[str] = []
        if net.family == "mlp":
            self.head = Head(rank, math.prod(net.input), net.dense, net.classes, pool=False)
            return
        c = net.input[0]
        if net.stem is not None:
            self.stem = ConvBN(rank, c, net.stem[1], net.stem[0])
            self.order.append("stem")
            c = net.stem[1]
        for b, layers in enumerate(net.blocks, start=1):
            block: nn.Module
            if net.family == "plain":
                block = PlainBlock(rank, c, layers)
                c = layers[-1][1]
            elif net.family == "residual":
                block = ResidualStage(rank, c, layers, stride=1 if b == 1 else 2)
                c = layers[-1][1]
            else:
                block = DenseBlock(rank, c, layers)
                c += sum(f for _, f in layers)
            self.add_module(f"block{b}", block)
            self.order.append(f"block{b}")
            if net.family == "dense" and b < len(net.blocks):
                self.add_module(f"transition{b}", Transition(rank, c))
                self.order.append(f"transition{b}")
        self.head = Head(rank, c, net.dense, net.classes, bn=net.family == "dense")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        out: torch.Tensor = self.head(x)
        return out


def build_net(net: NetDescription, arch: str = "") -> Net:
    """The module of a (checked: `formats.ensemble_file.read_net`) net description, freshly initialised.

    `arch` names it (the net's name in the spec and in plan.json).
    """
    return Net(net, arch)
