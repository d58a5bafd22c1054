"""A Shared-MotherNet built from its data: the generated shared.py class, without the file.

`GenericSharedNet(description)` takes a `formats.ensemble_file.SharedDescription` (the MOTHER,
MEMBERS, INPUT_SHAPE, NUM_CLASSES, GROUPS and STEPS of a class of a generated shared.py) and is
that class: the same steps (`SharedBlock`, `SharedStep`, `SharedAdd`, as templates/shared.py.j2
writes them), the same state_dict keys and shapes, the same forward pass, and the same data as
attributes, so `runtime.shared.consolidate`, `effective_params` and `shared_member` work on it
as on the generated one. `mncompile.runtime.load_ensemble` builds Shared-MotherNets with it;
`tests/test_ensemble_file.py` checks it against the generated classes.

>>> import torch
>>> from mncompile.formats.ensemble_file import SharedDescription
>>> part = {"member": "a", "key": "head.out", "bn": None, "pre": None, "rows": (1,), "cols": (0,),
...         "kernel": None}
>>> step = {"op": "linear", "name": "head.out", "kernel": None, "stride": 1, "pre": None, "bn": False,
...         "relu": False, "bias": True, "reads": (0,), "makes": (1,), "carries": (), "blocks": ((1,),),
...         "parts": (part,)}
>>> net = GenericSharedNet(SharedDescription("m", ("a",), (4,), 2, {0: (None, 4), 1: ("a", 2)},
...                                          ({"op": "flatten"}, step)))
>>> net.MEMBERS, net(torch.zeros(3, 4)).shape
(('a',), torch.Size([3, 1, 2]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mncompile.formats.ensemble_file import SharedDescription

Groups = Mapping[int, tuple[Any, int]]


def _channels(groups: Groups, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """The channel range [start, stop) of each group id when `ids` are laid out in order."""
    ranges, at = {}, 0
    for g in ids:
        ranges[g] = (at, at + groups[g][1])
        at += groups[g][1]
    return ranges


def _zero_masked(block: SharedBlock, incompatible_keys: object) -> None:
    with torch.no_grad():
        block.weight.mul_(block.mask)


def _indices(groups: Groups, live: Sequence[int], ids: Sequence[int],
             whole: bool = True) -> torch.Tensor | None:
    """The channels of groups `ids` in a tensor laid out as `live`.

    None when there are none, or (with `whole`) when they are all of it, in order.
    """
    at = _channels(groups, live)
    index = [c for g in ids for c in range(*at[g])]
    if not index or (whole and index == list(range(sum(groups[g][1] for g in live)))):
        return None
    return torch.tensor(index, dtype=torch.long)


class SharedBlock(nn.Module):
    """One weight block of a layer step: the rows of some made groups, over only the groups they read.

    The weight is masked to the members' structure (masked entries are zero and stay zero).
    """

    index: torch.Tensor | None
    mask: torch.Tensor

    def __init__(self, rank: int, step: Mapping[str, Any], groups: Groups, rows: tuple[int, ...]) -> None:
        super().__init__()
        writers = [p for p in step["parts"] if set(p["rows"]) & set(rows)]
        cols = tuple(g for g in step["reads"] if any(g in p["cols"] for p in writers))
        # the groups of its rows and columns: what mncompile.runtime.consolidate fills
        self.rows, self.cols = rows, cols
        self.register_buffer("index", _indices(groups, step["reads"], cols), persistent=False)
        self.rank = rank if step["kernel"] is not None else 0
        self.kernel = max(p["kernel"] for p in writers) if self.rank else 1
        row_at, col_at = _channels(groups, rows), _channels(groups, cols)
        n_out, n_in = sum(groups[g][1] for g in rows), sum(groups[g][1] for g in cols)
        shape = (n_out, n_in) + (self.kernel,) * self.rank
        mask = torch.zeros(shape)
        for p in writers:
            k = p["kernel"] or 1
            lo = (self.kernel - k) // 2
            taps = (slice(lo, lo + k),) * self.rank
            for r in p["rows"]:
                for c in p["cols"]:
                    if r in row_at:
                        mask[(slice(*row_at[r]), slice(*col_at[c]), *taps)] = 1.0
        self.register_buffer("mask", mask, persistent=False)
        weight = torch.empty(shape)
        nn.init.kaiming_normal_(weight)
        self.weight = nn.Parameter(weight * mask)
        # a loaded weight keeps the structure: masked entries are zero
        self.register_load_state_dict_post_hook(_zero_masked)

    def forward(self, h: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
        if self.index is not None:
            h = h.index_select(1, self.index)
        # training keeps masked entries at zero (no gradient); in eval they already are zero
        w = self.weight * self.mask if self.training else self.weight
        if self.rank == 2:
            return F.conv2d(h, w, bias, stride, self.kernel // 2)
        if self.rank == 1:
            return F.conv1d(h, w, bias, stride, self.kernel // 2)
        return F.linear(h, w, bias)


class SharedStep(nn.Module):
    """One layer position: gather the live groups it reads, `pre` (ReLU or BN + ReLU), the weight
    blocks, BN and ReLU where the members have them, then the groups it carries appended."""

    gather: torch.Tensor | None
    carry: torch.Tensor | None

    def __init__(self, rank: int, step: Mapping[str, Any], groups: Groups, live: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("gather", _indices(groups, live, step["reads"]), persistent=False)
        self.register_buffer("carry", _indices(groups, live, step["carries"], whole=False), persistent=False)
        n_in = sum(groups[g][1] for g in step["reads"])
        n_out = sum(groups[g][1] for g in step["makes"])
        bn = nn.BatchNorm1d if rank < 2 else nn.BatchNorm2d
        self.pre = bn(n_in) if step["pre"] == "bn_relu" else None
        self.pre_relu = step["pre"] is not None
        self.stride = step["stride"]
        self.blocks = nn.ModuleList(SharedBlock(rank, step, groups, tuple(rows)) for rows in step["blocks"])
        self.spans: list[tuple[int, int]] = []
        at = 0
        for block in self.blocks:
            rows = int(block.get_parameter("weight").shape[0])
            self.spans.append((at, at + rows))
            at += rows
        self.bias = nn.Parameter(torch.zeros(n_out)) if step["bias"] else None
        self.bn = bn(n_out) if step["bn"] else None
        self.relu = bool(step["relu"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.gather is None else x.index_select(1, self.gather)
        if self.pre is not None:
            y = self.pre(y)
        if self.pre_relu:
            y = F.relu(y)
        if len(self.blocks):
            outs = [block(y, None if self.bias is None else self.bias[lo:hi], self.stride)
                    for block, (lo, hi) in zip(self.blocks, self.spans, strict=True)]
            y = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        if self.bn is not None:
            y = self.bn(y)
        if self.relu:
            y = F.relu(y)
        if self.carry is not None:
            y = torch.cat([y, x.index_select(1, self.carry)], 1)
        return y


class SharedAdd(nn.Module):
    """Residual sums: each made group is a weighted sum of live groups, then ReLU; carries appended."""

    carry: torch.Tensor | None

    def __init__(self, step: Mapping[str, Any], groups: Groups, live: tuple[int, ...]) -> None:
        super().__init__()
        at = _channels(groups, live)
        self.sums = [[(at[g], w) for g, w in terms] for _, terms in step["sums"]]
        self.register_buffer("carry", _indices(groups, live, step["carries"], whole=False), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for terms in self.sums:
            total = None
            for (lo, hi), w in terms:
                term = x[:, lo:hi] if w == 1.0 else x[:, lo:hi] * w
                total = term if total is None else total + term
            assert total is not None
            outs.append(total)
        if self.carry is not None:
            outs.append(x.index_select(1, self.carry))
        return torch.cat([F.relu(o) for o in outs[:len(self.sums)]] + outs[len(self.sums):], 1)


class GenericSharedNet(nn.Module):
    """A Shared-MotherNet from its description (checked: `formats.ensemble_file.read_shared`).

    Has the generated class's data as attributes (MOTHER, MEMBERS, INPUT_SHAPE, NUM_CLASSES,
    GROUPS, STEPS); forward returns [batch, K, classes], member k's logits at [:, k].
    """

    def __init__(self, shared: SharedDescription) -> None:
        super().__init__()
        self.MOTHER = shared.mother
        self.MEMBERS = tuple(shared.members)
        self.INPUT_SHAPE = tuple(shared.input)
        self.NUM_CLASSES = shared.classes
        self.GROUPS = dict(shared.groups)
        self.STEPS = tuple(shared.steps)
        rank = len(self.INPUT_SHAPE) - 1
        self.steps = nn.ModuleList()
        live: tuple[int, ...] = (0,)
        for step in self.STEPS:
            op = step["op"]
            if op in ("conv", "linear", "norm"):
                self.steps.append(SharedStep(rank, step, self.GROUPS, live))
            elif op == "add":
                self.steps.append(SharedAdd(step, self.GROUPS, live))
            elif op == "pool":
                self.steps.append(nn.MaxPool1d(2) if rank == 1 else nn.MaxPool2d(2))
            elif op == "avgpool":
                self.steps.append(nn.AvgPool1d(2) if rank == 1 else nn.AvgPool2d(2))
            elif op == "gap":
                pool = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool2d(1)
                self.steps.append(nn.Sequential(pool, nn.Flatten()))
            else:
                self.steps.append(nn.Flatten())
            if op in ("conv", "linear", "norm", "add"):
                live = tuple(step["makes"]) + tuple(step["carries"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x.unflatten(1, (len(self.MEMBERS), self.NUM_CLASSES))
