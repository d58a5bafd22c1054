"""Code generation: the passes' results -> the text of the generated files.

This module only renders: `emit_files` takes the plan, hatching tables and share plans that
`mncompile.compiler.PIPELINE` made and returns {relative path: text}; it runs no pass and
writes nothing (`mncompile.writer` does). The view of every file is computed here in Python;
the jinja2 templates in `templates/` only loop over it. Every identifier that comes from the
spec is handed out by one `naming.Namespace`; spec text reaches the source only through
`py_str` or `comment_text`.

>>> from mncompile.api import loads
>>> e = loads("ensemble e { input 8; classes 3; net a mlp { dense 4 } }")
>>> m = load_models(models_source(e, e.nets))
>>> sorted(m.MODELS), m.MODELS["a"].INPUT_SHAPE, m.MODELS["a"].NUM_CLASSES
(['a'], (8,), 3)
"""

from __future__ import annotations

import linecache
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import jinja2

from mncompile import __version__
from mncompile.diagnostics import MNError
from mncompile.ir import TRAIN_DEFAULTS, Ensemble, Layer, Net
from mncompile.naming import MODULE_NAMES, Namespace, comment_text, py_str
from mncompile.resources import templates_dir
from mncompile.shapes import infer_net
from mncompile.table import human
from mncompile.writer import MARKER, MARKER_TEXT

if TYPE_CHECKING:
    from mncompile.formats.hatch_table import HatchTable
    from mncompile.passes.cluster import Plan
    from mncompile.passes.share_plan import Refusal, SharePlan

LINE_LENGTH = 110


@cache
def environment() -> jinja2.Environment:
    """The one jinja2 environment: strict, whitespace-controlled, loaded from the templates folder."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render(template: str, **view: Any) -> str:
    return environment().get_template(template).render(**view)


# ---------------------------------------------------------------------------------------------
# models.py


@dataclass(frozen=True)
class ClassView:
    """What the template needs for one generated class."""

    name: str
    key: str
    doc: str
    input_shape: str
    classes: int
    init: list[str]
    forward: list[str]


def _layers_expr(layers: Sequence[Layer], width: int = LINE_LENGTH) -> list[str]:
    """The layers as `[(k, f)] * n` runs and `[(k, f), ...]` lists, mirroring the spec's `k:f xn`.

    Joined with ` + `, the parts rebuild the list; no part is longer than `width`.
    """
    runs: list[tuple[int, int, int]] = []
    for layer in layers:
        if runs and runs[-1][:2] == (layer.kernel, layer.filters):
            runs[-1] = (layer.kernel, layer.filters, runs[-1][2] + 1)
        else:
            runs.append((layer.kernel, layer.filters, 1))
    parts: list[str] = []
    singles: list[str] = []

    def flush() -> None:
        if singles:
            parts.append("[" + ", ".join(singles) + "]")
            singles.clear()

    for k, f, n in runs:
        if n > 1:
            flush()
            parts.append(f"[({k}, {f})] * {n}")
            continue
        item = f"({k}, {f})"
        if singles and len(", ".join([*singles, item])) + 2 > width:
            flush()
        singles.append(item)
    flush()
    return parts


def _call(target: str, func: str, args: Sequence[str], layers: Sequence[Layer],
          trailing: Sequence[str] = ()) -> list[str]:
    """`target = func(args..., <layers>, trailing...)`, wrapped when it would pass the line length."""
    indent = 8
    one = f"{target} = {func}(" + ", ".join([*args, " + ".join(_layers_expr(layers)), *trailing]) + ")"
    if len(one) + indent <= LINE_LENGTH:
        return [one]
    parts = _layers_expr(layers, LINE_LENGTH - indent - 6)
    head = f"{target} = {func}(" + "".join(a + ", " for a in args) + "("
    body = ["    " + parts[0]] + ["    + " + p for p in parts[1:]]
    tail = ")" + "".join(", " + t for t in trailing) + ")"
    return [head, *body, tail]


def _net_body(net: Net, input_shape: tuple[int, ...], classes: int) -> tuple[list[str], list[str]]:
    """The `__init__` lines and the `forward` lines of one net."""
    init: list[str] = []
    steps: list[str] = []
    hidden = "[" + ", ".join(str(w) for w in net.widths) + "]"
    if net.family == "mlp":
        extra = ", pool=False" if len(input_shape) > 1 else ""
        init.append(f"self.head = Head({math.prod(input_shape)}, {hidden}, {classes}{extra})")
        return init, ["return self.head(x)"]
    c = input_shape[0]
    if net.family != "plain":
        stem = net.stem
        assert stem is not None
        init.append(f"self.stem = ConvBN({c}, {stem.filters}, {stem.kernel})")
        steps.append("stem")
        c = stem.filters
    last = len(net.blocks)
    for b, block in enumerate(net.blocks, start=1):
        parts = block.layers
        if net.family == "plain":
            init += _call(f"self.block{b}", "PlainBlock", [str(c)], parts)
            c = block.layers[-1].filters
        elif net.family == "residual":
            init += _call(f"self.block{b}", "ResidualStage", [str(c)], parts,
                          [f"stride={1 if b == 1 else 2}"])
            c = block.layers[-1].filters
        else:
            init += _call(f"self.block{b}", "DenseBlock", [str(c)], parts)
            c += sum(layer.filters for layer in block.layers)
        steps.append(f"block{b}")
        if net.family == "dense" and b < last:
            init.append(f"self.transition{b} = Transition({c})")
            steps.append(f"transition{b}")
    bn = ", bn=True" if net.family == "dense" else ""
    init.append(f"self.head = Head({c}, {hidden}, {classes}{bn})")
    forward = [f"x = self.{s}(x)" for s in steps] + ["return self.head(x)"]
    return init, forward


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, LINE_LENGTH - 8, break_long_words=False, break_on_hyphens=False)


def _class_doc(net: Net, ensemble: Ensemble, source: str, params: int,
               mothers: Mapping[str, Sequence[str]], mother_of: Mapping[str, str]) -> str:
    """The class docstring: what the net is, where it comes from, what it takes."""
    name = comment_text(net.name)
    io = f"Input {'x'.join(map(str, ensemble.input))}, {ensemble.classes} classes."
    if net.name in mothers:
        summary = f"{name}: MotherNet ({net.family}, {human(params)} parameters), built by mncompile."
        members = ", ".join(comment_text(m) for m in mothers[net.name])
        body = f"Built for the members that hatch from it: {members}. {io}"
    else:
        where = (f"from {source}:{net.name_span.line}:{net.name_span.column}"
                 if net.name_span.line > 0 else f"from {source}")
        summary = f"{name}: {net.family} net, {human(params)} parameters, {where}."
        hatched = f"Hatched from {comment_text(mother_of[net.name])}. " if net.name in mother_of else ""
        body = hatched + io
    return "\n".join([summary, "", *_wrap(body)])


BLOCKS_BY_FAMILY: dict[str, tuple[str, ...]] = {
    "plain": ("ConvBN", "PlainBlock"),
    "residual": ("ConvBN", "ResidualUnit", "ResidualStage"),
    "dense": ("ConvBN", "DenseLayer", "DenseBlock", "Transition"),
    "mlp": (),
}
#: the order building blocks appear in (each after the ones it uses)
BLOCK_ORDER: tuple[str, ...] = (
    "ConvBN", "PlainBlock", "ResidualUnit", "ResidualStage", "DenseLayer", "DenseBlock",
    "Transition", "Head",
)


def source_name_of(ensemble: Ensemble, source_name: str | None = None) -> str:
    """The spec's name as generated files cite it: by default its file name, never a directory."""
    return source_name if source_name is not None else Path(ensemble.source).name


def models_source(
    ensemble: Ensemble,
    nets: Sequence[Net],
    source_name: str | None = None,
    *,
    mothers: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The text of a standalone models.py: one nn.Module class per net, in the given order.

    `nets` may mix members and MotherNets; `mothers` maps each MotherNet's name to the
    members it was built for (for the docstrings). Raises `MNError` for duplicate names.
    """
    return render("models.py.j2", **models_view(ensemble, nets, source_name, mothers=mothers))


def models_view(
    ensemble: Ensemble,
    nets: Sequence[Net],
    source_name: str | None = None,
    *,
    mothers: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The template view of models.py (see `models_source`)."""
    mothers = dict(mothers or {})
    mother_of = {m: mother for mother, members in mothers.items() for m in members}
    seen: set[str] = set()
    for net in nets:
        if net.name in seen:
            raise MNError(f"two nets are both named '{net.name}' in one generated module",
                          net.name_span if net.name_span.line > 0 else None,
                          hint="every net and MotherNet needs its own name")
        seen.add(net.name)
    source = comment_text(source_name_of(ensemble, source_name))
    rank = ensemble.rank
    namespace = Namespace(MODULE_NAMES)
    classes: list[ClassView] = []
    used: set[str] = {"Head"}
    for net in nets:
        if rank == 0 and net.family != "mlp":
            raise MNError(f"net '{net.name}' is a {net.family} net but the input is flat",
                          net.family_span if net.family_span.line > 0 else None,
                          hint="only mlp nets take a flat input")
        params = infer_net(net, ensemble.input, ensemble.classes).params
        init, forward = _net_body(net, ensemble.input, ensemble.classes)
        used.update(BLOCKS_BY_FAMILY[net.family])
        classes.append(ClassView(
            name=namespace.class_name(net.name),
            key=py_str(net.name),
            doc=_class_doc(net, ensemble, source, params, mothers, mother_of),
            input_shape=repr(tuple(ensemble.input)),
            classes=ensemble.classes,
            init=init,
            forward=forward,
        ))
    blocks = [b for b in BLOCK_ORDER if b in used]
    ens = comment_text(ensemble.name)
    doc = "\n".join([
        f"PyTorch modules of ensemble {ens}, generated by mncompile {__version__} from {source}.",
        "",
        "Do not edit: recompile the spec instead. One class per net (MotherNets and members);",
        "their state_dict keys follow mncompile's parameter-name contract, which the hatching",
        "tables refer to. MODELS maps each net's spec name to its class.",
    ])
    return {
        "doc": doc,
        "d": f"{rank}d" if rank else "",
        "blocks": blocks,
        "uses_functional": any(b in used for b in ("ResidualUnit", "DenseLayer", "Transition")),
        "classes": classes,
    }


def load_models(source: str, module_name: str = "mncompile_generated_models") -> ModuleType:
    """Execute generated models.py text as a fresh module (not put in `sys.modules`)."""
    module = ModuleType(module_name)
    filename = f"<{module_name}>"
    # so that tracebacks and inspect.getsource show the generated lines
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module.__file__ = filename
    exec(compile(source, filename, "exec"), module.__dict__)
    return module


# ---------------------------------------------------------------------------------------------
# the whole folder


@dataclass
class EmitContext:
    """Everything the renderers of the generated folder may read: the passes' results, rendered only."""

    ensemble: Ensemble
    plan: Plan
    #: the hatching table of every member of a cluster of two or more nets, in spec order
    tables: Mapping[str, HatchTable]
    #: per cluster of two or more nets (by MotherNet name): its Shared-MotherNet, or why not
    share_plans: Mapping[str, SharePlan | Refusal]
    #: the spec's file name, unescaped
    source_name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def mothers(self) -> list[Net]:
        return [c.mother for c in self.plan.clusters]

    @property
    def built_for(self) -> dict[str, list[str]]:
        return {c.mother.name: list(c.members) for c in self.plan.clusters}

    @cached_property
    def hatch_files(self) -> dict[str, str]:
        """Each table's path, `hatch/<member>.json`: names unique even on case-insensitive disks."""
        # device names that Windows will not open as files, whatever the extension
        windows = ["con", "prn", "aux", "nul"] + [f"{p}{i}" for p in ("com", "lpt") for i in range(1, 10)]
        namer = Namespace(windows, casefold=True, python=False)
        return {m: f"hatch/{namer.create_name(m)}.json" for m in self.tables}


Renderer = Callable[[EmitContext], dict[str, str]]


def render_models(ctx: EmitContext) -> dict[str, str]:
    nets = [*ctx.mothers, *ctx.ensemble.nets]
    return {"models.py": models_source(ctx.ensemble, nets, ctx.source_name, mothers=ctx.built_for)}


def render_hatch(ctx: EmitContext) -> dict[str, str]:
    """hatch/<member>.json: one table per member of every cluster of two or more nets."""
    from mncompile.formats.hatch_table import table_dumps

    files = ctx.hatch_files
    # one line per entry, map and MotherNet tensor: a recompile's diff shows what changed
    return {files[m]: table_dumps(t) for m, t in ctx.tables.items()}


def render_train(ctx: EmitContext) -> dict[str, str]:
    """train.py: the spec's training settings and dataset, handed to mncompile.runtime.pipeline."""
    e = ctx.ensemble
    config = e.config.model_dump()
    train = [(py_str(k), _literal(config[k])) for k in TRAIN_DEFAULTS]
    return {"train.py": render(
        "train.py.j2",
        ensemble=comment_text(e.name),
        source=comment_text(ctx.source_name),
        version=__version__,
        ensemble_literal=py_str(e.name),
        data_literal=py_str(e.data) if e.data is not None else "None",
        train=train,
    )}


def render_shared(ctx: EmitContext) -> dict[str, str]:
    """shared.py: the Shared-MotherNet of every cluster that can be shared (none: no file)."""
    if not ctx.share_plans:
        return {}
    return {"shared.py": render("shared.py.j2", **shared_view(ctx.ensemble, ctx.share_plans,
                                                               ctx.source_name))}


def shared_view(ensemble: Ensemble, plans: Mapping[str, SharePlan | Refusal],
                source_name: str) -> dict[str, Any]:
    """The template view of shared.py: literal GROUPS and STEPS per shared cluster."""
    from mncompile.passes.share_plan import Refusal, param_count

    namespace = Namespace(MODULE_NAMES | {"SharedStep", "SharedNet", "SHARED", "NOT_SHARED"})
    classes, refused = [], []
    for mother, sp in plans.items():
        if isinstance(sp, Refusal):
            chunks = textwrap.wrap(sp.reason, LINE_LENGTH - 20, drop_whitespace=False)
            refused.append((py_str(mother), [py_str(chunk) for chunk in chunks]))
            continue
        member_params = sum(infer_net(ensemble.net(m), ensemble.input, ensemble.classes).params
                            for m in sp.members)
        doc = "\n".join([
            *textwrap.wrap(f"Shared-MotherNet of cluster {comment_text(mother)}: members "
                           + ", ".join(comment_text(m) for m in sp.members) + ".", LINE_LENGTH - 8),
            "",
            *textwrap.wrap(f"{human(param_count(sp))} parameters against {human(member_params)} "
                           f"for the separate members. {_exactness(sp)}", LINE_LENGTH - 8),
        ])
        groups = [f"{g.id}: ({'None' if g.owner is None else py_str(g.owner)}, {g.size}),"
                  for g in sp.groups]
        classes.append({
            "name": namespace.class_name("shared_" + mother),
            "doc": doc,
            "mother": py_str(mother),
            "members": _wrap_items([py_str(m) + "," for m in sp.members]),
            "input_shape": repr(tuple(sp.input)),
            "classes": sp.classes,
            "groups": _wrap_items(groups),
            "steps": [line for step in sp.steps for line in _step_lines(sp, step)],
        })
    ens = comment_text(ensemble.name)
    doc = "\n".join([
        f"Shared-MotherNets of ensemble {ens} (the paper's Appendix C), generated by mncompile {__version__}",
        f"from {comment_text(source_name)}.",
        "",
        "Do not edit: recompile the spec instead. A Shared-MotherNet keeps the units its members",
        "copied from their MotherNet once and each member's own units separately; it has one output",
        "head per member. Build one from hatched members with mncompile.runtime.consolidate, and",
        "train it with `train.py --method shared-mothernets`. Imports torch only.",
    ])
    return {"doc": doc, "classes": classes, "refused": refused}


def _exactness(sp: SharePlan) -> str:
    if not sp.exact:
        return "Its members' hatching tables are not all exact, so neither is the consolidation."
    mode = "in eval and train mode" if sp.exact_train else "in eval mode"
    return f"Built from hatched members it reproduces them exactly {mode}."


def _wrap_items(items: Sequence[str], width: int = LINE_LENGTH - 8) -> list[str]:
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        else:
            lines.append(item)
    return lines


def _step_lines(sp: SharePlan, step: Any) -> list[str]:
    """One STEPS entry as lines of a dict literal, with a comment saying who owns the units it makes.

    The keys are those of `mncompile.formats.share_plan`. Spec names are identifiers (the
    grammar's NAME), so `repr` is their literal.
    """
    import pprint

    from mncompile.formats.share_plan import ADD_STEP_FIELDS, LAYER_STEP_FIELDS, PART_FIELDS

    if step.op not in ("conv", "linear", "norm", "add"):
        return [f"{{'op': {step.op!r}}},"]
    width = LINE_LENGTH - 12
    fields = ADD_STEP_FIELDS if step.op == "add" else LAYER_STEP_FIELDS

    def field(key: str, value: object, indent: str = " ") -> list[str]:
        text = pprint.pformat(value, width=width - len(key) - 4, compact=True)
        lines = text.splitlines()
        pad = " " * (len(key) + 4)
        return [f"{indent}{key!r}: {lines[0]}"] + [indent + pad + line for line in lines[1:]]

    # the flags on one or two lines, then one field per line: the group tuples can be long
    head = [f"{k!r}: {getattr(step, k)!r}," for k in fields[:8]]
    lines = ["{" + line if i == 0 else " " + line for i, line in enumerate(_wrap_items(head, width))]
    for key in fields[8:11]:
        body = field(key, getattr(step, key))
        lines += body[:-1] + [body[-1] + ","]
    if step.op == "add":
        assert fields[11:] == ("sums",)
        lines.append(" 'sums': (")
        lines += [f"     {line}" for o, terms in step.sums
                  for line in pprint.pformat((o, terms), width=width - 5, compact=True).splitlines()[:-1]
                  + [pprint.pformat((o, terms), width=width - 5, compact=True).splitlines()[-1] + ","]]
    else:
        assert fields[11:] == ("blocks", "parts")
        body = field("blocks", step.blocks)
        lines += body[:-1] + [body[-1] + ","]
        lines.append(" 'parts': (")
        for p in step.parts:
            lines += [f"     {line}" for line in _part_lines({f: getattr(p, f) for f in PART_FIELDS},
                                                             width - 5)]
    lines.append(" )},")
    owners = []
    for g in step.makes:
        grp = sp.group(g)
        owners.append(f"shared {grp.size}" if grp.owner is None else f"{comment_text(grp.owner)} +{grp.size}")
    comment = _wrap_items([f"# {step.name}:", *(o + " |" for o in owners[:-1]), *owners[-1:]], width)
    return comment[:1] + ["# " + c for c in comment[1:]] + lines


def _part_lines(part: Mapping[str, object], width: int) -> list[str]:
    """One step part as a dict literal followed by a comma, in lines of at most `width`.

    Short fields share a line; a group tuple too long for the rest of its line starts a new one
    and wraps with a hanging indent.

    >>> for line in _part_lines({"member": "a", "key": "fc", "rows": (1,), "cols": tuple(range(14))}, 40):
    ...     print(line)
    {'member': 'a', 'key': 'fc',
     'rows': (1,),
     'cols': (0, 1, 2, 3, 4, 5, 6, 7, 8,
              9, 10, 11, 12, 13)},
    """
    import pprint

    items = list(part.items())
    lines: list[str] = []
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else "},"
        # every line starts with "{" (the first) or " " (the others): one column before the item
        one = f"{key!r}: {value!r}{end}"
        if lines and len(lines[-1]) + 1 + len(one) <= width:
            lines[-1] += " " + one
            continue
        if len(one) + 1 <= width:
            lines.append(("{" if not lines else " ") + one)
            continue
        prefix = f"{key!r}: "
        text = pprint.pformat(value, width=width - 1 - len(prefix) - len(end), compact=True).splitlines()
        lines.append(("{" if not lines else " ") + prefix + text[0])
        lines += [" " + " " * len(prefix) + t for t in text[1:]]
        lines[-1] += end
    return lines


def _literal(value: object) -> str:
    """A validated setting as a Python literal (ints, finite floats, plain strings only)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise AssertionError(f"unexpected training setting {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise AssertionError(f"non-finite training setting {value!r}")
    return py_str(value) if isinstance(value, str) else repr(value)


def render_plan(ctx: EmitContext) -> dict[str, str]:
    from mncompile.plan import dumps, plan_to_json

    return {"plan.json": dumps(plan_to_json(ctx.plan))}


#: what each generated file is, for the folder's README (others add entries with their files)
DESCRIPTIONS: dict[str, str] = {
    "models.py": "one nn.Module class per MotherNet and per member; imports torch only",
    "plan.json": "clusters, MotherNets, members and parameter counts",
    "hatch/": "per member, how each of its tensors comes from its MotherNet",
    "shared.py": "one Shared-MotherNet class per cluster: MotherNet units kept once, one head per member",
    "train.py": "trains the MotherNets, hatches the members, trains them, evaluates the ensemble",
    "README.md": "this file",
}


def render_readme(ctx: EmitContext, files: Mapping[str, str]) -> dict[str, str]:
    """README.md: what was generated and the exact commands to use it."""
    e = ctx.ensemble
    names = sorted({p.split("/")[0] + "/" if "/" in p else p for p in [*files, "README.md"]})
    listing = [(n, DESCRIPTIONS.get(n, "")) for n in names]
    params = {n.name: infer_net(n, e.input, e.classes).params for n in [*e.nets, *ctx.mothers]}
    clusters = [
        (comment_text(c.mother.name), human(params[c.mother.name]),
         ", ".join(f"`{comment_text(m)}` ({human(params[m])})" for m in c.members))
        for c in ctx.plan.clusters
    ]
    return {"README.md": render(
        "README.md.j2",
        ensemble=comment_text(e.name),
        source=comment_text(ctx.source_name),
        version=__version__,
        command=compile_command(comment_text(ctx.source_name), ctx.options),
        files=listing,
        clusters=clusters,
        first=repr(e.nets[0].name),
        has_train="train.py" in files,
        has_hatch=any(p.startswith("hatch/") for p in files),
    )}


def compile_command(source_name: str, options: Mapping[str, Any]) -> str:
    """The command line that regenerates a folder (run beside the spec)."""
    command = f"mncompile {source_name}"
    if options.get("clusters") is not None:
        command += f" --clusters {options['clusters']}"
    return command + f" --seed {options.get('seed', 0)}"


#: the renderers of the generated folder, in order; README.md comes last and lists them all
RENDERERS: list[Renderer] = [render_models, render_plan, render_hatch, render_shared, render_train]


def emit_files(ensemble: Ensemble, plan: Plan, tables: Mapping[str, HatchTable],
               shares: Mapping[str, SharePlan | Refusal], source_name: str | None = None,
               options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Every generated file: {relative path: text}, in sorted order. Pure and deterministic.

    Renders only: the plan, tables and share plans come from the passes
    (`mncompile.compiler.PIPELINE`); `mncompile.writer.write_folder` puts the files on disk.
    """
    ctx = EmitContext(ensemble, plan, tables, shares, source_name_of(ensemble, source_name),
                      dict(options or {}))
    files: dict[str, str] = {}
    for renderer in RENDERERS:
        for path, text in renderer(ctx).items():
            if path in files:
                raise AssertionError(f"two renderers both write {path}")
            files[path] = text
    files.update(render_readme(ctx, files))
    files[MARKER] = MARKER_TEXT
    return dict(sorted(files.items()))
