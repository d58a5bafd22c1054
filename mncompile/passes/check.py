"""The semantic checks of the language contract, as one pure pass over the IR.

>>> from mncompile.parse import parse_text
>>> e = parse_text("ensemble e { input 40; classes 10; net a mlp { dense 32 } }")
>>> check_ensemble(e) is e
True

Every rule raises `MNError` with the span of the offending token and a hint saying what
would be valid. Errors come in source order: the first problem in the file is reported.
"""

from __future__ import annotations

import keyword
import math

from mncompile.diagnostics import MNError
from mncompile.formats.settings import DATASETS
from mncompile.ir import INT_KEYS, SCHEDULES, TRAIN_DEFAULTS, Ensemble, Layer, Net, Setting, Span
from mncompile.parse import MAX_INT, is_valid_name
from mncompile.shapes import infer_net
from mncompile.suggest import suggest
from mncompile.table import human

CONV_FAMILIES = ("plain", "residual", "dense")

#: The longest net or ensemble name. Names become file names, with at most 24 characters more
#: (`hatch/<name>.json`, checkpoints `<name>.pt`, `shared-<name>.pt`, `<name>@cycles.pt`, and
#: their temporary `.<file>.XXXXXXXX.tmp` while written): 100 keeps every one under 143 bytes,
#: eCryptfs's limit, the shortest of the common filesystems (ext4, XFS, btrfs, ZFS, APFS, NTFS
#: and FAT's long names take 255).
MAX_NAME_LENGTH = 100
#: The widest layer: a dense width, or a conv layer's filters (growth in a dense block). Real
#: nets have at most a few thousand; a hatched member draws one random index per extra unit.
MAX_WIDTH = 65_536
#: The default limit on one net's trainable parameters (`--max-params`): twenty times the
#: largest example (WRN-28-10 variants, 48.8M), fourteen times the largest V100 variant (69M).
MAX_NET_PARAMS = 1_000_000_000
#: The nets of one ensemble have at most this many times the per-net limit in all: 10G by
#: default, five times the paper's V100 (2.07G).
ENSEMBLE_PARAMS_FACTOR = 10


def _name(name: str, span: Span, what: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise MNError(
            f"{what} name may have at most {MAX_NAME_LENGTH} characters, this one has {len(name)}",
            span,
            hint=f"names become file names (hatch/NAME.json, NAME.pt, ...): shorten it to "
            f"{MAX_NAME_LENGTH} characters or fewer",
        )
    if not is_valid_name(name):
        if keyword.iskeyword(name):
            raise MNError(
                f"'{name}' cannot be used as {what} name: it is a Python keyword",
                span,
                hint=f"pick another name, such as '{name}_'",
            )
        raise MNError(
            f"'{name}' cannot be used as {what} name",
            span,
            hint="a name is ASCII letters, digits and '_', not starting with a digit",
        )


def _positive(value: int, span: Span, what: str) -> None:
    if value <= 0:
        raise MNError(
            f"{what} must be a positive integer, got {value}",
            span,
            hint="sizes are whole numbers of at least 1",
        )
    if value > MAX_INT:
        raise MNError(
            f"{what} must be at most {MAX_INT}, got {value}",
            span,
            hint="no real network has sizes this large",
        )


def _check_settings(settings: tuple[Setting, ...]) -> None:
    seen: dict[str, Setting] = {}
    keys = list(TRAIN_DEFAULTS)
    for s in sorted(settings, key=lambda s: (s.span.line, s.span.column)):
        if s.key not in TRAIN_DEFAULTS:
            close = suggest(s.key, keys)
            hint = f"did you mean '{close}'? " if close else ""
            raise MNError(
                f"unknown training setting '{s.key}'",
                s.key_span,
                hint=hint + "valid keys: " + ", ".join(keys),
            )
        if s.key in seen:
            raise MNError(
                f"training setting '{s.key}' is given twice (first at line {seen[s.key].span.line})",
                s.key_span,
                hint="keep one value per key",
            )
        seen[s.key] = s
        _check_value(s)


def _check_value(s: Setting) -> None:
    v = s.value
    if s.key == "schedule":
        if v not in SCHEDULES:
            raise MNError(
                f"unknown schedule {v!r}",
                s.value_span,
                hint="schedule is 'cosine' or 'constant'",
            )
        return
    if isinstance(v, str):
        raise MNError(
            f"'{s.key}' takes a number, got '{v}'",
            s.value_span,
            hint=f"for example: {s.key} {TRAIN_DEFAULTS[s.key]}",
        )
    if not math.isfinite(v):
        raise MNError(f"'{s.key}' must be a finite number, got {v}", s.value_span,
                      hint=f"for example: {s.key} {TRAIN_DEFAULTS[s.key]}")
    if s.key in INT_KEYS and float(v) != int(v):
        raise MNError(
            f"'{s.key}' takes a whole number, got {v}",
            s.value_span,
            hint=f"for example: {s.key} {TRAIN_DEFAULTS[s.key]}",
        )
    lower = {
        "batch": (1, "at least 1"),
        "patience": (1, "at least 1"),
        "max_epochs": (1, "at least 1"),
        "hatched_max_epochs": (0, "at least 0"),
        "seed": (0, "at least 0"),
        "weight_decay": (0, "at least 0"),
        "noise": (0, "at least 0"),
        "momentum": (0, "between 0 and 1 (1 excluded)"),
    }
    if s.key in ("lr", "hatched_lr") and v <= 0:
        raise MNError(f"'{s.key}' must be positive, got {v}", s.value_span,
                      hint="a learning rate such as 0.1")
    if s.key in lower and v < lower[s.key][0]:
        raise MNError(f"'{s.key}' must be {lower[s.key][1]}, got {v}", s.value_span,
                      hint=f"for example: {s.key} {TRAIN_DEFAULTS[s.key]}")
    # numpy seeds are 32-bit; other integer settings share the size bound of the language
    upper = 2**32 - 1 if s.key == "seed" else MAX_INT
    if s.key in INT_KEYS and v > upper:
        raise MNError(f"'{s.key}' must be at most {upper}, got {v}", s.value_span,
                      hint=f"for example: {s.key} {TRAIN_DEFAULTS[s.key]}")
    if s.key == "momentum" and v >= 1:
        raise MNError(f"'momentum' must be below 1, got {v}", s.value_span,
                      hint="momentum is between 0 and 1, such as 0.9")


def _check_layer(layer: Layer, net: Net, where: str) -> None:
    _positive(layer.kernel, layer.span, "a kernel size")
    _positive(layer.filters, layer.span, "a filter count")
    _not_wider(layer.filters, layer.span, "a filter count")
    if layer.kernel % 2 == 0:
        raise MNError(
            f"kernel sizes must be odd, got {layer.kernel} in {where} of net '{net.name}'",
            layer.span,
            hint=f"use an odd kernel such as {layer.kernel - 1} or {layer.kernel + 1}: "
            "'same' padding needs a centre tap",
        )


def check_net(net: Net, ensemble: Ensemble, max_params: int | None = MAX_NET_PARAMS) -> int:
    """Check one net against the contract; its trainable parameters, or `MNError` on the first problem.

    `max_params` is the most parameters the net may have (None: no limit).
    """
    _name(net.name, net.name_span, "a net")
    fam = net.family
    if fam in CONV_FAMILIES and ensemble.rank == 0:
        n = ensemble.input[0]
        raise MNError(
            f"a '{fam}' net needs an image or sequence input (CxHxW or CxL), "
            f"but the ensemble's input is flat ({n})",
            net.family_span,
            hint=f"use the 'mlp' family, or write the input as 1x{n} for 1-D convolutions",
        )
    if fam == "mlp":
        if net.stem is not None:
            raise MNError("'stem' is not allowed in an mlp net", net.stem_span or net.span,
                          hint="an mlp has only a 'dense' head")
        if net.blocks:
            raise MNError("'block' is not allowed in an mlp net", net.blocks[0].span,
                          hint="an mlp has only a 'dense' head: dense 128 64")
    elif fam == "plain":
        if net.stem is not None:
            raise MNError("'stem' is not used by plain nets", net.stem_span or net.span,
                          hint="remove it, or make the net 'residual' or 'dense'")
    elif net.stem is None:
        raise MNError(
            f"a '{fam}' net needs a 'stem' before its blocks",
            net.name_span,
            hint="add one, such as 'stem 3:16'",
        )
    if fam != "mlp" and not net.blocks:
        raise MNError(f"a '{fam}' net needs at least one block", net.name_span,
                      hint="add one, such as 'block { 3:16 }'")
    if net.stem is not None:
        _check_layer(net.stem, net, "the stem")
    for b, block in enumerate(net.blocks, start=1):
        for layer in block.layers:
            _check_layer(layer, net, f"block {b}")
        if fam == "residual":
            width = block.layers[0].filters
            for layer in block.layers[1:]:
                if layer.filters != width:
                    raise MNError(
                        f"units of one residual stage must have the same width: this unit has "
                        f"{layer.filters} filters, the stage's first has {width}",
                        layer.span,
                        hint=f"write every unit of block {b} as k:{width}, or start a new block",
                    )
    for d in net.dense:
        _positive(d.width, d.span, "a dense width")
        _not_wider(d.width, d.span, "a dense width")
    params = infer_net(net, ensemble.input, ensemble.classes).params
    if max_params is not None and params > max_params:
        raise MNError(
            f"net '{net.name}' has {human(params)} trainable parameters ({params}), more than "
            f"the {human(max_params)} a net may have",
            net.name_span,
            hint=f"make it smaller; or, if it is meant, raise the limit with --max-params "
            f"{_suggest_limit(params)} (or 'none')",
        )
    return params


def _not_wider(value: int, span: Span, what: str) -> None:
    if value > MAX_WIDTH:
        raise MNError(
            f"{what} must be at most {MAX_WIDTH}, got {value}",
            span,
            hint=f"layers are at most {MAX_WIDTH} units wide; real nets have a few thousand at most",
        )


def _suggest_limit(params: int) -> str:
    """A round `--max-params` value that admits `params`: 2G for 1.3G."""
    power = 10 ** (len(str(params)) - 1)
    return human(-(-params // power) * power)


def check_ensemble(ensemble: Ensemble, max_params: int | None = MAX_NET_PARAMS) -> Ensemble:
    """Check the whole ensemble; returns it unchanged, or raises `MNError`.

    `max_params` limits each net's trainable parameters, and `ENSEMBLE_PARAMS_FACTOR` times it
    the ensemble's in all (None: no limits; the `--max-params` option).
    """
    if max_params is not None and max_params < 1:
        raise MNError(f"the parameter limit must be at least 1, got {max_params}",
                      hint="a count such as 1e9 (or 'none' for no limit)")
    _name(ensemble.name, ensemble.span, "an ensemble")
    for d in ensemble.input:
        _positive(d, ensemble.input_span, "every input dimension")
    if ensemble.classes < 2:
        raise MNError(
            f"'classes' must be at least 2, got {ensemble.classes}",
            ensemble.classes_span,
            hint="the number of classes of the task, such as 10",
        )
    _positive(ensemble.classes, ensemble.classes_span, "'classes'")
    if ensemble.data is not None:
        _check_data(ensemble)
    _check_settings(ensemble.train)
    first: dict[str, Net] = {}
    total = 0
    limit = None if max_params is None else ENSEMBLE_PARAMS_FACTOR * max_params
    for net in ensemble.nets:
        if net.name in first:
            raise MNError(
                f"net '{net.name}' is defined twice (first at line {first[net.name].name_span.line})",
                net.name_span,
                hint="every net of an ensemble needs its own name",
            )
        first[net.name] = net
        total += check_net(net, ensemble, max_params)
        if limit is not None and max_params is not None and total > limit:
            raise MNError(
                f"with net '{net.name}', the ensemble's nets have {human(total)} trainable "
                f"parameters ({total}) in all, more than the {human(limit)} an ensemble may have "
                f"({ENSEMBLE_PARAMS_FACTOR} x the {human(max_params)} of one net)",
                net.name_span,
                hint="split it into several specs; or, if it is meant, raise the limit with "
                f"--max-params {_suggest_limit(-(-total // ENSEMBLE_PARAMS_FACTOR))} (or 'none')",
            )
    return ensemble


def _check_data(ensemble: Ensemble) -> None:
    assert ensemble.data is not None
    span = ensemble.data_span or ensemble.span
    if ensemble.data not in DATASETS:
        close = suggest(ensemble.data, tuple(DATASETS))
        hint = f"did you mean '{close}'? " if close else ""
        raise MNError(
            f"unknown dataset '{ensemble.data}'",
            span,
            hint=hint + "known datasets: " + ", ".join(DATASETS)
            + " (other data: train.py --data npz:PATH)",
        )
    features, classes, shape = DATASETS[ensemble.data]
    if features is not None and math.prod(ensemble.input) != features:
        raise MNError(
            f"dataset '{ensemble.data}' has inputs of shape {shape}, but the ensemble's input is "
            + "x".join(map(str, ensemble.input)),
            span,
            hint=f"write 'input {shape.split(' or ')[0]}', or pick another dataset",
        )
    if classes is not None and classes != ensemble.classes:
        raise MNError(
            f"dataset '{ensemble.data}' has {classes} classes, but the ensemble says "
            f"classes {ensemble.classes}",
            span,
            hint=f"write 'classes {classes}', or pick another dataset",
        )
