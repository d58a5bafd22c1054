"""`--method treenet` (TN): plain members only; one shared trunk of the first layers, one branch each.

The trunk (the first `--shared-layers` conv layers, by the position-wise narrowest net) and every
member's branch train jointly on the sum of the branches' cross-entropies; docs/baselines.md
gives the construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.context import Outcome, Phase, RunContext, derive_seed
from mncompile.runtime.jobs import Job
from mncompile.runtime.methods.options import family_of, options, require_ok

if TYPE_CHECKING:
    import torch
    from torch import nn

HELP = "plain nets only: a shared trunk of the first layers, one branch per member"




def _blocks(model: nn.Module) -> list[Any]:
    out, b = [], 1
    while hasattr(model, f"block{b}"):
        out.append(getattr(model, f"block{b}"))
        b += 1
    return out


def _layers(block: Any) -> list[Any]:
    out, i = [], 1
    while hasattr(block, f"layer{i}"):
        out.append(getattr(block, f"layer{i}"))
        i += 1
    return out


def _shape(layer: Any) -> tuple[int, int]:
    """(kernel, filters) of a generated conv layer (`.conv` then `.bn`)."""
    w = layer.conv.weight
    return int(w.shape[2]), int(w.shape[0])


def _rebuilt(module: nn.Module, in_width: int, kernel: int | None, seed: int) -> nn.Module:
    """A fresh copy of a conv or linear `module` reading `in_width` channels (and `kernel` wide)."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(module, nn.Linear):
            return nn.Linear(in_width, module.out_features, bias=module.bias is not None)
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        k = kernel if kernel is not None else int(module.kernel_size[0])
        # generated convs are 'same' padded: kernel // 2
        return type(module)(in_width, module.out_channels, k, int(module.stride[0]), k // 2,
                            bias=module.bias is not None)


def _retarget_first(branch: nn.Module, in_width: int, seed: int) -> bool:
    """Rebuild the branch's first conv or linear layer to read `in_width` channels; True if it had to."""
    from torch import nn

    for name, module in branch.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            width = module.in_features if isinstance(module, nn.Linear) else module.in_channels
            if width == in_width:
                return False
            parent_name, _, attr = name.rpartition(".")
            parent = branch.get_submodule(parent_name) if parent_name else branch
            setattr(parent, attr, _rebuilt(module, in_width, None, seed))
            return True
    raise AssertionError("a generated net has a conv or linear layer")


@dataclass
class TreeNet:
    """The shared trunk, one branch per member, and what the construction changed."""

    trunk: nn.Sequential
    branches: dict[str, nn.Sequential]
    #: the trunk's layers as (block, layer) positions, 1-based, and which member each came from
    positions: list[tuple[int, int]]
    donors: list[str]
    #: per member, its layers that neither the trunk nor its branch keeps
    dropped: dict[str, list[str]]
    #: members whose first branch layer was rebuilt to read the trunk's width
    retargeted: list[str]

    def module(self) -> nn.Module:
        """One module holding the trunk once and every branch: what is trained."""
        from torch import nn

        branches = nn.ModuleDict({f"b{i}": b for i, b in enumerate(self.branches.values())})
        return nn.ModuleDict({"trunk": self.trunk, "branches": branches})

    def members(self) -> dict[str, nn.Module]:
        """Each member as trunk -> its branch (input -> logits); they share the trunk's weights."""
        from torch import nn

        return {m: nn.Sequential(self.trunk, b) for m, b in self.branches.items()}


def build_treenet(ctx: RunContext, shared_layers: int) -> TreeNet:
    """A TreeNet by module surgery on freshly built members (see docs/baselines.md).

    The trunk follows the position-wise narrowest net: as many blocks as the member with fewest,
    per block as many layers as the member with fewest there, and at each position the layer of
    the member with the fewest filters there (then the smallest kernel), rebuilt to read the
    previous trunk layer's width or to take the smallest kernel there. The trunk is its first
    `shared_layers` layers in (block, layer) order, with the max-pool of every block it finishes.
    Each member's branch is the rest of its own net from the same position on, its first conv
    (or linear) rebuilt when it must read another width.
    """
    from torch import nn

    families = family_of(ctx)
    wrong = [m for m in ctx.members if families.get(m) != "plain"]
    if wrong:
        raise MNError(f"treenet needs plain conv members, but '{wrong[0]}' is {families.get(wrong[0])}",
                      hint="TreeNets are not defined for skip connections (residual, dense) or mlp nets; "
                      "use another --method")
    nets = {m: ctx.build(m, salt="treenet") for m in ctx.members}
    shapes = {m: [[_shape(layer) for layer in _layers(b)] for b in _blocks(net)] for m, net in nets.items()}
    n_blocks = min(len(s) for s in shapes.values())
    per_block = [min(len(s[b]) for s in shapes.values()) for b in range(n_blocks)]
    positions = [(b, i) for b in range(n_blocks) for i in range(per_block[b])]
    if shared_layers > len(positions):
        raise MNError(f"--shared-layers {shared_layers} is more than the {len(positions)} conv layers every "
                      "member has at the same positions", hint=f"use at most {len(positions)}")
    positions = positions[:shared_layers]
    last_b, last_i = positions[-1]

    trunk = nn.Sequential()
    donors: list[str] = []
    width = ctx.plan.input[0]
    for b, i in positions:
        kernel = min(shapes[m][b][i][0] for m in nets)
        donor = min(ctx.members, key=lambda m: (shapes[m][b][i][1], shapes[m][b][i][0], ctx.members.index(m)))
        layer = _layers(_blocks(nets[donor])[b])[i]
        if layer.conv.in_channels != width or _shape(layer)[0] != kernel:
            layer.conv = _rebuilt(layer.conv, width, kernel, derive_seed(ctx.seed, "treenet", f"{b}.{i}"))
        trunk.add_module(f"block{b + 1}_layer{i + 1}", layer)
        donors.append(donor)
        width = _shape(layer)[1]
        if b < last_b and i == per_block[b] - 1:
            trunk.add_module(f"block{b + 1}_pool", _blocks(nets[donor])[b].pool)

    branches: dict[str, nn.Sequential] = {}
    dropped: dict[str, list[str]] = {}
    retargeted: list[str] = []
    for m, net in nets.items():
        blocks = _blocks(net)
        lost = [f"block{b + 1}.layer{i + 1}"
                for b in range(last_b) for i in range(per_block[b], len(shapes[m][b]))]
        if lost:
            dropped[m] = lost
        branch = nn.Sequential()
        for i, layer in enumerate(_layers(blocks[last_b])[last_i + 1:], start=last_i + 2):
            branch.add_module(f"block{last_b + 1}_layer{i}", layer)
        branch.add_module(f"block{last_b + 1}_pool", blocks[last_b].pool)
        for b in range(last_b + 1, len(blocks)):
            branch.add_module(f"block{b + 1}", blocks[b])
        branch.add_module("head", net.get_submodule("head"))
        if _retarget_first(branch, width, derive_seed(ctx.seed, "treenet", m)):
            retargeted.append(m)
        branches[m] = branch
    return TreeNet(trunk, branches, [(b + 1, i + 1) for b, i in positions], donors, dropped, retargeted)


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The trunk once, then every branch: [branches, batch, classes]."""
    import torch

    h = model.get_submodule("trunk")(x)
    return torch.stack([b(h) for b in model.get_submodule("branches").children()])


def loss(out: torch.Tensor, y: torch.Tensor, _: Any) -> torch.Tensor:
    """The sum of the branches' cross-entropies."""
    import torch
    import torch.nn.functional as F

    return sum((F.cross_entropy(o.float(), y) for o in out), torch.zeros((), device=y.device))


def correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Early stopping watches the branches' mean training accuracy."""
    return (out.argmax(2) == y).double().sum() / out.shape[0]


def run(ctx: RunContext) -> Outcome:
    """Trunk and branches trained jointly on the sum of the branches' cross-entropies."""
    opts = options(ctx)
    tree = build_treenet(ctx, int(opts["shared_layers"]))
    for m, lost in tree.dropped.items():
        ctx.progress.note(f"treenet: {m} loses {', '.join(lost)} (the trunk has fewer layers there)")
    model = tree.module()
    job = Job("treenet", model, ctx.mother_settings, forward=forward, loss=loss, correct=correct, heads=list,
              required=True, extra={"method": "treenet", "shared_layers": len(tree.positions)})
    records = ctx.engine.run(ctx, Phase("treenet", [job]))
    require_ok(records[0].models, "TreeNet", "lower --lr: its branches are the ensemble")
    params = sum(p.numel() for p in model.parameters())
    info = {"shared_layers": len(tree.positions), "trunk_positions": [list(p) for p in tree.positions],
            "trunk_donors": tree.donors, "dropped_layers": tree.dropped, "retargeted": tree.retargeted,
            "params": params, "trunk_params": sum(p.numel() for p in tree.trunk.parameters())}
    return Outcome(records, tree.members(), {"treenet": info})
