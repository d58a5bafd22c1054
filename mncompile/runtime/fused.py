"""Fused lockstep groups: K nets of one family trained as one module, one step for all.

`fit(..., fuse=True)` packs the plain jobs of a lockstep phase that are nets of the language
(a generated models.py class or a `runtime.nets.Net`, checked against their description) into
`FusedGroup`s, one per (family, input, classes, number of blocks), and runs each group's
forward, backward and SGD step once per batch instead of once per member:

- **stacked weights**: every layer position holds its members' weights as one tensor, the
  convolutions run as one grouped convolution and the linear layers as one batched matmul;
- **grouping by shape, padding with masks**: at each layer position the members of one shape run
  as one op; members of other shapes run as ops of their own, or join one padded to the
  largest widths and kernel (a kernel in the centre of the larger one, as Net2Net widens it)
  while the padded work stays within `WASTE` of their own (1 on the CPU: equal shapes only).
  Where an op pads, a constant mask multiplies its weights in the forward pass, so padded
  weights, their gradients, their momentum and the padded activations stay exactly zero: each
  member computes what it computes alone. On the CPU only plain and residual nets of 1-D
  inputs are fused (`WASTE`: the others measured slower);
- **layers only some members have** (a deeper block, one more hidden layer) run on those
  members' slice only; the others pass through unchanged, as if the layer were absent;
- **per-member BatchNorm**: one BN over the K x C channels is K separate BNs; the running
  statistics are stacked too;
- **per-member SGD**: learning rate, momentum and weight decay are vectors over the members,
  and each member's loss is its own cross-entropy (the group's loss is their sum, whose gradient
  in each member's weights is that member's own);
- **batches**: one shared batch for all (the first layer then runs as one ordinary convolution
  with K x C out-channels), or one batch per member (`order` 'member'), stacked.

Nets with a different number of blocks (a different resolution path) go to groups of their own;
a group of one trains unfused. `pack` copies the members' weights, BN statistics and momentum
buffers in at the start of each epoch, `unpack` copies them back at its end, so checkpoints,
validation, early stopping and `--resume` see the members exactly as unfused training leaves
them; a member that stops or diverges is simply not packed into the next epoch's group.

The exactness of one fused step against K unfused ones, for random nets of every family, is
tests/test_fused.py's property.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mncompile.formats.ensemble_file import NetDescription

__all__ = [
    "FusedGroup",
    "describe_module",
    "fusable",
    "fuses_on",
    "group_key",
    "groups_of",
    "member_correct",
    "member_losses",
]

_BN_DEFAULTS = {"eps": 1e-5, "momentum": 0.1}

#: how much padding a layer position may add, by device and (on the CPU) by input rank and family
#: (`_partition`), measured with bench/fused.py. Members of one shape run as one op where the
#: bound is 1 or more: on the CPU for plain and residual nets of 1-D inputs (compute-bound, so
#: padded multiply-accumulates cost their full price and nothing else merges; equal shapes fused
#: ran 0.93-1.21x unfused, 1.02x at the median; every member padded to the largest 0.63-0.84x).
#: From 0 to 1 every member runs ops of its own. Below 0 a group is not fused at all, on the CPU:
#: 2-D nets (`cpu-2d`), where stacked 3x32x32 activations outgrew the caches (grouped: 0.65x
#: unfused on v5.mnet; a part per member still 0.79-0.88x); DenseNets (`cpu-dense`: 0.81-0.97x
#: on d5-1d.mnet, a part per member too: most likely its growing concatenations of all members
#: at once outgrow the caches); MLPs (`cpu-mlp`: 0.90-0.99x on mlp.mnet, steps too small to gain). On
#: CUDA (launch-bound for small nets) parts merge while the padded work stays within 1.5x the
#: members' own (a rule, not yet measured on a GPU).
WASTE = {"cpu": 1.0, "cpu-2d": -1.0, "cpu-dense": -1.0, "cpu-mlp": -1.0, "cuda": 1.5}


def waste_for(device: torch.device, rank: int, family: str) -> float:
    """The padding a fused group of `family` nets of input `rank` may add on `device` (`WASTE`);
    below 0, such a group trains unfused there."""
    if device.type == "cpu":
        if rank >= 2:
            return WASTE["cpu-2d"]
        return WASTE.get(f"cpu-{family}", WASTE["cpu"])
    return WASTE.get(device.type, 1.0)


def unfused_why(device: torch.device, rank: int, family: str) -> str:
    """Why `waste_for` keeps such a group unfused, in words."""
    what = f"nets of {rank}-D inputs" if device.type == "cpu" and rank >= 2 else f"{family} nets"
    return f"on the {device.type.upper()}, {what} were measured faster unfused: runtime/fused.py, WASTE"


def fuses_on(device: torch.device, descs: Sequence[NetDescription]) -> bool:
    """Whether any two of `descs` would train as a fused group on `device` (`groups_of`, `WASTE`)."""
    groups = groups_of(dict(enumerate(descs)))
    return any(waste_for(device, descs[g[0]].rank, descs[g[0]].family) >= 0 for g in groups)


def describe_module(
    model: nn.Module, lookup: Callable[[nn.Module], NetDescription | None] | None = None
) -> NetDescription | None:
    """The description of a net of the language, or None for any other module.

    A `runtime.nets.Net` carries its own; `lookup` gives that of a generated models.py class (the
    run's plan). The description is only returned when the module's tensors are exactly the
    ones it names (keys and shapes) and its BatchNorms are the defaults the fused path assumes.
    """
    from mncompile.formats.ensemble_file import net_tensors
    from mncompile.runtime.nets import Net

    desc = model.description if isinstance(model, Net) else (lookup(model) if lookup is not None else None)
    if desc is None or desc.family not in ("plain", "residual", "dense", "mlp"):
        return None
    try:
        want = {name: tuple(shape) for name, shape in net_tensors(desc).items()}
    except Exception:  # a description the cost model rejects is not fused
        return None
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if want != have:
        return None
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if (
                m.eps != _BN_DEFAULTS["eps"]
                or m.momentum != _BN_DEFAULTS["momentum"]
                or not m.affine
                or not m.track_running_stats
            ):
                return None
        elif isinstance(m, nn.Dropout):
            return None
    if any(k % 2 == 0 for block in desc.blocks for k, _ in block) or (
        desc.stem is not None and desc.stem[0] % 2 == 0
    ):
        return None
    return desc


def group_key(desc: NetDescription) -> tuple[Any, ...]:
    """Nets of one key can be fused: one family, input, class count and number of blocks."""
    return (desc.family, tuple(desc.input), desc.classes, len(desc.blocks), desc.stem is not None)


def fusable(job: Any) -> bool:
    """Whether a job trains as a plain net could in a fused group: no hook of its own."""
    return bool(job.plain) and job.heads is None


# ----------------------------------------------------------------------------- layouts

Index = tuple[Any, ...]


@dataclass
class _Placement:
    """Member `member`'s tensor `key` lies at `index` of the fused tensor's slot `slot`."""

    tensor: str
    slot: int
    member: int
    key: str
    index: Index


def _where(pos: Sequence[int]) -> slice | torch.Tensor:
    """An index for channel positions: a slice when they are a prefix, else an index tensor."""
    if list(pos) == list(range(len(pos))):
        return slice(0, len(pos))
    return torch.tensor(list(pos), dtype=torch.long)


class _Op(nn.Module):
    """A fused layer over the members `idx` (indices into the group) with its placements."""

    slot_members: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.placements: list[_Placement] = []
        self.masked: dict[str, str] = {}  # parameter -> its mask buffer

    def set_members(self, members: Sequence[int]) -> None:
        """Slot s of the stacked tensors is group member `members[s]`."""
        self.register_buffer("slot_members", torch.tensor(list(members), dtype=torch.long), persistent=False)

    def masked_param(self, name: str) -> torch.Tensor:
        w: torch.Tensor = getattr(self, name)
        mask = self.masked.get(name)
        return w * getattr(self, mask) if mask is not None else w


class _Conv(_Op):
    """Grouped convolution: member s maps its channels at `in_pos[s]` to its first `outs[s]`."""

    weight_mask: torch.Tensor

    def __init__(
        self,
        rank: int,
        width_in: int,
        in_pos: Sequence[Sequence[int]],
        outs: Sequence[int],
        kernels: Sequence[int],
        stride: int,
        keys: Sequence[str | None],
        members: Sequence[int],
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        self.rank, self.stride, self.shared_input = rank, stride, shared_input
        self.n = len(outs)
        self.out_width = max(outs)
        self.k = max(kernels)
        taps = (self.k,) * rank
        shape = (self.n, self.out_width, width_in, *taps)
        self.set_members(members)
        self.weight = nn.Parameter(torch.zeros(shape))
        # a mask only where some member's weights do not fill the stacked tensor
        pads = any(
            out != self.out_width or k != self.k or list(pos) != list(range(width_in))
            for pos, out, k in zip(in_pos, outs, kernels, strict=True)
        )
        if pads:
            self.register_buffer("weight_mask", torch.zeros(shape), persistent=False)
            self.masked["weight"] = "weight_mask"
        for s, (pos, out, k, key, m) in enumerate(zip(in_pos, outs, kernels, keys, members, strict=True)):
            off = (self.k - k) // 2
            index = (slice(0, out), _where(pos), *([slice(off, off + k)] * rank))
            if pads:
                self.weight_mask[s][index] = 1.0
            if key is not None:
                self.placements.append(_Placement("weight", s, m, key, index))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_param("weight")
        conv = F.conv1d if self.rank == 1 else F.conv2d
        if self.shared_input:  # x [N, C, *sp]: one ordinary convolution with n x out channels
            y = conv(x, w.flatten(0, 1), None, self.stride, self.k // 2)
        else:  # x [N, n, C, *sp]: one grouped convolution
            y = conv(x.flatten(1, 2), w.flatten(0, 1), None, self.stride, self.k // 2, 1, self.n)
        return y.unflatten(1, (self.n, self.out_width))


class _BN(_Op):
    """Per-member BatchNorm over `width` channels, member s's at `pos[s]`."""

    running_mean: torch.Tensor
    running_var: torch.Tensor
    mask: torch.Tensor

    def __init__(
        self, width: int, pos: Sequence[Sequence[int]], keys: Sequence[str], members: Sequence[int]
    ) -> None:
        super().__init__()
        n = len(pos)
        self.width = width
        self.set_members(members)
        self.weight = nn.Parameter(torch.zeros(n, width))
        self.bias = nn.Parameter(torch.zeros(n, width))
        self.register_buffer("running_mean", torch.zeros(n, width), persistent=False)
        self.register_buffer("running_var", torch.ones(n, width), persistent=False)
        pads = any(list(p) != list(range(width)) for p in pos)
        if pads:
            self.register_buffer("mask", torch.zeros(n, width), persistent=False)
            self.masked.update(weight="mask", bias="mask")
        for s, (p, key, m) in enumerate(zip(pos, keys, members, strict=True)):
            index = (_where(p),)
            if pads:
                self.mask[s][index] = 1.0
            for t in ("weight", "bias", "running_mean", "running_var"):
                self.placements.append(_Placement(t, s, m, f"{key}.{t}", index))
        self.bn_keys = [(m, f"{key}.num_batches_tracked") for key, m in zip(keys, members, strict=True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, n, C, *sp]
        y = F.batch_norm(
            x.flatten(1, 2),
            self.running_mean.view(-1),
            self.running_var.view(-1),
            self.masked_param("weight").flatten(),
            self.masked_param("bias").flatten(),
            self.training,
            _BN_DEFAULTS["momentum"],
            _BN_DEFAULTS["eps"],
        )
        return y.unflatten(1, (x.shape[1], x.shape[2]))


class _Linear(_Op):
    """Batched linear layers: member s maps its features at `in_pos[s]` to `outs[s]` outputs."""

    weight_mask: torch.Tensor
    bias_mask: torch.Tensor

    def __init__(
        self,
        width_in: int,
        in_pos: Sequence[Sequence[int]],
        outs: Sequence[int],
        key: Sequence[str],
        members: Sequence[int],
        shared_input: bool = False,
    ) -> None:
        super().__init__()
        self.n, self.out_width, self.shared_input = len(outs), max(outs), shared_input
        self.set_members(members)
        self.weight = nn.Parameter(torch.zeros(self.n, self.out_width, width_in))
        self.bias = nn.Parameter(torch.zeros(self.n, self.out_width))
        pads = any(
            out != self.out_width or list(pos) != list(range(width_in))
            for pos, out in zip(in_pos, outs, strict=True)
        )
        pads_out = any(out != self.out_width for out in outs)  # the bias pads only then
        if pads:
            self.register_buffer(
                "weight_mask", torch.zeros(self.n, self.out_width, width_in), persistent=False
            )
            self.masked["weight"] = "weight_mask"
        if pads_out:
            self.register_buffer("bias_mask", torch.zeros(self.n, self.out_width), persistent=False)
            self.masked["bias"] = "bias_mask"
        for s, (pos, out, k, m) in enumerate(zip(in_pos, outs, key, members, strict=True)):
            wi, bi = (slice(0, out), _where(pos)), (slice(0, out),)
            if pads:
                self.weight_mask[s][wi] = 1.0
            if pads_out:
                self.bias_mask[s][bi] = 1.0
            self.placements += [
                _Placement("weight", s, m, f"{k}.weight", wi),
                _Placement("bias", s, m, f"{k}.bias", bi),
            ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.masked_param("weight"), self.masked_param("bias")
        if self.shared_input:  # x [N, F]
            return F.linear(x, w.flatten(0, 1), b.flatten()).unflatten(1, (self.n, self.out_width))
        # x [N, n, F] -> [n, N, F] @ [n, F, out] + [n, 1, out]
        y = torch.baddbmm(b.unsqueeze(1), x.transpose(0, 1), w.transpose(1, 2))
        return y.transpose(0, 1)


def _fit_width(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [N, n, C, ...] with its channel dimension cut or zero-padded to `width`."""
    c = x.shape[2]
    if c == width:
        return x
    if c > width:
        return x[:, :, :width]
    pad = [0, 0] * (x.dim() - 3) + [0, width - c]
    return F.pad(x, pad)


Segments = list[torch.Tensor]
Plan = list[tuple[int, torch.Tensor | None]]


def _gather(segs: Segments, plan: Plan) -> torch.Tensor:
    """Members from the segments (each [N, n_j, C_j, ...]), padded to one width, as one tensor."""
    pieces = [segs[j] if idx is None else segs[j].index_select(1, idx) for j, idx in plan]
    if len(pieces) == 1:
        return pieces[0]
    width = max(t.shape[2] for t in pieces)
    return torch.cat([_fit_width(t, width) for t in pieces], 1)


class _Position(nn.Module):
    """One layer position over the group's segments (the activations of parts of its members).

    Each part gathers its members from the segments they are in (no copy when a part is one
    segment as it is), cuts the channels to its input width where given, and runs its op; its
    output is a new segment. The members the position does not cover pass through as they are.
    With `shared`, every part takes the shared batch as it is.
    """

    def __init__(
        self, parts: Sequence[tuple[Plan, nn.Module, int | None]], rest: Sequence[Plan], shared: bool
    ) -> None:
        super().__init__()
        self.inner = nn.ModuleList([op for _, op, _ in parts])
        self.cuts = [cut for _, _, cut in parts]
        self.shared = shared
        # the plans keep buffer names, so that the index tensors move with the module
        self.plans: list[list[tuple[int, str | None]]] = []
        for j, plan in enumerate([*(plan for plan, _, _ in parts), *rest]):
            named: list[tuple[int, str | None]] = []
            for n, (seg, idx) in enumerate(plan):
                name = None
                if idx is not None:
                    name = f"index{j}_{n}"
                    self.register_buffer(name, idx, persistent=False)
                named.append((seg, name))
            self.plans.append(named)

    def _plan(self, j: int) -> Plan:
        return [(seg, None if name is None else getattr(self, name)) for seg, name in self.plans[j]]

    def forward(self, segs: Segments | torch.Tensor) -> Segments:
        out = []
        for j, (op, cut) in enumerate(zip(self.inner, self.cuts, strict=True)):
            if self.shared:
                assert isinstance(segs, torch.Tensor)
                out.append(op(segs))
                continue
            assert isinstance(segs, list)
            x = _gather(segs, self._plan(j))
            if cut is not None and cut < x.shape[2]:
                x = x[:, :, :cut]
            out.append(op(x))
        for j in range(len(self.inner), len(self.plans)):
            assert isinstance(segs, list)
            out.append(_gather(segs, self._plan(j)))
        return out


class _Each(nn.Module):
    """An op without weights (a pooling) on every segment."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, segs: Segments) -> Segments:
        return [self.op(t) for t in segs]


class _Out(nn.Module):
    """The segments' logits ([N, n_j, classes] each) as [N, K, classes] in member order."""

    inverse: torch.Tensor

    def __init__(self, segments: Sequence[Sequence[int]]) -> None:
        super().__init__()
        order = [i for seg in segments for i in seg]
        self.single = order == list(range(len(order)))
        self.register_buffer(
            "inverse",
            torch.tensor([order.index(i) for i in range(len(order))], dtype=torch.long),
            persistent=False,
        )

    def forward(self, segs: Segments) -> torch.Tensor:
        out = segs[0] if len(segs) == 1 else torch.cat(segs, 1)
        return out if self.single else out.index_select(1, self.inverse)


def _partition(
    shapes: Sequence[tuple[int, ...]], cost: Callable[[tuple[int, ...]], float], waste: float
) -> list[list[int]]:
    """The members of one position (by their index in `shapes`) in parts that run as one op each.

    Members of one shape always share a part; parts merge (largest first) while the padded cost
    (members x the cost of the elementwise largest shape) stays within `waste` x their own: 1
    fuses equal shapes only, infinity pads every member to the position's largest, and below 1
    every member is a part of its own.
    """
    if waste < 1:  # (below 0 the group is not fused at all: fit never builds it)
        return [[s] for s in range(len(shapes))]
    by: dict[tuple[int, ...], list[int]] = {}
    for s, shape in enumerate(shapes):
        by.setdefault(shape, []).append(s)
    merged: list[tuple[list[int], tuple[int, ...], float]] = []
    for shape, members in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[1][0])):
        own = cost(shape) * len(members)
        for j, (ms, big, real) in enumerate(merged):
            wider = tuple(max(u, v) for u, v in zip(big, shape, strict=True))
            if (len(ms) + len(members)) * cost(wider) <= waste * (real + own):
                merged[j] = (ms + members, wider, real + own)
                break
        else:
            merged.append((list(members), shape, own))
    return [sorted(ms) for ms, _, _ in merged]


class _ConvBN(nn.Module):
    """conv -> bn (-> relu): a plain layer, a stem, a residual projection shortcut."""

    def __init__(self, conv: nn.Module, bn: _BN, relu: bool = True) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = conv, bn, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


class _Residual(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut a projection for `proj`."""

    proj: torch.Tensor
    ident: torch.Tensor
    inverse: torch.Tensor

    def __init__(
        self,
        main1: _ConvBN,
        main2: _ConvBN,
        shortcut: _ConvBN | None,
        proj: Sequence[int],
        n: int,
        width: int,
    ) -> None:
        super().__init__()
        self.main1, self.main2, self.shortcut, self.width = main1, main2, shortcut, width
        ident = [s for s in range(n) if s not in set(proj)]
        self.all_proj, self.none_proj = len(ident) == 0, len(proj) == 0
        order = list(proj) + ident
        self.register_buffer("proj", torch.tensor(list(proj), dtype=torch.long), persistent=False)
        self.register_buffer("ident", torch.tensor(ident, dtype=torch.long), persistent=False)
        self.register_buffer(
            "inverse", torch.tensor([order.index(s) for s in range(n)], dtype=torch.long), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _fit_width(self.main2(self.main1(x)), self.width)
        if self.none_proj:
            sc = _fit_width(x, self.width)
        else:
            assert self.shortcut is not None
            if self.all_proj:
                sc = _fit_width(self.shortcut(x), self.width)
            else:
                p = _fit_width(self.shortcut(x.index_select(1, self.proj)), self.width)
                i = _fit_width(x.index_select(1, self.ident), self.width)
                sc = torch.cat([p, i], 1).index_select(1, self.inverse)
        return F.relu(out + sc)


class _DenseLayer(nn.Module):
    """cat([x, conv(relu(bn(x)))], channels): the new channels go after the `width_in` old ones."""

    def __init__(self, bn: _BN, conv: _Conv) -> None:
        super().__init__()
        self.bn, self.conv = bn, conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 2)


class _Spatial(nn.Module):
    """A pooling of every member's channels: max or average 2x, or global average."""

    def __init__(self, kind: str, rank: int) -> None:
        super().__init__()
        self.kind, self.rank = kind, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, K, C, *sp]
        flat = x.flatten(1, 2)
        if self.kind == "max":
            y = F.max_pool1d(flat, 2) if self.rank == 1 else F.max_pool2d(flat, 2)
        elif self.kind == "avg":
            y = F.avg_pool1d(flat, 2) if self.rank == 1 else F.avg_pool2d(flat, 2)
        else:  # global average, then flat features [N, K, C]
            y = flat.mean(dim=tuple(range(2, flat.dim())))
            return y.unflatten(1, (x.shape[1], x.shape[2]))
        return y.unflatten(1, (x.shape[1], x.shape[2]))


class _Transition(nn.Module):
    def __init__(self, bn: _BN, conv: _Conv, rank: int) -> None:
        super().__init__()
        self.bn, self.conv, self.pool = bn, conv, _Spatial("avg", rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.bn(x))))


class _LinearReLU(nn.Module):
    def __init__(self, linear: _Linear, relu: bool) -> None:
        super().__init__()
        self.linear, self.relu = linear, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return F.relu(y) if self.relu else y


# ----------------------------------------------------------------------------- the group


class _Builder:
    """Walks the members' descriptions position by position, tracking each member's channel layout.

    `pos[i]` lists where member i's channels lie in the group's activation of `width` channels:
    a prefix for plain, residual and mlp nets, scattered for a DenseNet's concatenations.
    """

    def __init__(self, descs: Sequence[NetDescription], shared_input: bool, waste: float) -> None:
        self.descs = list(descs)
        self.k = len(descs)
        self.rank = descs[0].rank
        self.shared_input, self.waste = shared_input, waste
        self.first = True  # the next op is the first: it may take the shared input as it is
        self.ops: list[nn.Module] = []
        self.layers: list[_Op] = []
        c = descs[0].input[0]
        self.width = c
        self.pos: list[list[int]] = [list(range(c)) for _ in descs]
        # the segments: which members each holds (in order) and its channel count
        self.segs: list[list[int]] = [list(range(self.k))]
        self.segw: list[int] = [c]
        self.built_width = c  # set by each part's build: the channels its op puts out

    def _begin(self, idx: Sequence[int]) -> bool:
        """Before an op on `idx`: whether it takes the shared input; expand that input if not."""
        shared = self.first and self.shared_input and len(idx) == self.k
        if self.first and self.shared_input and not shared:
            self.ops.append(_Expand(self.k))
        self.first = False
        return shared

    def _plan(self, members: Sequence[int]) -> Plan:
        """Where `members` (in this order) lie in the segments: (segment, index or None for all of it)."""
        plan: Plan = []
        run: list[int] = []
        seg_of = {i: j for j, seg in enumerate(self.segs) for i in seg}
        for i in [*members, -1]:
            if run and (i == -1 or seg_of[i] != seg_of[run[0]]):
                j = seg_of[run[0]]
                where = [self.segs[j].index(m) for m in run]
                plan.append(
                    (
                        j,
                        None
                        if where == list(range(len(self.segs[j])))
                        else torch.tensor(where, dtype=torch.long),
                    )
                )
                run = []
            if i != -1:
                run.append(i)
        return plan

    def _in_order(self, members: Sequence[int]) -> list[int]:
        """`members` ordered by segment and place in it: gathered with the fewest copies."""
        rank = {i: (j, n) for j, seg in enumerate(self.segs) for n, i in enumerate(seg)}
        return sorted(members, key=lambda i: rank[i])

    def position(
        self,
        idx: Sequence[int],
        specs: Sequence[Any],
        shape: Callable[[int, Any], tuple[int, ...]],
        cost: Callable[[tuple[int, ...]], float],
        build: Callable[..., nn.Module],
        cut: bool = True,
        parts: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """One layer position on the members `idx`: parted by shape (`_partition`), one op per part.

        `build(members, specs, shared)` makes a part's op from `self.width` (its input's
        channels) and `self.pos`, and sets its members' new layouts. With `cut`, a part's input is
        cut to its members' widest (prefix layouts only). `parts` (members) overrides the partition.
        """
        shared = self._begin(idx)
        spec_of = dict(zip(idx, specs, strict=True))
        if parts is None:
            parted = _partition([shape(i, sp) for i, sp in zip(idx, specs, strict=True)], cost, self.waste)
            parts = [[idx[s] for s in part] for part in parted]
        seg_of = {i: j for j, seg in enumerate(self.segs) for i in seg}
        built, segs, segw = [], [], []
        for part in parts:
            members = self._in_order(part)
            plan = self._plan(members)
            container = self.segw[0] if shared else max(self.segw[seg_of[i]] for i in members)
            width = max(len(self.pos[i]) for i in members) if cut and not shared else container
            self.width = width
            op = build(members, [spec_of[i] for i in members], shared)
            built.append((plan, op, width if width < container else None))
            segs.append(members)
            segw.append(self.built_width)  # the op's real output channels, padding included
        covered = {i for part in parts for i in part}
        rest = []
        for j, seg in enumerate(self.segs):
            left = [i for i in seg if i not in covered]
            if left:
                rest.append(self._plan(left))
                segs.append(left)
                segw.append(self.segw[j])
        self.ops.append(_Position(built, rest, shared))
        self.segs, self.segw = segs, segw

    def conv(
        self,
        idx: Sequence[int],
        outs: Sequence[int],
        kernels: Sequence[int],
        stride: int,
        keys: Sequence[str | None],
        shared: bool,
    ) -> _Conv:
        op = _Conv(
            self.rank, self.width, [self.pos[i] for i in idx], outs, kernels, stride, keys, idx, shared
        )
        self.layers.append(op)
        return op

    def bn(self, idx: Sequence[int], width: int, pos: Sequence[Sequence[int]], keys: Sequence[str]) -> _BN:
        op = _BN(width, pos, keys, idx)
        self.layers.append(op)
        return op

    def _conv_cost(self, shape: tuple[int, ...]) -> float:
        cin, cout, k = shape
        return float(cin * cout * k**self.rank)

    def conv_layer(self, idx: Sequence[int], specs: Sequence[tuple[int, int]], prefix: str) -> None:
        """conv -> bn -> relu on `idx`: member idx[s] with (kernel, filters) specs[s], keys under `prefix`."""

        def build(members: Sequence[int], mine: Sequence[tuple[int, int]], shared: bool) -> nn.Module:
            outs = [f for _, f in mine]
            conv = self.conv(
                members, outs, [k for k, _ in mine], 1, [f"{prefix}.conv.weight"] * len(members), shared
            )
            bn = self.bn(members, max(outs), [list(range(f)) for f in outs], [f"{prefix}.bn"] * len(members))
            for i, f in zip(members, outs, strict=True):
                self.pos[i] = list(range(f))
            self.built_width = conv.out_width
            return _ConvBN(conv, bn)

        self.position(idx, specs, lambda i, sp: (len(self.pos[i]), sp[1], sp[0]), self._conv_cost, build)

    def residual_unit(
        self, idx: Sequence[int], specs: Sequence[tuple[int, int]], prefix: str, stride: int
    ) -> None:
        def build(members: Sequence[int], mine: Sequence[tuple[int, int]], shared: bool) -> nn.Module:
            n = len(members)
            widths, kernels = [w for _, w in mine], [k for k, _ in mine]
            wmax = max(widths)
            ins = [self.pos[i] for i in members]
            width_in = self.width
            conv1 = self.conv(members, widths, kernels, stride, [f"{prefix}.conv1.weight"] * n, False)
            bn1 = self.bn(members, wmax, [list(range(w)) for w in widths], [f"{prefix}.bn1"] * n)
            self.width = wmax
            for i, w in zip(members, widths, strict=True):
                self.pos[i] = list(range(w))
            conv2 = self.conv(members, widths, kernels, 1, [f"{prefix}.conv2.weight"] * n, False)
            bn2 = self.bn(members, wmax, [list(range(w)) for w in widths], [f"{prefix}.bn2"] * n)
            proj = [s for s in range(n) if stride != 1 or len(ins[s]) != widths[s]]
            shortcut = None
            if proj:
                self.width = width_in
                for s in proj:
                    self.pos[members[s]] = ins[s]
                sub = [members[s] for s in proj]
                sconv = self.conv(
                    sub,
                    [widths[s] for s in proj],
                    [1] * len(proj),
                    stride,
                    [f"{prefix}.shortcut.conv.weight"] * len(proj),
                    False,
                )
                sbn = self.bn(
                    sub,
                    max(widths[s] for s in proj),
                    [list(range(widths[s])) for s in proj],
                    [f"{prefix}.shortcut.bn"] * len(proj),
                )
                shortcut = _ConvBN(sconv, sbn, relu=False)
                for s in proj:
                    self.pos[members[s]] = list(range(widths[s]))
            self.width = width_in
            self.built_width = wmax
            return _Residual(_ConvBN(conv1, bn1), _ConvBN(conv2, bn2, relu=False), shortcut, proj, n, wmax)

        def cost(shape: tuple[int, ...]) -> float:
            cin, w, k = shape
            return float((cin + w) * w * k**self.rank)

        self.position(idx, specs, lambda i, sp: (len(self.pos[i]), sp[1], sp[0]), cost, build)

    def dense_layer(self, idx: Sequence[int], specs: Sequence[tuple[int, int]], prefix: str) -> None:
        def build(members: Sequence[int], mine: Sequence[tuple[int, int]], shared: bool) -> nn.Module:
            growth = [g for _, g in mine]
            n = len(members)
            bn = self.bn(members, self.width, [self.pos[i] for i in members], [f"{prefix}.bn"] * n)
            conv = self.conv(members, growth, [k for k, _ in mine], 1, [f"{prefix}.conv.weight"] * n, False)
            old = self.width
            for i, g in zip(members, growth, strict=True):
                self.pos[i] = self.pos[i] + [old + j for j in range(g)]
            self.built_width = old + conv.out_width
            return _DenseLayer(bn, conv)

        # the new channels go after the group's old ones: its input is never cut
        self.position(
            idx, specs, lambda i, sp: (len(self.pos[i]), sp[1], sp[0]), self._conv_cost, build, cut=False
        )

    def transition(self, key: str) -> None:
        def build(members: Sequence[int], mine: Sequence[int], shared: bool) -> nn.Module:
            n = len(members)
            bn = self.bn(members, self.width, [self.pos[i] for i in members], [key + ".bn"] * n)
            conv = self.conv(members, list(mine), [1] * n, 1, [key + ".conv.weight"] * n, False)
            for i, c in zip(members, mine, strict=True):
                self.pos[i] = list(range(c))
            self.built_width = conv.out_width
            return _Transition(bn, conv, self.rank)

        every = list(range(self.k))
        chans = [len(p) for p in self.pos]
        self.position(every, chans, lambda i, c: (c, c), lambda sh: float(sh[0] * sh[1]), build, cut=False)

    def spatial(self, kind: str) -> None:
        if self.first and self.shared_input:
            self.ops.append(_Expand(self.k))
        self.first = False
        self.ops.append(_Each(_Spatial(kind, self.rank)))

    def head_bn(self) -> None:
        def build(members: Sequence[int], mine: Sequence[int], shared: bool) -> nn.Module:
            bn = self.bn(members, self.width, [self.pos[i] for i in members], ["head.bn"] * len(members))
            self.built_width = self.width
            return _ConvBN(nn.Identity(), bn)

        # on the segments as they are
        every = list(range(self.k))
        self.position(
            every,
            every,
            lambda i, sp: (0,),
            lambda sh: 1.0,
            build,
            cut=False,
            parts=[list(seg) for seg in self.segs],
        )

    def linear(self, idx: Sequence[int], outs: Sequence[int], key: str, relu: bool) -> None:
        def build(members: Sequence[int], mine: Sequence[int], shared: bool) -> nn.Module:
            lin = _Linear(
                self.width, [self.pos[i] for i in members], mine, [key] * len(members), members, shared
            )
            self.layers.append(lin)
            for i, o in zip(members, mine, strict=True):
                self.pos[i] = list(range(o))
            self.built_width = lin.out_width
            return _LinearReLU(lin, relu)

        prefix = all(p == list(range(len(p))) for p in self.pos)
        self.position(
            idx, outs, lambda i, o: (len(self.pos[i]), o), lambda sh: float(sh[0] * sh[1]), build, cut=prefix
        )


class _Expand(nn.Module):
    """The shared batch as every member's: [N, C, ...] -> [N, K, C, ...]."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> Segments:
        return [x.unsqueeze(1).expand(x.shape[0], self.k, *x.shape[1:])]


class _Flatten(nn.Module):
    """An mlp's input as flat features: [N, ...] -> [N, F] (shared) or [N, K, ...] -> [N, K, F]."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.shared = shared

    def forward(self, x: torch.Tensor | Segments) -> torch.Tensor | Segments:
        return [t.flatten(2) for t in x] if isinstance(x, list) else x.flatten(1)


def _positions(lengths: Sequence[int]) -> list[list[int]]:
    """For each position 1..max, the indices of the members that have it."""
    return [[i for i, n in enumerate(lengths) if n > p] for p in range(max(lengths, default=0))]


class FusedGroup(nn.Module):
    """K nets of one `group_key` as one module: forward gives their logits as [N, K, classes].

    Build it from the members' descriptions, `pack` their modules (and SGD momentum buffers) in,
    take steps with `step`, `unpack` them back out. `shared_input` is the batch layout: one batch
    [N, *input] for all members, or [N, K, *input] (one per member).
    """

    def __init__(
        self, descs: Sequence[NetDescription], shared_input: bool = True, waste: float = 1.0
    ) -> None:
        super().__init__()
        keys = {group_key(d) for d in descs}
        if len(keys) != 1:
            raise ValueError(f"nets of different group keys cannot be fused: {sorted(map(str, keys))}")
        self.descs, self.k, self.shared_input = list(descs), len(descs), shared_input
        b = _Builder(descs, shared_input, waste)
        family, k = descs[0].family, len(descs)
        every = list(range(k))
        if family == "mlp":
            b.ops.append(_Flatten(shared_input))
            b.width = int(torch.tensor(descs[0].input).prod())
            b.pos = [list(range(b.width)) for _ in descs]
            b.segw = [b.width]
        if descs[0].stem is not None:
            b.conv_layer(every, [d.stem for d in descs if d.stem is not None], "stem")  # type: ignore[misc]
        for bi in range(len(descs[0].blocks)):
            blocks = [d.blocks[bi] for d in descs]
            for p, idx in enumerate(_positions([len(x) for x in blocks]), start=1):
                specs = [blocks[i][p - 1] for i in idx]
                if family == "plain":
                    b.conv_layer(idx, specs, f"block{bi + 1}.layer{p}")
                elif family == "residual":
                    stride = 2 if bi > 0 and p == 1 else 1
                    b.residual_unit(idx, specs, f"block{bi + 1}.unit{p}", stride)
                else:
                    b.dense_layer(idx, specs, f"block{bi + 1}.layer{p}")
            if family == "plain":
                b.spatial("max")
            elif family == "dense" and bi < len(descs[0].blocks) - 1:
                b.transition(f"transition{bi + 1}")
        if family == "dense":
            b.head_bn()
        if family != "mlp":
            b.spatial("global")
        for p, idx in enumerate(_positions([len(d.dense) for d in descs]), start=1):
            b.linear(idx, [descs[i].dense[p - 1] for i in idx], f"head.fc{p}", relu=True)
        b.linear(every, [d.classes for d in descs], "head.out", relu=False)
        b.ops.append(_Out(b.segs))
        self.ops = nn.ModuleList(b.ops)
        self.layers = b.layers
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state: Any = x if self.shared_input else [x]
        for op in self.ops:
            state = op(state)
        out: torch.Tensor = state
        return out

    def largest_parts(self) -> int:
        """The most members any one of the group's weight ops computes for."""
        return max((len(op.slot_members) for op in self.layers), default=0)

    # ------------------------------------------------------------------ pack / unpack

    def pack(self, models: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer | None]) -> None:
        """Copy the members' weights, BN statistics and momentum buffers into the group."""
        tensors = [dict(m.state_dict(keep_vars=True)) for m in models]
        self.momentum: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for op in self.layers:
                for p in op.parameters(recurse=False):
                    p.zero_()
                    self.momentum[id(p)] = torch.zeros_like(p)
                for pl in op.placements:
                    src = tensors[pl.member][pl.key]
                    getattr(op, pl.tensor)[pl.slot][pl.index] = src.detach().to(getattr(op, pl.tensor).device)
                    opt = optimizers[pl.member]
                    if pl.tensor in ("weight", "bias") and opt is not None:
                        buf = opt.state.get(src, {}).get("momentum_buffer")
                        if buf is not None:
                            self.momentum[id(getattr(op, pl.tensor))][pl.slot][pl.index] = buf
        self.steps = 0

    def unpack(
        self,
        models: Sequence[nn.Module],
        optimizers: Sequence[torch.optim.Optimizer | None],
        momenta: Sequence[float],
    ) -> None:
        """Copy the group's weights, BN statistics and momentum buffers back into the members."""
        tensors = [dict(m.state_dict(keep_vars=True)) for m in models]
        with torch.no_grad():
            for op in self.layers:
                for pl in op.placements:
                    dst = tensors[pl.member][pl.key]
                    dst.copy_(getattr(op, pl.tensor)[pl.slot][pl.index])
                    opt = optimizers[pl.member]
                    if (
                        pl.tensor in ("weight", "bias")
                        and opt is not None
                        and momenta[pl.member] != 0
                        and self.steps
                    ):
                        # in the parameter's own memory layout (channels_last on CUDA), as SGD keeps it
                        buf = torch.empty_like(dst).copy_(
                            self.momentum[id(getattr(op, pl.tensor))][pl.slot][pl.index]
                        )
                        opt.state[dst]["momentum_buffer"] = buf
            if self.steps:
                for op in self.layers:
                    for m, key in getattr(op, "bn_keys", []):
                        tensors[m][key].add_(self.steps)

    # ------------------------------------------------------------------ the optimizer

    def sgd_step(
        self,
        lr: torch.Tensor,
        momentum: torch.Tensor,
        weight_decay: torch.Tensor,
        uniform: tuple[float, float, float] | None = None,
    ) -> None:
        """One SGD step per member, PyTorch's: coupled weight decay, momentum without dampening.

        `lr`, `momentum` and `weight_decay` are [K] vectors over the group's members; `uniform`,
        when every member has the same (lr, momentum, weight decay), takes torch.optim.SGD's own
        operations with those numbers. A momentum buffer packed as zeros (a member that has none
        yet) becomes its first gradient, as torch.optim.SGD starts it; with momentum 0 the step
        is the gradient's.
        """
        with torch.no_grad():
            params: list[torch.Tensor] = [
                p for op in self.layers for p in op.parameters(recurse=False) if p.grad is not None
            ]
            if uniform is not None:
                rate, mom, wd = uniform
                grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
                if wd != 0:  # in place: the gradients are set anew every step
                    torch._foreach_add_(grads, params, alpha=wd)
                if mom != 0:
                    bufs = [self.momentum[id(p)] for p in params]
                    torch._foreach_mul_(bufs, mom)
                    torch._foreach_add_(bufs, grads)
                    grads = bufs
                torch._foreach_add_(params, grads, alpha=-rate)
            else:
                for op in self.layers:
                    sel = op.slot_members
                    for p in op.parameters(recurse=False):
                        if p.grad is None:
                            continue
                        view = (-1,) + (1,) * (p.dim() - 1)
                        wdv, momv, ratev = (
                            v.index_select(0, sel).view(view).to(p.dtype)
                            for v in (weight_decay, momentum, lr)
                        )
                        d = p.grad + wdv * p
                        buf = self.momentum[id(p)]
                        buf.mul_(momv).add_(d)
                        p.sub_(ratev * torch.where(momv != 0, buf, d))
        self.steps += 1


def member_losses(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy, [K], of logits [N, K, C] against labels [N] or [N, K]."""
    n, k = out.shape[0], out.shape[1]
    target = y.unsqueeze(1).expand(n, k) if y.dim() == 1 else y
    return F.cross_entropy(out.float().transpose(1, 2), target, reduction="none").mean(0)


def member_correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's number of right predictions, [K]."""
    target = y.unsqueeze(1) if y.dim() == 1 else y
    return (out.argmax(2) == target).sum(0)


def groups_of(descs: Mapping[int, NetDescription]) -> list[list[int]]:
    """The fusable members (by their index) grouped by `group_key`; only groups of two or more."""
    by: dict[tuple[Any, ...], list[int]] = {}
    for i, d in descs.items():
        by.setdefault(group_key(d), []).append(i)
    return [g for g in by.values() if len(g) > 1]
