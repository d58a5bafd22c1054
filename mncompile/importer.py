"""`mncompile import`: the `.mnet` net nearest to a PyTorch module written in the VGG, ResNet
(basic-block), DenseNet (non-bottleneck) or MLP style.

The module is traced with `torch.fx` (its forward as a graph of layers and operations), and the
graph is read as the family contract (docs/language.md) describes its nets:

- an `add` of two branches is a residual unit (the branch with the convolutions is its main path,
  the other its shortcut: the identity, a 1x1 projection, or parameter-free "option A");
- a `cat` is a dense layer (its new features: the branch with the convolution);
- otherwise convolutions make a plain (VGG) net, blocks closed by their max-pools;
- no convolution: an MLP.

What the family cannot say (conv biases, a 7x7 pool before a 4096 head, option-A shortcuts,
bottleneck layers, compression, other activations, dropout, ...) imports to the nearest net, and
each difference becomes a note. With no note the imported net has exactly the module's parameter
count. A module that fits no family is an MNError naming the first layer that does not fit.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

from mncompile.diagnostics import MNError

#: what a family's reader gives: family, the net's parts, notes, classes, input shape
Parsed = tuple[str, str, list[str], int, tuple[int, ...]]
FAMILY_HINT = ("mncompile imports VGG-style (conv-BN-ReLU blocks and max-pools), ResNet basic-block, "
               "DenseNet (non-bottleneck) and MLP modules (docs/language.md)")


@dataclass
class Layer:
    """One step of the traced forward."""

    kind: str  # conv bn relu act maxpool avgpool gap pool flatten linear dropout add cat shortcut other
    node: Any
    name: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Imported:
    """The net block, its family, input and classes, the differences and both parameter counts."""

    name: str
    family: str
    body: str  # the parts inside `net NAME FAMILY { ... }`
    input: tuple[int, ...]
    classes: int
    notes: list[str]
    theirs: int
    ours: int = 0

    def block(self) -> str:
        return f"net {self.name} {self.family} {{ {self.body} }}"


def import_module(module: Any, name: str, input_shape: tuple[int, ...] | None) -> Imported:
    """The nearest net to `module` (an nn.Module); MNError when it fits no family."""
    import torch
    import torch.fx

    if not isinstance(module, torch.nn.Module):
        raise MNError(f"got {type(module).__name__}, not a torch.nn.Module", hint=FAMILY_HINT)
    module = module.eval()
    try:
        gm = torch.fx.symbolic_trace(module)
    except Exception as err:  # noqa: BLE001 - what torch.fx says, without its traceback
        raise MNError(f"torch.fx cannot trace {type(module).__name__} ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''})",
                      hint="a forward without data-dependent control flow traces") from None
    layers = _layers(gm)
    theirs = sum(p.numel() for p in module.parameters() if p.requires_grad)
    kinds = {la.kind for la in layers}
    if "cat" in kinds:
        family, body, notes, classes, shape = _dense(layers, input_shape)
    elif "add" in kinds:
        family, body, notes, classes, shape = _residual(layers, input_shape)
    elif "conv" in kinds:
        family, body, notes, classes, shape = _plain(layers, input_shape)
    else:
        family, body, notes, classes, shape = _mlp(layers, input_shape)
    return Imported(name, family, body, shape, classes, notes, theirs)


# ------------------------------------------------------------------------------ the traced graph


def _layers(gm: Any) -> list[Layer]:
    import torch
    import torch.nn.functional as F

    modules = dict(gm.named_modules())
    out: list[Layer] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            m = modules[node.target]
            out.append(_module_layer(m, node, str(node.target)))
            continue
        target = node.target
        name = getattr(target, "__name__", str(target))
        if target in (operator.add, operator.iadd, torch.add) or name in ("add", "add_"):
            kind = "add"
        elif target in (torch.cat, torch.concat) or name == "cat":
            kind = "cat"
        elif target in (F.relu, torch.relu) or name in ("relu", "relu_"):
            kind = "relu"
        elif target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d):
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
            kind = "gap" if size in (1, (1,), (1, 1)) else "pool"
        elif name == "mean":
            kind = "gap"
        elif target in (torch.flatten,) or name in ("flatten", "view", "reshape", "size", "squeeze"):
            kind = "flatten"
        elif target in (F.pad,) or target is operator.getitem:
            kind = "shortcut"
        elif target in (F.max_pool1d, F.max_pool2d):
            kind = "maxpool"
        elif target in (F.avg_pool1d, F.avg_pool2d):
            kind = "avgpool"
        elif target in (F.dropout,):
            kind = "dropout"
        else:
            kind = "other"
        out.append(Layer(kind, node, f"{name} ({node.name})"))
    return out


def _module_layer(m: Any, node: Any, name: str) -> Layer:
    from torch import nn

    def pair(v: Any) -> int:
        return int(v[0]) if isinstance(v, (tuple, list)) else int(v)

    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        k = m.kernel_size
        return Layer("conv", node, name, {
            "kernel": pair(k), "square": len(set(k)) == 1, "cin": m.in_channels, "cout": m.out_channels,
            "stride": pair(m.stride), "padding": m.padding if isinstance(m.padding, str) else pair(m.padding),
            "bias": m.bias is not None, "groups": m.groups, "dim": 1 if isinstance(m, nn.Conv1d) else 2,
            "dilation": pair(m.dilation)})
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return Layer("bn", node, name, {"features": m.num_features, "affine": m.affine})
    if isinstance(m, nn.ReLU):
        return Layer("relu", node, name)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        stride = m.stride if m.stride is not None else m.kernel_size
        return Layer("maxpool", node, name, {"kernel": pair(m.kernel_size), "stride": pair(stride)})
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
        stride = m.stride if m.stride is not None else m.kernel_size
        return Layer("avgpool", node, name, {"kernel": pair(m.kernel_size), "stride": pair(stride)})
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        size = m.output_size
        one = size in (1, (1,), (1, 1))
        return Layer("gap" if one else "pool", node, name, {"size": size})
    if isinstance(m, nn.Linear):
        return Layer("linear", node, name, {"in": m.in_features, "out": m.out_features,
                                            "bias": m.bias is not None})
    if isinstance(m, (nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
        return Layer("dropout", node, name)
    if isinstance(m, nn.Flatten):
        return Layer("flatten", node, name)
    if isinstance(m, nn.Identity):
        return Layer("identity", node, name)
    if isinstance(m, (nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.ReLU6, nn.Hardswish)):
        return Layer("act", node, name, {"type": type(m).__name__})
    return Layer("other", node, name, {"type": type(m).__name__})


def _unsupported(la: Layer, why: str) -> MNError:
    what = la.info.get("type") or la.kind
    return MNError(f"layer '{la.name}' ({what}) does not fit: {why}", hint=FAMILY_HINT)


def _check_conv(la: Layer, notes: list[str], *, allow_stride: bool = False) -> None:
    i = la.info
    if i["groups"] != 1 or i["dilation"] != 1 or not i["square"]:
        raise _unsupported(la, "grouped, dilated and non-square convolutions are not in any family")
    if i["kernel"] % 2 == 0:
        raise _unsupported(la, f"its kernel {i['kernel']} is even; the families use odd kernels with "
                           "'same' padding")
    if i["padding"] not in (i["kernel"] // 2, "same"):
        notes.append(f"{la.name}: padding {i['padding']}, ours 'same' ({i['kernel'] // 2})")
    if i["stride"] != 1 and not allow_stride:
        notes.append(f"{la.name}: stride {i['stride']}, ours 1 (resolution is halved by the pooling)")
    if i["bias"]:
        notes.append(f"{la.name}: has a bias; ours has none (a BatchNorm follows)")


def _stem_norm(stem: Layer, by_node: dict[Any, Layer], notes: list[str],
               inside: set[Any] | None = None) -> None:
    """Note a stem convolution that no BatchNorm follows (the families' stem is conv -> BN -> ReLU);
    a BatchNorm `inside` a dense layer (its own, before its convolution) is not the stem's."""
    users = [by_node[u] for u in stem.node.users if u in by_node and u not in (inside or set())]
    if not any(u.kind == "bn" for u in users):
        notes.append(f"{stem.name}: the stem has no BatchNorm after it; ours has one")


def _input(shape: tuple[int, ...] | None, first_conv: Layer | None, flat: int | None) -> tuple[int, ...]:
    if first_conv is not None:
        dim, cin = first_conv.info["dim"], first_conv.info["cin"]
        if shape is None:
            raise MNError("a convolutional net needs --input (C x L, or C x H x W)",
                          hint=f"for example --input {cin}x32" + ("x32" if dim == 2 else ""))
        if len(shape) != dim + 1 or shape[0] != cin:
            raise MNError(f"--input {'x'.join(map(str, shape))} does not fit the first convolution "
                          f"'{first_conv.name}' ({cin} channels, {dim}-D)")
        return shape
    assert flat is not None
    if shape is not None and _prod(shape) != flat:
        raise MNError(f"--input {'x'.join(map(str, shape))} has {_prod(shape)} features, but the first "
                      f"Linear takes {flat}")
    return shape if shape is not None and len(shape) == 1 else (flat,)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _head(layers: list[Layer], features: int, notes: list[str]) -> tuple[list[int], int]:
    """The hidden widths and the class count of the Linear layers in `layers`."""
    linears = [la for la in layers if la.kind == "linear"]
    if not linears:
        raise MNError("the module has no Linear layer: the families end in Linear(classes)", hint=FAMILY_HINT)
    if linears[0].info["in"] != features:
        notes.append(f"{linears[0].name}: takes {linears[0].info['in']} inputs, ours {features} (global "
                     "average pooling before the head)")
    for a, b in zip(linears, linears[1:], strict=False):
        if a.info["out"] != b.info["in"]:
            raise _unsupported(b, f"it takes {b.info['in']} inputs after a Linear of {a.info['out']}")
    for la in linears:
        if not la.info["bias"]:
            notes.append(f"{la.name}: has no bias; ours has one")
    for la in layers:
        if la.kind == "dropout":
            notes.append(f"{la.name}: dropout, which the families do not have (dropped)")
        elif la.kind == "act":
            notes.append(f"{la.name}: {la.info['type']}, ours ReLU")
        elif la.kind == "pool":
            notes.append(f"{la.name}: adaptive pooling to {la.info['size']}, ours global average pooling")
        elif la.kind in ("other", "conv", "add", "cat", "bn"):
            raise _unsupported(la, "it comes after the head's first Linear layer")
    return [la.info["out"] for la in linears[:-1]], linears[-1].info["out"]


def _split_head(layers: list[Layer]) -> tuple[list[Layer], list[Layer]]:
    """(the features, the head): the head starts at the first Linear layer."""
    first = next((i for i, la in enumerate(layers) if la.kind == "linear"), len(layers))
    return layers[:first], layers[first:]


def _runs(items: list[tuple[int, int]]) -> str:
    """'3:16 x3 5:32' from [(3, 16), (3, 16), (3, 16), (5, 32)]."""
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j] == items[i]:
            j += 1
        k, f = items[i]
        parts.append(f"{k}:{f}" + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return " ".join(parts)


def _dense_part(hidden: list[int]) -> str:
    return f" dense {' '.join(map(str, hidden))}" if hidden else ""


# ------------------------------------------------------------------------------ the families


def _mlp(layers: list[Layer], shape: tuple[int, ...] | None) -> Parsed:
    notes: list[str] = []
    for la in layers:
        if la.kind == "bn":
            notes.append(f"{la.name}: BatchNorm, which the mlp family does not have (dropped)")
        elif la.kind in ("other", "maxpool", "avgpool", "shortcut"):
            raise _unsupported(la, "an MLP is Linear layers with ReLU between them")
    linears = [la for la in layers if la.kind == "linear"]
    if not linears:
        raise MNError("the module has neither a convolution nor a Linear layer", hint=FAMILY_HINT)
    inp = _input(shape, None, linears[0].info["in"])
    hidden, classes = _head([la for la in layers if la.kind != "bn"], linears[0].info["in"], notes)
    if not hidden:
        raise MNError("the MLP has no hidden layer: an mlp net needs at least one dense width",
                      hint=FAMILY_HINT)
    return "mlp", f"dense {' '.join(map(str, hidden))}", notes, classes, inp


def _plain(layers: list[Layer], shape: tuple[int, ...] | None) -> Parsed:
    notes: list[str] = []
    features, head = _split_head(layers)
    convs = [la for la in features if la.kind == "conv"]
    inp = _input(shape, convs[0], None)
    blocks: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    last_conv: Layer | None = None
    normed = True
    for la in features:
        if la.kind == "conv":
            if last_conv is not None and not normed:
                notes.append(f"{last_conv.name}: no BatchNorm after it; ours has one")
            _check_conv(la, notes)
            current.append((la.info["kernel"], la.info["cout"]))
            last_conv, normed = la, False
        elif la.kind == "bn":
            normed = True
        elif la.kind in ("maxpool", "avgpool"):
            if not current:
                raise _unsupported(la, "a pooling layer with no convolution before it in its block")
            if la.kind == "avgpool":
                notes.append(f"{la.name}: average pooling between blocks, ours max-pooling")
            elif (la.info["kernel"], la.info["stride"]) != (2, 2):
                notes.append(f"{la.name}: max-pool {la.info['kernel']}/{la.info['stride']}, ours 2/2")
            blocks.append(current)
            current = []
        elif la.kind in ("gap", "pool"):
            if la.kind == "pool":
                notes.append(f"{la.name}: adaptive pooling to {la.info['size']}, ours global average pooling")
            break
        elif la.kind == "act":
            notes.append(f"{la.name}: {la.info['type']}, ours ReLU")
        elif la.kind == "dropout":
            notes.append(f"{la.name}: dropout, which the families do not have (dropped)")
        elif la.kind not in ("relu", "flatten", "identity"):
            raise _unsupported(la, "a plain (VGG) net is conv-BN-ReLU layers and max-pools")
    if last_conv is not None and not normed:
        notes.append(f"{last_conv.name}: no BatchNorm after it; ours has one")
    if current:
        notes.append("the last convolutions have no pooling after them; ours pools after every block "
                     "(the same parameters)")
        blocks.append(current)
    hidden, classes = _head(head, convs[-1].info["cout"], notes)
    body = " ".join(f"block {{ {_runs(b)} }}" for b in blocks) + _dense_part(hidden)
    return "plain", body, notes, classes, inp


class _Graph:
    """The traced layers as a graph, for the readers of merges (a residual add, a dense cat)."""

    def __init__(self, layers: list[Layer]) -> None:
        self.features, self.head = _split_head(layers)
        self.by_node = {la.node: la for la in layers}
        # graph nodes that are no layer (placeholders) come first
        self.index = {n: -1 for n in layers[0].node.graph.nodes} | {la.node: i for i, la in enumerate(layers)}
        self.convs = [la for la in self.features if la.kind == "conv"]
        self._memo: dict[Any, frozenset[Any]] = {}

    def ancestors(self, node: Any) -> frozenset[Any]:
        memo = self._memo
        stack = [node]
        while stack:  # iterative: deep nets nest thousands of nodes
            n = stack.pop()
            if n in memo:
                continue
            pending = [p for p in n.all_input_nodes if p not in memo]
            if pending:
                stack.append(n)
                stack.extend(pending)
                continue
            acc: set[Any] = set()
            for p in n.all_input_nodes:
                acc |= memo[p] | {p}
            memo[n] = frozenset(acc)
        return memo[node]

    def branches(self, node: Any) -> tuple[Any, list[frozenset[Any]]]:
        """The fork of a merge node and, per input, the nodes from the fork to it."""
        sets = [self.ancestors(i) | {i} for i in node.all_input_nodes]
        fork = max(frozenset.intersection(*sets), key=lambda n: self.index[n])
        before = self.ancestors(fork) | {fork}
        return fork, [s - before for s in sets]

    def convs_in(self, nodes: frozenset[Any]) -> list[Layer]:
        """The convolutions among `nodes`, in forward order."""
        convs = [self.by_node[n] for n in nodes if n in self.by_node and self.by_node[n].kind == "conv"]
        return sorted(convs, key=lambda la: self.index[la.node])


def _residual(layers: list[Layer], shape: tuple[int, ...] | None) -> Parsed:
    notes: list[str] = []
    graph = _Graph(layers)
    features, head, by_node, convs = graph.features, graph.head, graph.by_node, graph.convs
    adds = [la for la in features if la.kind == "add"]
    inp = _input(shape, convs[0], None)
    units: list[dict[str, Any]] = []
    in_units: set[Any] = set()
    for la in adds:
        if len(la.node.all_input_nodes) != 2:
            raise _unsupported(la, "a residual unit adds two branches")
        fork, (a, b) = graph.branches(la.node)
        main, short = (a, b) if len(graph.convs_in(a)) >= len(graph.convs_in(b)) else (b, a)
        main_convs = graph.convs_in(main)
        short_layers = [by_node[n] for n in short if n in by_node and by_node[n].kind != "identity"]
        if len(main_convs) != 2:
            raise _unsupported(main_convs[0] if main_convs else la,
                               "a basic unit has two convolutions on its main path, this one "
                               f"{len(main_convs)}"
                               + (" (a bottleneck unit?)" if len(main_convs) == 3 else ""))
        kind = ("identity" if not short_layers else
                "projection" if any(x.kind == "conv" for x in short_layers) else "free")
        units.append({"convs": main_convs, "shortcut": kind, "fork": fork,
                      "width": main_convs[1].info["cout"], "stride": main_convs[0].info["stride"]})
        in_units |= main | short | {la.node}
    first_fork = units[0]["fork"]
    stem = [la for la in convs if la.node in graph.ancestors(first_fork) | {first_fork}]
    if not stem:
        raise MNError("the residual net has no convolution before its first unit (its stem)",
                      hint=FAMILY_HINT)
    if len(stem) > 1:
        notes.append(f"{len(stem)} convolutions before the first unit; ours has one stem convolution "
                     f"(imported as {stem[-1].name})")
    _check_conv(stem[-1], notes)
    _stem_norm(stem[-1], by_node, notes)
    for la in features:
        if la.node in in_units or la in stem:
            continue
        if la.kind in ("maxpool", "avgpool"):
            notes.append(f"{la.name}: pooling outside the units, which the residual family does not have")
        elif la.kind in ("other", "cat", "shortcut"):
            raise _unsupported(la, "it is outside every residual unit")
    stages: list[list[dict[str, Any]]] = []
    for i, u in enumerate(units):
        c1, c2 = u["convs"]
        for c in (c1, c2):
            _check_conv(c, notes, allow_stride=c is c1)
        if c1.info["kernel"] != c2.info["kernel"] or c1.info["cout"] != c2.info["cout"]:
            notes.append(f"unit {i + 1}: its convolutions are {c1.info['kernel']}:{c1.info['cout']} and "
                         f"{c2.info['kernel']}:{c2.info['cout']}, ours the same twice ({c2.info['kernel']}:"
                         f"{c2.info['cout']})")
        if c2.info["stride"] != 1:
            notes.append(f"unit {i + 1}: stride in its second convolution; ours in the first")
        new_stage = not stages or u["width"] != stages[-1][-1]["width"] or u["stride"] != 1
        if new_stage:
            stages.append([u])
        else:
            stages[-1].append(u)
    width_in = stem[-1].info["cout"]
    for s, stage in enumerate(stages):
        for j, u in enumerate(stage):
            want_stride = 2 if s > 0 and j == 0 else 1
            if u["stride"] != want_stride:
                notes.append(f"stage {s + 1} unit {j + 1}: stride {u['stride']}, ours {want_stride} (the "
                             "first "
                             "unit of every stage after the first halves the resolution)")
            changes = u["width"] != width_in or want_stride != 1
            ours = "projection" if changes else "identity"
            if u["shortcut"] != ours:
                theirs = {"free": "a parameter-free shortcut (option A: subsampling and zero padding)",
                          "identity": "an identity shortcut", "projection": "a 1x1 projection"}[u["shortcut"]]
                notes.append(f"stage {s + 1} unit {j + 1}: {theirs}, ours "
                             + ("a 1x1 conv + BN projection" if changes else "the identity"))
            width_in = u["width"]
    hidden, classes = _head(head, units[-1]["width"], notes)
    st = stem[-1].info
    body = (f"stem {st['kernel']}:{st['cout']} "
            + " ".join(f"block {{ {_runs([(u['convs'][1].info['kernel'], u['width']) for u in stage])} }}"
                       for stage in stages) + _dense_part(hidden))
    return "residual", body, notes, classes, inp


def _dense(layers: list[Layer], shape: tuple[int, ...] | None) -> Parsed:
    notes: list[str] = []
    graph = _Graph(layers)
    features, head, by_node, convs = graph.features, graph.head, graph.by_node, graph.convs
    inp = _input(shape, convs[0], None)
    in_layers: set[Any] = set()
    cat_of: dict[Any, tuple[int, int]] = {}
    for la in features:
        if la.kind != "cat":
            continue
        if len(la.node.all_input_nodes) < 2:
            raise _unsupported(la, "a dense layer concatenates its input and its new features")
        _, branches = graph.branches(la.node)
        new = [c for c in (graph.convs_in(b) for b in branches) if c]
        if len(new) != 1:
            raise _unsupported(la, "a dense layer concatenates one new branch to its input")
        branch = new[0]
        if len(branch) > 1:
            notes.append(f"{la.name}: a bottleneck layer ({len(branch)} convolutions); ours has one "
                         f"({branch[-1].name} kept)")
        for c in branch:
            _check_conv(c, notes)
        cat_of[la.node] = (branch[-1].info["kernel"], branch[-1].info["cout"])
        in_layers |= {n for b in branches for n in b} | {la.node}
    blocks: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    stem: Layer | None = None
    for la in features:
        if la.node in cat_of:
            current.append(cat_of[la.node])
        elif la.node in in_layers:
            continue
        elif la.kind == "conv":
            _check_conv(la, notes)
            if stem is None and not blocks and not current:
                stem = la
            elif current:
                if la.info["kernel"] != 1:
                    notes.append(f"{la.name}: a {la.info['kernel']}x{la.info['kernel']} transition "
                                 "convolution, ours 1x1")
                if la.info["cout"] != la.info["cin"]:
                    notes.append(f"{la.name}: the transition maps {la.info['cin']} to {la.info['cout']} "
                                 "channels (compression); ours keeps the channel count")
                blocks.append(current)
                current = []
            else:
                raise _unsupported(la, "a convolution between transitions outside any dense layer")
        elif la.kind in ("avgpool", "maxpool"):
            if la.kind == "maxpool" and stem is not None and not blocks and not current:
                notes.append(f"{la.name}: a max-pool after the stem, which the dense family does not have")
        elif la.kind in ("gap", "pool"):
            if la.kind == "pool":
                notes.append(f"{la.name}: adaptive pooling to {la.info['size']}, ours global average pooling")
            break
        elif la.kind in ("other", "add", "shortcut"):
            raise _unsupported(la, "a DenseNet is dense layers, transitions and a head")
    if current:
        blocks.append(current)
    if stem is None:
        raise MNError("the dense net has no convolution before its first dense layer (its stem)",
                      hint=FAMILY_HINT)
    width = stem.info["cout"] + sum(g for b in blocks for _, g in b)
    _stem_norm(stem, by_node, notes, in_layers)
    hidden, classes = _head(head, width, notes)
    body = (f"stem {stem.info['kernel']}:{stem.info['cout']} "
            + " ".join(f"block {{ {_runs(b)} }}" for b in blocks) + _dense_part(hidden))
    return "dense", body, notes, classes, inp
