"""Shared-MotherNets at run time: build one from hatched members, check it, view its members.

A generated folder's `shared.py` has one `SharedNet` class per cluster that can be shared (see
`mncompile.passes.share_plan` for the structure). `consolidate(shared, members)` fills a
Shared-MotherNet from the cluster's hatched members:

- a unit the members copied from the MotherNet (a *shared* row of a step) gets the mean of the
  members' incoming weights, bias and BatchNorm entries for that unit, each member's weights
  placed on the columns of the groups that member reads (its kernel centred in the step's);
  the shared unit then computes (1/K) * sum_k (member k's pre-activation), which is member k's
  pre-activation for every k as long as the members agree on that unit, as hatched members do;
- a member's own unit gets that member's weights; every other entry stays zero (masked).

`verify_shared(shared, members, batch)` returns the largest difference between the K outputs
and the members' outputs. The method that trains them is `runtime/methods/shared_mothernets.py`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from mncompile.diagnostics import MNError
from mncompile.formats.share_plan import read_part
from mncompile.runtime.folder import load_generated_module

#: a generated Shared-MotherNet (shared.py): an nn.Module whose class carries the data MOTHER,
#: MEMBERS, GROUPS and STEPS (mncompile.formats.share_plan), which a type checker cannot see
SharedNet = Any


def load_shared_module(folder: str | Path) -> ModuleType:
    """The generated folder's shared.py as a fresh module; MNError when it is missing."""
    path = Path(folder) / "shared.py"
    if not path.is_file():
        raise MNError(f"'{path}' does not exist",
                      hint="compile the spec again with this mncompile: it writes shared.py")
    module = load_generated_module(path, "shared", path)
    if not isinstance(getattr(module, "SHARED", None), dict):
        raise MNError(f"'{path}' has no SHARED table", hint="compile the spec again")
    return module


def _ranges(groups: Mapping[int, tuple[Any, int]], ids: tuple[int, ...]) -> dict[int, tuple[int, int]]:
    out, at = {}, 0
    for g in ids:
        out[g] = (at, at + int(groups[g][1]))
        at += int(groups[g][1])
    return out


BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


def _place(dest: torch.Tensor, t: torch.Tensor, groups: tuple[int, ...],
           ranges: Mapping[int, tuple[int, int]], scale: Mapping[int, int], what: str) -> None:
    """Add `t`'s channels (the member's order: `groups` laid end to end) into `dest` / each group's count."""
    at = 0
    for g in groups:
        lo, hi = ranges[g]
        dest[lo:hi] += t[at:at + hi - lo] / scale[g]
        at += hi - lo
    if at != t.shape[0]:
        raise MNError(f"{what} has {t.shape[0]} channels where shared.py expects {at}",
                      hint="the members do not come from this compile of the spec: compile it again")


def consolidate(shared: SharedNet, members: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                ) -> dict[str, torch.Tensor]:
    """The state_dict of `shared` built from the hatched members' weights (module docstring).

    `members` maps every name in `shared.MEMBERS` to its module or state_dict. Raises MNError
    when one is missing or a tensor has the wrong shape (members from another compile).
    """
    import torch
    import torch.nn.functional as F

    states = {}
    for m in shared.MEMBERS:
        if m not in members:
            raise MNError(f"member '{m}' of Shared-MotherNet '{shared.MOTHER}' was not given")
        sd = members[m]
        states[m] = sd.state_dict() if hasattr(sd, "state_dict") else sd

    def tensor(member: str, key: str) -> torch.Tensor:
        if key not in states[member]:
            raise MNError(f"member '{member}' has no tensor '{key}'",
                          hint="the members do not come from this compile of the spec: compile it again")
        return states[member][key].detach().float().cpu()

    own = shared.state_dict()
    out: dict[str, torch.Tensor] = {}
    for i, step in enumerate(shared.STEPS):
        if step["op"] not in ("conv", "linear", "norm"):
            continue
        rows = _ranges(shared.GROUPS, tuple(step["makes"]))
        cols = _ranges(shared.GROUPS, tuple(step["reads"]))
        # by name; MNError unless its keys are exactly PART_FIELDS (a folder from another version)
        parts = [read_part(p) for p in step["parts"]]
        # a shared row (or column) is the mean over the members that have it
        writers = {g: sum(g in p["rows"] for p in parts if p["key"] or p["bn"]) or 1 for g in rows}
        readers = {g: sum(g in p["cols"] for p in parts if p["pre"]) or 1 for g in cols}
        target = {name: torch.zeros_like(t, dtype=torch.float32)
                  for name, t in own.items() if name.startswith(f"steps.{i}.")}
        tracked = torch.zeros((), dtype=torch.long)
        kernel = step["kernel"]
        # each weight block: its rows' and columns' groups and its kernel, as the module built it
        blocks = [(_ranges(shared.GROUPS, b.rows), _ranges(shared.GROUPS, b.cols), b.kernel)
                  for b in shared.steps[i].blocks]
        for p in parts:
            m = p["member"]
            if p["key"]:
                what = f"'{m}' tensor {p['key']}.weight"
                w = tensor(m, f"{p['key']}.weight")
                if kernel is not None and w.shape[2] != p["kernel"]:
                    raise MNError(f"{what} has kernel {w.shape[2]}, shared.py expects {p['kernel']}",
                                  hint="compile the spec again")
                r_at = _ranges(shared.GROUPS, tuple(p["rows"]))
                c_at = _ranges(shared.GROUPS, tuple(p["cols"]))
                for offsets, dim in ((r_at, 0), (c_at, 1)):
                    expected = max((hi for _, hi in offsets.values()), default=0)
                    if w.shape[dim] != expected:
                        side = "output" if dim == 0 else "input"
                        raise MNError(f"{what} has {w.shape[dim]} {side} channels where shared.py expects "
                                      f"{expected}", hint="the members do not come from this compile of the "
                                      "spec: compile it again")
                for j, (b_row, b_col, bkernel) in enumerate(blocks):
                    here = [r for r in p["rows"] if r in b_row]
                    if not here:
                        continue
                    wk = w
                    if kernel is not None:
                        pad = (bkernel - p["kernel"]) // 2
                        wk = F.pad(w, (pad, pad) * (w.dim() - 2))
                    dest = target[f"steps.{i}.blocks.{j}.weight"]
                    for r in here:
                        for c in p["cols"]:
                            dest[slice(*b_row[r]), slice(*b_col[c])] += (
                                wk[slice(*r_at[r]), slice(*c_at[c])] / writers[r])
                if step["bias"]:
                    _place(target[f"steps.{i}.bias"], tensor(m, f"{p['key']}.bias"), tuple(p["rows"]), rows,
                           writers, f"'{m}' tensor {p['key']}.bias")
            for prefix, where, groups, ranges, scale in ((p["bn"], "bn", p["rows"], rows, writers),
                                                         (p["pre"], "pre", p["cols"], cols, readers)):
                if not prefix:
                    continue
                for f in BN_FIELDS:
                    _place(target[f"steps.{i}.{where}.{f}"], tensor(m, f"{prefix}.{f}"), tuple(groups),
                           ranges, scale, f"'{m}' tensor {prefix}.{f}")
                nbt = states[m].get(f"{prefix}.num_batches_tracked")
                if nbt is not None:
                    tracked = torch.maximum(tracked, nbt.detach().cpu().long())
        for name, t in target.items():
            out[name] = tracked.clone() if name.endswith("num_batches_tracked") else t.to(own[name].dtype)
        for j, block in enumerate(shared.steps[i].blocks):
            key = f"steps.{i}.blocks.{j}.weight"
            out[key] = out[key] * block.mask.cpu()
    return out


def build_shared(cls: type[nn.Module], members: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                 device: torch.device | str | None = None) -> nn.Module:
    """A new Shared-MotherNet of class `cls` filled from the members (`consolidate`)."""
    model = cls()
    model.load_state_dict(consolidate(model, members))
    return model.to(device) if device is not None else model


def verify_shared(shared: SharedNet, members: Mapping[str, nn.Module], batch: torch.Tensor, *,
                  train: bool = False) -> float:
    """max |shared(batch)[:, k] - member_k(batch)| over k, in eval mode (or train mode on copies)."""
    import torch

    if train:
        shared, members = copy.deepcopy(shared), {m: copy.deepcopy(members[m]) for m in shared.MEMBERS}
    modules = [shared, *(members[m] for m in shared.MEMBERS)]
    was = [m.training for m in modules]
    for m in modules:
        m.train(train)
    try:
        with torch.no_grad():
            out = shared(batch)
            return max(float((out[:, k] - members[m](batch)).abs().max())
                       for k, m in enumerate(shared.MEMBERS))
    finally:
        for m, w in zip(modules, was, strict=True):
            m.train(w)


class SharedMember(nn.Module):
    """Member `member` of a Shared-MotherNet as a module of its own (input -> its logits).

    It runs the whole shared model and keeps that member's output: for evaluating members one
    at a time. The shared model is a submodule, so the view moves and saves with it.
    """

    def __init__(self, shared: SharedNet, member: str) -> None:
        super().__init__()
        self.shared = shared
        self.index = list(shared.MEMBERS).index(member)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.shared(x)[:, self.index]
        return out


def shared_member(shared: SharedNet, member: str) -> nn.Module:
    """Member `member` of `shared` as an `nn.Module` (input -> that member's logits)."""
    return SharedMember(shared, member)


def effective_params(shared: SharedNet) -> int:
    """Trainable parameters of a Shared-MotherNet: unmasked weights, biases, BatchNorm affines.

    `sum(p.numel() for p in shared.parameters())` is what it stores: its weight blocks hold a
    few masked (zero) entries where members' kernels differ or blocks were merged.
    """
    total = 0
    for step in shared.steps:
        for name, p in step.named_parameters():
            if name.startswith("blocks.") and name.endswith(".weight"):
                total += int(step.get_submodule(name.rsplit(".", 1)[0]).mask.count_nonzero())
            else:
                total += p.numel()
    return total


def param_counts(shared: SharedNet, members: Mapping[str, nn.Module], mother: nn.Module) -> dict[str, Any]:
    """Parameter counts of Appendix C: members' sum, the shared model, what it saves, and chi.

    chi = 1 - K * |M| / sum_i |N_i| is the paper's formula as printed; (K - 1) * |M| is the
    saving it describes; `saved` is what this shared model actually saves (the members' sum
    minus its own count), which differs from (K - 1) * |M| where kernels or head layers differ.
    """
    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    k = len(shared.MEMBERS)
    total = sum(count(members[m]) for m in shared.MEMBERS)
    mother_params = count(mother)
    own = effective_params(shared)
    return {"members": k, "members_params": total, "shared_params": own,
            "stored_params": sum(p.numel() for p in shared.parameters()), "saved": total - own,
            "mother_params": mother_params, "paper_saving": (k - 1) * mother_params,
            "chi": 1 - k * mother_params / total, "reduction": 1 - own / total}
