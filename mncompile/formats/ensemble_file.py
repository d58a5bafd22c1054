"""The trained-ensemble file `OUT/ensemble.pt` (version 2): its fields, and its architectures as data.

`mncompile.runtime.ensemble` writes it with `torch.save` and reads it with
`torch.load(weights_only=True)`; docs/ensemble-file.md documents it. Besides the weights it holds
every architecture as plain data, so that loading it needs neither the generated folder nor any
code other than mncompile's:

- a `NetDescription` per architecture of a separate member: family, input shape, classes, stem,
  blocks of `(kernel, filters)` layers, the head's hidden widths (what plan.json says of a net);
- a `SharedDescription` per Shared-MotherNet: the `MOTHER`, `MEMBERS`, `GROUPS` and `STEPS` of
  its class in the generated shared.py (the layout of `mncompile.formats.share_plan`).

`read_net` and `read_shared` check every value (types, positive sizes below `MAX_SIZE`, odd
kernels, at most `MAX_LAYERS` layers, group ids that exist, channel counts that add up, pooling
that leaves at least one position) and raise `MNError` naming the file for anything else, so a
damaged or altered file never reaches torch. `net_tensors` and `shared_tensors` give the
state_dict keys and shapes a description makes, without allocating anything: the loader compares
them with the stored tensors before it builds a module. No torch, no IR.

>>> net = NetDescription("plain", (1, 8), 3, None, (((3, 4),),), (5,))
>>> read_net(net_to_data(net), "e.pt") == net
True
>>> list(net_tensors(net).items())[:2]
[('block1.layer1.conv.weight', (4, 1, 3)), ('block1.layer1.bn.weight', (4,))]
>>> read_net({**net_to_data(net), "blocks": [[[4, 4]]]}, "e.pt")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mncompile.diagnostics.MNError: error: 'e.pt' is damaged: block 1 layer 1 has kernel 4; ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from mncompile.diagnostics import MNError
from mncompile.formats.plan_file import NetStructure
from mncompile.formats.share_plan import ADD_STEP_FIELDS, LAYER_STEP_FIELDS, OPS, PART_FIELDS

FORMAT = "mncompile-ensemble"
#: 2: the architectures as data and a checksum; 1 named the generated folder to import
VERSION = 2
FILE_NAME = "ensemble.pt"
#: the fields of a version-2 file, each documented in docs/ensemble-file.md
FIELDS = ("format", "version", "mncompile", "ensemble", "plan_digest", "input", "classes", "method",
          "members", "excluded", "nets", "separate", "shared", "checksum")
FAMILIES = ("plain", "residual", "dense", "mlp")

#: limits on what a file may describe: sizes (channels, widths, kernels, classes, input sizes) are below
#: MAX_SIZE; a net has at most MAX_LAYERS layers, a Shared-MotherNet at most MAX_STEPS steps
MAX_SIZE = 1_000_000
MAX_LAYERS = 10_000
MAX_STEPS = 3 * MAX_LAYERS
MAX_GROUPS = 1_000_000
MAX_MEMBERS = 10_000
#: the (row group, column group) pairs of all the parts of a Shared-MotherNet together
MAX_CELLS = 10_000_000
MAX_NAME = 1_000
HINT = "train again to write it: the file was altered or written by something other than mncompile"
NET_FIELDS = ("family", "input", "classes", "stem", "blocks", "dense")
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

Shape = tuple[int, ...]


def _fail(where: str, message: str) -> NoReturn:
    raise MNError(f"'{where}' is damaged: {message}", hint=HINT)


def _int(where: str, value: Any, what: str, low: int = 1, high: int = MAX_SIZE - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(where, f"{what} is {_show(value)}, not a whole number")
    if not low <= value <= high:
        _fail(where, f"{what} is {value}, outside {low}..{high}")
    return value


def _kernel(where: str, value: Any, what: str) -> int:
    k = _int(where, value, f"{what}'s kernel")
    if k % 2 == 0:
        _fail(where, f"{what} has kernel {k}; a kernel is odd")
    return k


def _name(where: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        _fail(where, f"{what} is {_show(value)}, not a name")
    return value


def _seq(where: str, value: Any, what: str, limit: int) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        _fail(where, f"{what} is {_show(value)}, not a list")
    if len(value) > limit:
        _fail(where, f"{what} has {len(value)} entries, more than {limit}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_shape(where: str, value: Any) -> Shape:
    """An input shape: [N], [C, L] or [C, H, W], every size positive and below MAX_SIZE."""
    dims = _seq(where, value, "the input shape", 3)
    if not dims:
        _fail(where, "the input shape is empty")
    return tuple(_int(where, d, "an input size") for d in dims)


def read_names(where: str, value: Any, what: str, limit: int = MAX_MEMBERS) -> tuple[str, ...]:
    """A list of distinct names."""
    names = tuple(_name(where, v, f"a name in {what}") for v in _seq(where, value, what, limit))
    if len(set(names)) != len(names):
        _fail(where, f"{what} names a net twice")
    return names


# ----------------------------------------------------------------------------- separate nets


@dataclass(frozen=True)
class NetDescription:
    """One architecture of a generated models.py as data (its class's layers, input and classes)."""

    family: str
    input: Shape
    classes: int
    stem: tuple[int, int] | None
    blocks: tuple[tuple[tuple[int, int], ...], ...]
    dense: tuple[int, ...]

    @property
    def rank(self) -> int:
        """0 for a flat input, 1 for C x L, 2 for C x H x W."""
        return len(self.input) - 1


def describe_net(structure: NetStructure, input_shape: Sequence[int], classes: int) -> NetDescription:
    """The description of a net of plan.json (`PlanFile.nets`) for the plan's input and classes."""
    return NetDescription(structure.family, tuple(input_shape), classes, structure.stem, structure.blocks,
                          structure.dense)


def net_to_data(net: NetDescription) -> dict[str, Any]:
    """The description as what the file stores: plain lists, ints and strings."""
    return {"family": net.family, "input": list(net.input), "classes": net.classes,
            "stem": None if net.stem is None else list(net.stem),
            "blocks": [[list(layer) for layer in block] for block in net.blocks], "dense": list(net.dense)}


def read_net(data: Any, where: str, name: str = "a net") -> NetDescription:
    """A stored net description, every value checked; MNError naming `where` otherwise."""
    what = f"net {name}" if name != "a net" else name
    if not isinstance(data, Mapping) or set(data) != set(NET_FIELDS):
        _fail(where, f"{what} is not a net description (family, input, classes, stem, blocks, dense)")
    family = data["family"]
    if family not in FAMILIES:
        _fail(where, f"{what} has family {_show(family)}, not one of {', '.join(FAMILIES)}")
    shape = read_shape(where, data["input"])
    classes = _int(where, data["classes"], f"{what}'s class count")
    if family != "mlp" and len(shape) == 1:
        _fail(where, f"{what} is a {family} net on a flat input")
    stem = None
    if data["stem"] is not None:
        pair = _seq(where, data["stem"], f"{what}'s stem", 2)
        if len(pair) != 2:
            _fail(where, f"{what}'s stem is not [kernel, filters]")
        stem = (_kernel(where, pair[0], "the stem"), _int(where, pair[1], "the stem's filters"))
    if (stem is not None) != (family in ("residual", "dense")):
        _fail(where, f"{what} is a {family} net {'with' if stem is not None else 'without'} a stem")
    blocks = []
    count = 0
    for b, block in enumerate(_seq(where, data["blocks"], f"{what}'s blocks", MAX_LAYERS), start=1):
        layers = []
        for i, layer in enumerate(_seq(where, block, f"block {b}", MAX_LAYERS), start=1):
            pair = _seq(where, layer, f"block {b} layer {i}", 2)
            if len(pair) != 2:
                _fail(where, f"block {b} layer {i} is not [kernel, filters]")
            layers.append((_kernel(where, pair[0], f"block {b} layer {i}"),
                           _int(where, pair[1], f"block {b} layer {i}'s filters")))
        if not layers:
            _fail(where, f"{what}'s block {b} has no layers")
        count += len(layers)
        if count > MAX_LAYERS:
            _fail(where, f"{what} has more than {MAX_LAYERS} layers")
        blocks.append(tuple(layers))
    if bool(blocks) != (family != "mlp"):
        _fail(where, f"{what} is a {family} net {'with' if blocks else 'without'} blocks")
    dense = tuple(_int(where, w, f"{what}'s hidden width") for w in
                  _seq(where, data["dense"], f"{what}'s hidden widths", MAX_LAYERS - count))
    net = NetDescription(family, shape, classes, stem, tuple(blocks), dense)
    _check_pooling(net, where, what)
    return net


def _check_pooling(net: NetDescription, where: str, what: str) -> None:
    spatial = net.input[1:]
    pools = {"plain": len(net.blocks), "dense": max(0, len(net.blocks) - 1)}.get(net.family, 0)
    for b in range(1, pools + 1):
        if min(spatial) < 2:
            _fail(where, f"{what}'s block {b} pools an input of size {'x'.join(map(str, spatial))}")
        spatial = tuple(s // 2 for s in spatial)


def _bn(prefix: str, channels: int) -> dict[str, Shape]:
    return {f"{prefix}.{k}": (() if k == "num_batches_tracked" else (channels,)) for k in BN_KEYS}


def net_tensors(net: NetDescription) -> dict[str, Shape]:
    """The state_dict keys and shapes, in order, of the module the description makes.

    They are those of its class in the generated models.py (docs/parameter-names.md).
    """
    out: dict[str, Shape] = {}
    taps = (lambda k: (k,) * net.rank)  # noqa: E731

    def conv(prefix: str, cin: int, cout: int, k: int) -> None:
        out[f"{prefix}.weight"] = (cout, cin, *taps(k))

    if net.family == "mlp":
        c = math.prod(net.input)
    else:
        c = net.input[0]
    if net.stem is not None:
        conv("stem.conv", c, net.stem[1], net.stem[0])
        out.update(_bn("stem.bn", net.stem[1]))
        c = net.stem[1]
    for b, block in enumerate(net.blocks, start=1):
        for i, (k, f) in enumerate(block, start=1):
            if net.family == "plain":
                conv(f"block{b}.layer{i}.conv", c, f, k)
                out.update(_bn(f"block{b}.layer{i}.bn", f))
                c = f
            elif net.family == "residual":
                p = f"block{b}.unit{i}"
                conv(f"{p}.conv1", c, f, k)
                out.update(_bn(f"{p}.bn1", f))
                conv(f"{p}.conv2", f, f, k)
                out.update(_bn(f"{p}.bn2", f))
                if (b > 1 and i == 1) or c != f:
                    conv(f"{p}.shortcut.conv", c, f, 1)
                    out.update(_bn(f"{p}.shortcut.bn", f))
                c = f
            else:
                out.update(_bn(f"block{b}.layer{i}.bn", c))
                conv(f"block{b}.layer{i}.conv", c, f, k)
                c += f
        if net.family == "dense" and b < len(net.blocks):
            out.update(_bn(f"transition{b}.bn", c))
            conv(f"transition{b}.conv", c, c, 1)
    if net.family == "dense":
        out.update(_bn("head.bn", c))
    for i, w in enumerate(net.dense, start=1):
        out[f"head.fc{i}.weight"], out[f"head.fc{i}.bias"] = (w, c), (w,)
        c = w
    out["head.out.weight"], out["head.out.bias"] = (net.classes, c), (net.classes,)
    return out


# ----------------------------------------------------------------------------- Shared-MotherNets


@dataclass(frozen=True)
class SharedDescription:
    """One Shared-MotherNet as data: its class's MOTHER, MEMBERS, INPUT_SHAPE, NUM_CLASSES, GROUPS, STEPS."""

    mother: str
    members: tuple[str, ...]
    input: Shape
    classes: int
    groups: Mapping[int, tuple[str | None, int]]
    steps: tuple[Mapping[str, Any], ...]

    @property
    def rank(self) -> int:
        return len(self.input) - 1


def describe_shared(shared: Any) -> SharedDescription:
    """The description of a Shared-MotherNet module (a generated SharedNet, or the runtime's generic one)."""
    return SharedDescription(str(shared.MOTHER), tuple(shared.MEMBERS), tuple(shared.INPUT_SHAPE),
                             int(shared.NUM_CLASSES), dict(shared.GROUPS), tuple(shared.STEPS))


def shared_to_data(shared: SharedDescription) -> dict[str, Any]:
    """The description as what the file stores: ints, strings, None, tuples, lists and dicts."""
    return {"mother": shared.mother, "members": list(shared.members), "input": list(shared.input),
            "classes": shared.classes, "groups": {int(g): tuple(v) for g, v in shared.groups.items()},
            "steps": tuple(dict(step) for step in shared.steps)}


def _ids(where: str, value: Any, what: str, groups: Mapping[int, Any]) -> tuple[int, ...]:
    ids = _seq(where, value, what, MAX_GROUPS)
    for g in ids:
        if isinstance(g, bool) or not isinstance(g, int) or g not in groups:
            _fail(where, f"{what} names group {_show(g)}, which GROUPS does not have")
    if len(set(ids)) != len(ids):
        _fail(where, f"{what} names a group twice")
    return tuple(ids)


def read_shared(data: Any, where: str) -> SharedDescription:
    """A stored Shared-MotherNet, every value checked; MNError naming `where` otherwise.

    Beyond the types and sizes it follows the channels through the steps as the module will, so
    that every step reads groups that are live, a residual sum adds groups of one size, pooling
    leaves at least one position, and the last step makes each member's `classes` logits in
    `MEMBERS` order.
    """
    keys = {"mother", "members", "input", "classes", "groups", "steps"}
    if not isinstance(data, Mapping) or not keys <= set(data):
        _fail(where, "a Shared-MotherNet entry lacks " + ", ".join(sorted(keys - set(data or ()))))
    mother = _name(where, data["mother"], "a Shared-MotherNet's name")
    what = f"Shared-MotherNet {mother}"
    members = read_names(where, data["members"], f"{what}'s members")
    if not members:
        _fail(where, f"{what} has no members")
    shape = read_shape(where, data["input"])
    classes = _int(where, data["classes"], f"{what}'s class count")
    raw_groups = data["groups"]
    if not isinstance(raw_groups, Mapping) or not 0 < len(raw_groups) <= MAX_GROUPS:
        _fail(where, f"{what}'s GROUPS is not a table of groups")
    groups: dict[int, tuple[str | None, int]] = {}
    for g, entry in raw_groups.items():
        gid = _int(where, g, f"{what}'s group id", 0, 10 * MAX_GROUPS)
        pair = _seq(where, entry, f"{what}'s group {gid}", 2)
        if len(pair) != 2 or (pair[0] is not None and pair[0] not in members):
            _fail(where, f"{what}'s group {gid} is not (None or a member, channels)")
        groups[gid] = (pair[0], _int(where, pair[1], f"{what}'s group {gid}'s channels"))
    steps = tuple(_read_step(where, what, i, s, groups, members)
                  for i, s in enumerate(_seq(where, data["steps"], f"{what}'s STEPS", MAX_STEPS)))
    desc = SharedDescription(mother, members, shape, classes, groups, steps)
    _follow_channels(desc, where, what)
    return desc


def _flag(where: str, value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        _fail(where, f"{what} is {_show(value)}, not True or False")
    return value


def _read_step(where: str, what: str, i: int, step: Any, groups: Mapping[int, Any],
               members: tuple[str, ...]) -> dict[str, Any]:
    at = f"{what}'s step {i}"
    if not isinstance(step, Mapping) or step.get("op") not in OPS:
        _fail(where, f"{at} is not a step (a dict whose 'op' is one of {', '.join(OPS)})")
    op = step["op"]
    fields = {"add": ADD_STEP_FIELDS, "conv": LAYER_STEP_FIELDS, "linear": LAYER_STEP_FIELDS,
              "norm": LAYER_STEP_FIELDS}.get(op, ("op",))
    if set(step) != set(fields):
        _fail(where, f"{at} ('{op}') has the fields {sorted(map(str, step))}, not {sorted(fields)}")
    if fields == ("op",):
        return {"op": op}
    out: dict[str, Any] = {"op": op, "name": _name(where, step["name"], f"{at}'s name")}
    if op == "conv":
        out["kernel"] = _kernel(where, step["kernel"], at)
    elif step["kernel"] is not None:
        _fail(where, f"{at} is a '{op}' step with a kernel")
    else:
        out["kernel"] = None
    stride = step["stride"]
    if stride not in (1, 2) or isinstance(stride, bool) or (op != "conv" and stride != 1):
        _fail(where, f"{at} has stride {_show(stride)}")
    out["stride"] = stride
    if step["pre"] not in (None, "relu", "bn_relu"):
        _fail(where, f"{at} has pre {_show(step['pre'])}, not None, 'relu' or 'bn_relu'")
    out["pre"] = step["pre"]
    for key in ("bn", "relu", "bias"):
        out[key] = _flag(where, step[key], f"{at}'s {key}")
    for key in ("reads", "makes", "carries"):
        out[key] = _ids(where, step[key], f"{at}'s {key}", groups)
    if set(out["makes"]) & (set(out["reads"]) | set(out["carries"])):
        _fail(where, f"{at} makes a group it reads or carries")
    if op == "add":
        if out["pre"] is not None or out["bn"] or out["bias"]:
            _fail(where, f"{at} is a residual sum with weights")
        sums = []
        for entry in _seq(where, step["sums"], f"{at}'s sums", MAX_GROUPS):
            pair = _seq(where, entry, f"{at}'s sum", 2)
            if len(pair) != 2:
                _fail(where, f"{at} has a sum that is not (group, terms)")
            terms = []
            for term in _seq(where, pair[1], f"{at}'s terms", MAX_GROUPS):
                t = _seq(where, term, f"{at}'s term", 2)
                w = t[1] if len(t) == 2 else None
                if (len(t) != 2 or isinstance(w, bool) or not isinstance(w, (int, float))
                        or not math.isfinite(w) or abs(w) > MAX_SIZE):
                    _fail(where, f"{at} has a term that is not (group, finite coefficient)")
                terms.append((_ids(where, (t[0],), f"{at}'s term", groups)[0], float(w)))
            if not terms:
                _fail(where, f"{at} has a sum without terms")
            sums.append((_ids(where, (pair[0],), f"{at}'s sum", groups)[0], tuple(terms)))
        if tuple(g for g, _ in sums) != out["makes"]:
            _fail(where, f"{at}'s sums are not its made groups in order")
        out["sums"] = tuple(sums)
        return out
    blocks = tuple(_ids(where, b, f"{at}'s block", groups)
                   for b in _seq(where, step["blocks"], f"{at}'s blocks", MAX_GROUPS))
    if op == "norm" and blocks:
        _fail(where, f"{at} is a 'norm' step with weight blocks")
    if op != "norm" and tuple(g for b in blocks for g in b) != out["makes"]:
        _fail(where, f"{at}'s blocks are not its made groups in order")
    if any(not b for b in blocks):
        _fail(where, f"{at} has an empty block")
    out["blocks"] = blocks
    parts = []
    for part in _seq(where, step["parts"], f"{at}'s parts", MAX_MEMBERS * 4):
        if not isinstance(part, Mapping) or set(part) != set(PART_FIELDS):
            _fail(where, f"{at} has a part whose fields are not {sorted(PART_FIELDS)}")
        if part["member"] not in members:
            _fail(where, f"{at} has a part of {_show(part['member'])}, not a member")
        p: dict[str, Any] = {"member": part["member"]}
        for key in ("key", "bn", "pre"):
            if part[key] is not None:
                _name(where, part[key], f"{at}'s part's {key}")
            p[key] = part[key]
        p["rows"] = _ids(where, part["rows"], f"{at}'s part's rows", groups)
        p["cols"] = _ids(where, part["cols"], f"{at}'s part's cols", groups)
        if not set(p["rows"]) <= set(out["makes"]) or not set(p["cols"]) <= set(out["reads"]):
            _fail(where, f"{at} has a part whose rows are not made or whose cols are not read there")
        if op == "conv":
            p["kernel"] = _kernel(where, part["kernel"], f"{at}'s part")
            if p["kernel"] > out["kernel"]:
                _fail(where, f"{at} has a part whose kernel is larger than the step's")
        elif part["kernel"] is not None:
            _fail(where, f"{at} is a '{op}' step with a part that has a kernel")
        else:
            p["kernel"] = None
        parts.append(p)
    for rows in blocks:
        if not any(set(rows) & set(p["rows"]) for p in parts):
            _fail(where, f"{at} has a weight block that no part writes")
    out["parts"] = tuple(parts)
    return out


def _follow_channels(desc: SharedDescription, where: str, what: str) -> None:
    """Walk the steps as the module's forward pass does, checking what each step reads."""
    size = {g: c for g, (_, c) in desc.groups.items()}
    rank = desc.rank
    channels, spatial = desc.input[0], desc.input[1:]
    flat = rank == 0
    live: tuple[int, ...] = (0,)
    if 0 not in desc.groups:
        _fail(where, f"{what} has no group 0 (its input)")
    cells = 0
    for i, step in enumerate(desc.steps):
        op, at = step["op"], f"{what}'s step {i} ('{step['op']}')"
        if op in ("pool", "avgpool"):
            if flat or min(spatial) < 2:
                _fail(where, f"{at} pools an input of size {'x'.join(map(str, spatial)) or 'flat'}")
            spatial = tuple(s // 2 for s in spatial)
            continue
        if op in ("gap", "flatten"):
            if op == "gap" and flat:
                _fail(where, f"{at} pools a flat input")
            if not flat:
                channels *= math.prod(spatial) if op == "flatten" else 1
                flat, spatial = True, ()
            continue
        if sum(size[g] for g in live) != channels:
            _fail(where, f"{at}: the live groups have {sum(size[g] for g in live)} channels, the input "
                  f"{channels}")
        if not set(step["reads"]) | set(step["carries"]) <= set(live):
            _fail(where, f"{at} reads or carries a group that is not live")
        if op == "conv" and flat:
            _fail(where, f"{at} convolves a flat input")
        if op == "linear" and not flat:
            _fail(where, f"{at} is a linear map on an input that is not flat")
        if flat and rank == 2 and (step["bn"] or step["pre"] == "bn_relu"):
            _fail(where, f"{at} has a 2-D BatchNorm on a flat input")
        if op == "norm" and (sum(size[g] for g in step["makes"]) != sum(size[g] for g in step["reads"])):
            _fail(where, f"{at} makes another number of channels than it reads")
        if op == "add":
            for made, terms in step["sums"]:
                if any(g not in live or size[g] != size[made] for g, _ in terms):
                    _fail(where, f"{at} adds groups that are not live or not of {size[made]} channels")
        else:
            cells += sum(len(p["rows"]) * len(p["cols"]) for p in step["parts"])
            if cells > MAX_CELLS:
                _fail(where, f"{what}'s parts connect more than {MAX_CELLS} pairs of groups")
        if op == "conv" and step["stride"] == 2:
            spatial = tuple((s - 1) // 2 + 1 for s in spatial)
        live = step["makes"] + step["carries"]
        channels = sum(size[g] for g in live)
    heads = [desc.groups[g] for g in live]
    if not flat or heads != [(m, desc.classes) for m in desc.members]:
        _fail(where, f"{what}'s last step does not make {desc.classes} logits for each member in order")


def shared_tensors(desc: SharedDescription) -> dict[str, Shape]:
    """The state_dict keys and shapes of the Shared-MotherNet the description makes (any order)."""
    size = {g: c for g, (_, c) in desc.groups.items()}
    out: dict[str, Shape] = {}
    for i, step in enumerate(desc.steps):
        if step["op"] not in ("conv", "linear", "norm"):
            continue
        n_in = sum(size[g] for g in step["reads"])
        n_out = sum(size[g] for g in step["makes"])
        if step["bias"]:
            out[f"steps.{i}.bias"] = (n_out,)
        if step["pre"] == "bn_relu":
            out.update(_bn(f"steps.{i}.pre", n_in))
        rank = desc.rank if step["kernel"] is not None else 0
        for j, rows in enumerate(step["blocks"]):
            writers = [p for p in step["parts"] if set(p["rows"]) & set(rows)]
            cols = [g for g in step["reads"] if any(g in p["cols"] for p in writers)]
            kernel = max(p["kernel"] for p in writers) if rank else 1
            out[f"steps.{i}.blocks.{j}.weight"] = (sum(size[g] for g in rows), sum(size[g] for g in cols),
                                                   *(kernel,) * rank)
        if step["bn"]:
            out.update(_bn(f"steps.{i}.bn", n_out))
    return out
