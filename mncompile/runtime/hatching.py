"""Apply a hatching table: a member's state_dict from its trained MotherNet.

The table (made at compile time by `mncompile.passes.hatch_plan.plan_hatching`, stored as
`hatch/<member>.json`) says for every member tensor which MotherNet tensor it comes from
and how it is widened, divided and padded. Every step is a whole-tensor operation
(`index_select`, a multiply by gathered 1/count factors, `F.pad`); nothing loops over
channels in Python.

>>> import torch
>>> from mncompile.ir import Linear, Net
>>> from mncompile.passes.hatch_plan import plan_hatching
>>> m = Net(name="m", family="mlp", dense=(Linear(width=2),))
>>> n = Net(name="n", family="mlp", dense=(Linear(width=3),))
>>> table = plan_hatching(m, n, (4,), 2, seed=0)
>>> sd = {"head.fc1.weight": torch.ones(2, 4), "head.fc1.bias": torch.zeros(2),
...       "head.out.weight": torch.ones(2, 2), "head.out.bias": torch.zeros(2)}
>>> out = hatch(sd, table)
>>> tuple(out["head.fc1.weight"].shape), float(out["head.out.weight"].sum())
((3, 4), 4.0)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mncompile.diagnostics import MNError
from mncompile.formats.hatch_table import Entry, HatchTable, Layout, WidenMap, load_table
from mncompile.formats.settings import NOISE_MODES


def check_mother(state: Mapping[str, Tensor], table: HatchTable) -> None:
    """Raise `MNError` naming the first tensor where `state` is not the table's MotherNet."""
    want = table.mother_tensors
    hint = (f"hatch member '{table.member}' from the MotherNet its table was made for "
            f"('{table.mother}')")
    for key, shape in want.items():
        if key not in state:
            raise MNError(f"the MotherNet state_dict has no tensor '{key}', which the hatch "
                          f"table of member '{table.member}' needs", hint=hint)
        got = tuple(state[key].shape)
        if got != tuple(shape):
            raise MNError(f"MotherNet tensor '{key}' has shape {got} but the hatch table of member "
                          f"'{table.member}' expects {tuple(shape)}", hint=hint)
    extra = [k for k in state if k not in want]
    if extra:
        raise MNError(f"the MotherNet state_dict has tensor '{extra[0]}', which the hatch table "
                      f"of member '{table.member}' does not know", hint=hint)


def _layout_problem(layout: Layout, maps: Mapping[str, WidenMap], size: int,
                    mother_size: int | None) -> str | None:
    total = 0
    for seg in layout:
        if seg.size < 0 or seg.at < 0:
            return "a negative segment"
        if seg.map is not None:
            g = maps.get(seg.map)
            if g is None:
                return f"an unknown map '{seg.map}'"
            if seg.size != g.new:
                return f"a segment of {seg.size} channels over map '{seg.map}' of {g.new}"
            if mother_size is not None and seg.at + g.old > mother_size:
                return f"map '{seg.map}' reading channels {seg.at}..{seg.at + g.old - 1} of {mother_size}"
        total += seg.size
    if total != size:
        return f"segments of {total} channels for a dimension of {size}"
    return None


def check_table(table: HatchTable, member: Mapping[str, tuple[int, ...]],
                mother: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Raise MNError naming `where` unless `table` fits the member's and the MotherNet's tensors.

    `member` and `mother` map each state_dict key of the generated modules to its shape. Every
    index a map holds must lie inside the MotherNet's channels, every entry must be a member
    tensor of its shape, and every source a MotherNet tensor: so that hatching never indexes out
    of range or loads a tensor of the wrong shape.
    """
    hint = "the generated folder was edited or is out of date: compile the spec again"
    for name, g in table.maps.items():
        if g.old < 1 or g.new < 0 or len(g.extra) != max(0, g.new - g.old) or any(
                not isinstance(i, int) or not 0 <= i < g.old for i in g.extra):
            raise MNError(f"{where}: map '{name}' (old {g.old}, new {g.new}) holds indices outside its "
                          f"{g.old} source units", hint=hint)
    if dict(table.mother_tensors) != {k: tuple(v) for k, v in mother.items()}:
        raise MNError(f"{where}: its MotherNet tensors do not match models.py's '{table.mother}'", hint=hint)
    keys = [e.key for e in table.entries]
    if sorted(keys) != sorted(member) or len(set(keys)) != len(keys):
        missing = sorted(set(member) - set(keys))[:3]
        extra = sorted(set(keys) - set(member))[:3]
        raise MNError(f"{where}: its entries do not match models.py's '{table.member}' (missing "
                      f"{missing or 'none'}, unknown {extra or 'none'})", hint=hint)
    for e in table.entries:
        shape = tuple(e.shape)
        if shape != tuple(member[e.key]):
            raise MNError(f"{where}: entry {e.key} has shape {shape}, but models.py's '{table.member}' has "
                          f"{tuple(member[e.key])}", hint=hint)
        src: tuple[int, ...] | None = None
        if e.source is not None:
            if e.source not in mother:
                raise MNError(f"{where}: entry {e.key} comes from '{e.source}', which the MotherNet lacks",
                              hint=hint)
            src = tuple(mother[e.source])
        elif e.init == "identity":
            src = tuple(e.src_shape or ())
        for dim, layout in ((0, e.rows), (1, e.cols)):
            if layout is None:
                continue
            if len(shape) <= dim:
                raise MNError(f"{where}: entry {e.key} maps dimension {dim} of a {len(shape)}-d tensor",
                              hint=hint)
            problem = _layout_problem(layout, table.maps, shape[dim],
                                      src[dim] if src is not None and len(src) > dim else None)
            if problem:
                raise MNError(f"{where}: entry {e.key}, dimension {dim}: {problem}", hint=hint)
        if e.kernel is not None and src is not None and len(src) > 2:
            k_from, k_to = e.kernel
            if k_from != src[2] or k_to != shape[2] or (k_to - k_from) % 2:
                raise MNError(f"{where}: entry {e.key}'s kernel {k_from} -> {k_to} does not fit the tensors",
                              hint=hint)


class _MapTensors:
    """g and 1/c(g(j)) of one widening map, as tensors."""

    def __init__(self, g: WidenMap) -> None:
        keep = torch.arange(min(g.old, g.new), dtype=torch.long)
        self.index = torch.cat([keep, torch.tensor(g.extra, dtype=torch.long)])
        counts = torch.bincount(self.index, minlength=g.old).to(torch.float64)
        self.scale = 1.0 / counts[self.index]


class _Index:
    """The gather index, 1/count factors and new positions of one layout, as tensors."""

    def __init__(self, layout: Layout, maps: dict[str, _MapTensors], device: torch.device) -> None:
        index: list[Tensor] = []
        scale: list[Tensor] = []
        groups: list[Tensor] = []
        new: list[Tensor] = []
        start = 0
        for seg in layout:
            if seg.map is None:
                new.append(torch.arange(start, start + seg.size))
                index.append(torch.zeros(seg.size, dtype=torch.long))
                scale.append(torch.zeros(seg.size, dtype=torch.float64))
                groups.append(torch.full((seg.size,), -1, dtype=torch.long))
            else:
                g = maps[seg.map]
                index.append(g.index + seg.at)
                scale.append(g.scale)
                groups.append(g.index + seg.at)
            start += seg.size
        self.index = torch.cat(index).to(device)
        self.scale = torch.cat(scale).to(device)
        self.new = (torch.cat(new) if new else torch.zeros(0, dtype=torch.long)).to(device)
        self.groups = torch.cat(groups)
        self._pairs: tuple[Tensor, Tensor] | None = None

    def pairs(self) -> tuple[Tensor, Tensor]:
        """Replicas of one old unit taken two by two: (a, b) positions, for symmetric noise."""
        if self._pairs is None:
            g = self.groups
            order = torch.argsort(g, stable=True)
            sg = g[order]
            first = torch.ones_like(sg, dtype=torch.bool)
            first[1:] = sg[1:] != sg[:-1]
            starts = torch.cummax(torch.where(first, torch.arange(len(sg)), 0), 0).values
            rank = torch.arange(len(sg)) - starts
            nxt = torch.cat([sg[1:], sg.new_full((1,), -2)])
            a = (rank % 2 == 0) & (nxt == sg) & (sg >= 0)
            pos = torch.nonzero(a).flatten()
            self._pairs = (order[pos].to(self.index.device), order[pos + 1].to(self.index.device))
        return self._pairs


def _member_seed(seed: int, member: str) -> int:
    # one seed for a whole ensemble still gives every member its own stream
    return (seed * 1_000_003 + zlib.crc32(member.encode())) % 2**63


def _identity(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    n = shape[0]
    out = torch.zeros(shape, dtype=dtype, device=device)
    eye = torch.eye(n, dtype=dtype, device=device)
    centre = tuple(k // 2 for k in shape[2:])
    out[(slice(None), slice(None)) + centre] = eye
    return out


def _he_normal(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype,
               device: torch.device) -> Tensor:
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    std = math.sqrt(2.0 / max(1, fan_in))
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * std).to(dtype=dtype, device=device)


def _init(e: Entry, shape: tuple[int, ...], table: HatchTable, gen: torch.Generator,
          dtype: torch.dtype, device: torch.device) -> Tensor:
    if e.init == "identity":
        return _identity(shape, dtype, device)
    if e.init == "he_normal":
        return _he_normal(shape, gen, dtype, device)
    if e.key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long, device=device)
    value = {"zeros": 0.0, "ones": 1.0, "bn_var": 1.0 - table.bn_eps}[e.init or ""]
    return torch.full(shape, value, dtype=dtype, device=device)


def _bcast(v: Tensor, dim: int, ndim: int) -> Tensor:
    return v.view((1,) * dim + (-1,) + (1,) * (ndim - dim - 1))


def _kernel(t: Tensor, k_from: int, k_to: int) -> Tensor:
    spatial = t.dim() - 2
    if k_to > k_from:
        p = (k_to - k_from) // 2
        return F.pad(t, (p, p) * spatial)
    c = (k_from - k_to) // 2
    return t[(slice(None), slice(None)) + (slice(c, c + k_to),) * spatial].clone()


class _Hatcher:
    def __init__(self, table: HatchTable, state: Mapping[str, Tensor]) -> None:
        self.table, self.state = table, state
        ref = next((t for t in state.values() if t.is_floating_point()), None)
        self.dtype = ref.dtype if ref is not None else torch.float32
        self.device = ref.device if ref is not None else torch.device("cpu")
        self.cache: dict[Layout, _Index] = {}
        self.maps = {name: _MapTensors(g) for name, g in table.maps.items()}
        # new tensors are a function of the table alone, so a hatched member is reproducible
        self.gen = torch.Generator().manual_seed(_member_seed(table.seed, table.member))

    def index(self, layout: Layout) -> _Index:
        if layout not in self.cache:
            self.cache[layout] = _Index(layout, self.maps, self.device)
        return self.cache[layout]

    def build(self, e: Entry) -> Tensor:
        if e.source is None and e.init != "identity":
            return _init(e, e.shape, self.table, self.gen, self.dtype, self.device)
        if e.source is not None:
            t = self.state[e.source]
        else:
            assert e.src_shape is not None
            t = _identity(e.src_shape, self.dtype, self.device)
        if e.rows is None and e.cols is None and e.kernel is None:
            return t.detach().clone()
        t = t.detach()
        if e.rows is not None:
            ix = self.index(e.rows)
            t = t.index_select(0, ix.index)
        if e.cols is not None:
            ix = self.index(e.cols)
            t = t.index_select(1, ix.index) * _bcast(ix.scale.to(t.dtype), 1, t.dim())
        if e.kernel is not None:
            t = _kernel(t, *e.kernel)
        if e.rows is not None:
            new = self.index(e.rows).new
            if len(new):
                if e.fill == "he_normal":
                    t[new] = _he_normal((len(new),) + tuple(t.shape[1:]), self.gen, t.dtype, t.device)
                else:
                    t[new] = float(e.fill if isinstance(e.fill, (int, float)) else 0.0)
        if e.cols is not None:
            new = self.index(e.cols).new
            if len(new):
                t[:, new] = 0
        return t


def _noise(out: dict[str, Tensor], table: HatchTable, hatcher: _Hatcher, noise: float, mode: str,
           seed: int) -> None:
    gen = torch.Generator().manual_seed(_member_seed(seed, table.member))
    for e in table.entries:
        t = out[e.key]
        if e.kind != "param" or not t.is_floating_point() or t.numel() < 2:
            continue
        std = float(t.float().std())
        if std == 0.0:
            continue
        if mode == "gaussian":
            t.add_(torch.randn(t.shape, generator=gen).to(t) * (noise * std))
            continue
        if e.cols is None:
            continue
        a, b = hatcher.index(e.cols).pairs()
        if len(a) == 0:
            continue
        shape = (t.shape[0], len(a)) + tuple(t.shape[2:])
        d = torch.randn(shape, generator=gen).to(t) * (noise * std)
        t.index_add_(1, a, d)
        t.index_add_(1, b, -d)


def hatch(mother: nn.Module | Mapping[str, Tensor], table: HatchTable | Mapping[str, Any] | str | Path,
          *, noise: float = 0.0, noise_mode: str = "gaussian", seed: int = 0) -> dict[str, Tensor]:
    """The member's state_dict, hatched from `mother` (a module or its state_dict) by `table`.

    `noise` > 0 then perturbs the member's parameters: `gaussian` adds N(0, (noise x the
    tensor's std)^2) to every float parameter (not to running statistics); `symmetric` adds
    +d and -d to the outgoing weights of paired replicas, which keeps the function exactly.
    The noise is drawn from a generator seeded with `seed` and the member's name, so one seed
    for the whole ensemble still gives each member its own noise.
    """
    if noise_mode not in NOISE_MODES:
        raise MNError(f"unknown noise_mode {noise_mode!r}", hint="use 'gaussian' or 'symmetric'")
    if noise < 0 or not math.isfinite(noise):
        raise MNError(f"noise must be a finite number >= 0, got {noise}",
                      hint="a fraction of each tensor's std, such as 0.01")
    t = load_table(table)
    state = mother.state_dict() if isinstance(mother, nn.Module) else mother
    check_mother(state, t)
    hatcher = _Hatcher(t, state)
    with torch.no_grad():
        out = {e.key: hatcher.build(e) for e in t.entries}
        if noise > 0:
            _noise(out, t, hatcher, noise, noise_mode, seed)
    return out


@contextmanager
def _eval(*modules: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for root in modules for m in root.modules()]
    try:
        for root in modules:
            root.eval()
        yield
    finally:
        for m, training in modes:
            m.train(training)


def verify_hatch(mother: nn.Module, member: nn.Module, batch: Tensor) -> float:
    """The largest absolute difference of the two nets' outputs on `batch`, in eval mode.

    Both modules get their train/eval modes back afterwards.
    """
    with _eval(mother, member), torch.no_grad():
        return float((member(batch) - mother(batch)).abs().max())
