"""The options of a generated `train.py` and of `mncompile run`: parsed, checked, resolved.

No torch at import: the `mncompile` command builds its parser from this module.
"""

from __future__ import annotations

import argparse
import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from mncompile.diagnostics import MNError
from mncompile.formats.settings import (
    MAX_VAL_FRACTION,
    NOISE_MODES,
    SCHEDULES,
    TRAIN_DEFAULTS,
    validate_train,
)
from mncompile.runtime.engines import ENGINES
from mncompile.runtime.fuse_rule import add_fuse_argument
from mncompile.runtime.jobs import BATCH_ORDERS, STOP_RULES
from mncompile.runtime.methods import METHODS
from mncompile.runtime.methods.options import add_method_arguments
from mncompile.runtime.threads import add_threads_argument
from mncompile.validators import number

#: the train keys, in the order `--help` lists their overrides
TRAIN_KEYS: tuple[str, ...] = tuple(k for k in TRAIN_DEFAULTS if k != "seed")
DEFAULT_DATA = "mnist1d"
# The options' ranges: wide enough for real use (generated datasets of hundreds of thousands of
# examples, long schedules), narrow enough that a slip of the keyboard is an error, not a week
# of training or a huge allocation.
MAX_EXAMPLES = 1_000_000
MAX_SEED = 2**32 - 1
MAX_EPOCHS = 100_000
MAX_EPOCHS_SCALE = 100.0
MAX_LR = 1e4
MAX_NOISE = 10.0
DEVICES = ("auto", "cpu", "cuda")
#: Chosen by measurement (bench/stop_rule.py, docs/training.md "Choosing the default"): a tenth of
#: the training set is held out, so that every run records validation curves and settings can be
#: chosen without the test set, at a measured cost within the test interval; early stopping keeps
#: the paper's training-accuracy rule, since stopping on validation loss measured no better.
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_STOP = "train-acc"
#: Chosen by measurement (bench/recipe.py, docs/training.md "The hatched members' recipe"): on a
#: validation split, hatched members that restart at twice the MotherNet's learning rate (then
#: the spec's schedule) gave a lower ensemble NLL and error than the spec's hatched_lr in every
#: one of 5 (spec, seed) pairs. "spec" keeps the spec's hatched_lr (the paper's setting).
DEFAULT_HATCHED_LR_FACTOR = 2.0
MAX_HATCHED_LR_FACTOR = 100.0
#: the methods whose nets include hatched members: the ones that read hatched_lr
HATCHING_METHODS = ("mothernets", "shared-mothernets")
#: what a run recorded before `val_fraction` and `stop` existed did: no split, the paper's rule
BEFORE_VALIDATION: dict[str, Any] = {"val_fraction": 0.0, "stop": "train-acc"}
#: `--recipe`: named sets of defaults; an option given on the command line wins over its
#: recipe's value. `paper` is the paper's setting (and this project's landed behaviour): no
#: validation split, training-accuracy stopping for every phase, one shared batch order, the
#: spec's hatched_lr and noise (Gaussian), and Shared-MotherNets on the sum of the heads' losses.
#: `default` is the project's defaults, chosen by measurement (docs/training.md): among them the
#: hatched members restart at twice the MotherNet's lr (`DEFAULT_HATCHED_LR_FACTOR`).
RECIPES: dict[str, dict[str, Any]] = {
    "default": {"val_fraction": DEFAULT_VAL_FRACTION, "stop": DEFAULT_STOP, "batch_order": "shared",
                "noise_mode": "gaussian", "shared_loss": "scaled",
                "hatched_lr_factor": DEFAULT_HATCHED_LR_FACTOR},
    "paper": {"val_fraction": 0.0, "stop": "train-acc", "batch_order": "shared", "noise_mode": "gaussian",
              "shared_loss": "sum", "hatched_lr_factor": "spec"},
}
DEFAULT_RECIPE = "default"
#: the methods that read a recipe's method options: set for any other method, they would only
#: be recorded. The default recipe's hatched-lr factor is for MotherNets' hatched members only:
#: measured on a validation split, a Shared-MotherNet at twice the lr loses its members' function
#: in its first joint epoch (docs/training.md), so it keeps the spec's hatched_lr unless the
#: factor is given.
METHOD_OPTION_USERS: dict[str, tuple[str, ...]] = {"shared_loss": ("shared-mothernets",),
                                                   "hatched_lr_factor": ("mothernets",)}


def apply_recipe(args: argparse.Namespace) -> None:
    """Fill the options `args` leaves unset (None) with its `--recipe`'s values (`RECIPES`).

    A method option (`--shared-loss`) is set only for the methods that read it, and only where
    the recipe's value is not its default, so that the record of a run without it stays as it was.
    """
    from mncompile.runtime.methods.options import DEFAULTS as METHOD_DEFAULTS

    name = getattr(args, "recipe", None) or DEFAULT_RECIPE
    if name not in RECIPES:
        raise MNError(f"unknown recipe '{name}'", hint="use " + " or ".join(RECIPES))
    for key, value in RECIPES[name].items():
        if getattr(args, key, None) is not None:
            continue
        readers = METHOD_OPTION_USERS.get(key)
        unread = readers is not None and getattr(args, "method", None) not in readers
        if key in METHOD_DEFAULTS and value == METHOD_DEFAULTS[key] or unread:
            continue
        setattr(args, key, value)
    args.recipe = name


def add_hatched_lr_factor_argument(g: Any) -> None:
    """--hatched-lr-factor (an argument parser or group)."""
    g.add_argument("--hatched-lr-factor", type=hatched_lr_factor_arg, default=None, metavar="F|spec",
                   help="hatched members restart at F x the MotherNet's lr, then follow the schedule; "
                   f"spec: the spec's hatched_lr (default {DEFAULT_HATCHED_LR_FACTOR:g}, measured; "
                   "--recipe paper: spec); --hatched-lr wins")


def add_recipe_argument(g: Any) -> None:
    """--recipe (an argument parser or group)."""
    g.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help="a named set of defaults: default (the measured ones), or paper (no validation "
                   "split, training-accuracy stopping, one shared batch order, the spec's hatched_lr "
                   "and noise, Shared-MotherNets on the sum of the heads' losses); options given "
                   "explicitly win (docs/training.md)")


#: the options that set the hatched members' training, with their flags
HATCHED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("hatched_lr", "--hatched-lr"), ("hatched_lr_factor", "--hatched-lr-factor"),
    ("hatched_max_epochs", "--hatched-max-epochs"), ("hatched_stop", "--hatched-stop"),
    ("hatched_patience", "--hatched-patience"), ("batch_order", "--batch-order"),
    ("noise", "--noise"), ("noise_mode", "--noise-mode"))


def unused_hatched_options(args: argparse.Namespace) -> str | None:
    """A note naming the hatched members' options given to a method without hatched members
    (before the recipe fills them in), or None."""
    method = getattr(args, "method", "mothernets")
    if method in HATCHING_METHODS:
        return None
    given = [flag for dest, flag in HATCHED_OPTIONS if getattr(args, dest, None) is not None]
    if not given:
        return None
    verb = "sets" if len(given) == 1 else "set"
    return (f"note: {', '.join(given)} {verb} how hatched members train, and {method} trains none: "
            f"not used (only {' and '.join(HATCHING_METHODS)} hatch members)")


def hatched_lr_factor_arg(text: str) -> float | str:
    """--hatched-lr-factor: "spec", or a factor above 0 and at most MAX_HATCHED_LR_FACTOR."""
    if text.strip().lower() == "spec":
        return "spec"
    try:
        return number(float, 0, above=True, highest=MAX_HATCHED_LR_FACTOR)(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (or spec: the spec's hatched_lr)") from None


def hatched_lr(config: Mapping[str, Any], args: argparse.Namespace) -> float:
    """The hatched members' learning rate: --hatched-lr, else --hatched-lr-factor x the run's lr
    for a method with hatched members, else the spec's hatched_lr (in `config`, with overrides)."""
    if getattr(args, "hatched_lr", None) is not None:
        return float(args.hatched_lr)
    factor = getattr(args, "hatched_lr_factor", None)
    if factor in (None, "spec") or getattr(args, "method", "mothernets") not in HATCHING_METHODS:
        return float(config["hatched_lr"])
    return float(factor) * float(config["lr"])


def val_fraction_arg(text: str) -> float:
    value = number(float, 0.0, highest=MAX_VAL_FRACTION)(text)
    if value != 0 and value < 1e-6:
        raise argparse.ArgumentTypeError(f"{text} is too small a share to hold out; use 0 for no split")
    return value


def stop_rule(args: argparse.Namespace, val_examples: int | None = None, hatched: bool = False) -> str:
    """The run's early-stopping rule: --stop, else train-acc (DEFAULT_STOP, chosen by measurement).

    With `hatched`, the hatched members' rule: --hatched-stop, else the run's. MNError when
    val-loss is asked for without a validation split (`--val-fraction` 0, or one of
    `val_examples` = 0 examples).
    """
    fraction = float(getattr(args, "val_fraction", 0.0) or 0.0)
    rule = getattr(args, "stop", None) or DEFAULT_STOP
    flag = "--stop"
    if hatched and getattr(args, "hatched_stop", None):
        rule, flag = args.hatched_stop, "--hatched-stop"
    if rule == "val-loss" and fraction <= 0:
        raise MNError(f"{flag} val-loss needs a validation split, but --val-fraction is 0",
                      hint=f"give --val-fraction F (0 < F <= 0.5), or use {flag} train-acc")
    if rule == "val-loss" and val_examples == 0:
        raise MNError(f"{flag} val-loss needs a validation split, but --val-fraction {fraction} holds out "
                      "no examples of this training set",
                      hint=f"use a larger --val-fraction or more training examples, or {flag} train-acc")
    return rule


def check_calibration(args: argparse.Namespace, val_given: bool = False) -> str | None:
    """--calibrate-temperature's mode, or None; MNError when there is no validation split to fit on
    (`--val-fraction` 0 and no split of the user's own)."""
    mode = getattr(args, "calibrate_temperature", None)
    if mode and float(getattr(args, "val_fraction", 0.0) or 0.0) <= 0 and not val_given:
        raise MNError("--calibrate-temperature fits on the validation split, but --val-fraction is 0",
                      hint="give --val-fraction F (0 < F <= 0.5), or a validation split of your own (val=)")
    return mode


def hatched_patience(args: argparse.Namespace, config: Mapping[str, Any]) -> int:
    """The hatched members' patience: --hatched-patience (scaled as patience is), else the run's."""
    value = getattr(args, "hatched_patience", None)
    if value is None:
        return int(config["patience"])
    scale = float(getattr(args, "epochs_scale", 1.0) or 1.0)
    return int(value) if value <= 0 or scale == 1.0 else max(1, math.ceil(value * scale - 1e-9))


def _gpus_per_model(text: str) -> int | None:
    return None if text == "auto" else number(int, 1)(text)


def add_engine_arguments(g: Any) -> None:
    """--engine, --address, --gpus-per-model (an argument parser or group)."""
    g.add_argument("--engine", choices=tuple(ENGINES), default="local",
                   help="where the networks train: local (this process, default) or ray (a Ray "
                   "cluster, see docs/ray.md; pip install \"mncompile[ray]\")")
    g.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: the cluster to use (HOST:PORT, or auto for the one `ray start` "
                   "runs on this machine); default RAY_ADDRESS, else a new Ray instance on this machine")
    g.add_argument("--gpus-per-model", type=_gpus_per_model, metavar="N|auto",
                   help="with --engine ray: GPUs (CPU workers on a cluster without GPUs) per network; "
                   "auto (default): one each while more networks are ready than devices are free, "
                   "else the free ones split among them, data-parallel")


def add_run_arguments(p: argparse.ArgumentParser, ensemble: str | None = None) -> argparse._ArgumentGroup:
    """The training options shared by `train.py` and `mncompile run`; returns the `run` group."""
    out_default = f"runs/{ensemble or '<ensemble>'}/<method>"
    g = p.add_argument_group("run")
    g.add_argument("--data", metavar="NAME",
                   help="dataset: mnist1d, digits, cifar10, cifar100, svhn, synthetic, npz:PATH, or "
                   "FILE.py:FUNCTION (your function returning (train, val, test): this runs FILE.py) "
                   "(default: the spec's `data`, else mnist1d)")
    g.add_argument("--data-dir", metavar="DIR", help="folder holding cifar10/cifar100/svhn files")
    g.add_argument("--train-size", type=number(int, 2, highest=MAX_EXAMPLES), metavar="N",
                   help="use only the first N training examples; mnist1d above its 4000: generate N "
                   "(cached on disk); synthetic: generate N")
    g.add_argument("--test-size", type=number(int, 1, highest=MAX_EXAMPLES), metavar="N",
                   help="use only the first N test examples; mnist1d above its 1000: generate N "
                   "(cached on disk); synthetic: generate N")
    g.add_argument("--data-seed", type=number(int, 0, highest=MAX_SEED), default=0, metavar="S",
                   help="seed of generated data (mnist1d, synthetic), the digits split and the validation "
                   "split (default 0)")
    add_recipe_argument(g)
    g.add_argument("--val-fraction", type=val_fraction_arg, default=None, metavar="F",
                   help="hold out this share of each class of the training set for validation, seeded by "
                   f"--data-seed; above 0, at most {MAX_VAL_FRACTION}; 0: no split, the paper's setting "
                   f"(default {DEFAULT_VAL_FRACTION})")
    g.add_argument("--stop", choices=STOP_RULES, default=None,
                   help="what early stopping watches: train-acc (the running training accuracy, the "
                   f"paper's rule) or val-loss (the validation split's loss); default {DEFAULT_STOP}")
    g.add_argument("--hatched-stop", choices=STOP_RULES, default=None,
                   help="what early stopping watches for hatched members (default: --stop's rule)")
    g.add_argument("--hatched-patience", type=number(int, 0, highest=MAX_EPOCHS), metavar="N",
                   help="patience of hatched members (default: patience; scaled by --epochs-scale)")
    g.add_argument("--batch-order", choices=BATCH_ORDERS, default=None,
                   help="hatched members' mini-batches: shared (one stream for all, the paper's scan; "
                   "default), member (a permutation of each member's own every epoch) or bootstrap (each "
                   "member its own bootstrap sample of the training set, as bagging draws it)")
    g.add_argument("--calibrate-temperature", nargs="?", const="ensemble", choices=("ensemble", "member"),
                   default=None, metavar="ensemble|member",
                   help="after training, fit a temperature on the validation split (LBFGS on the NLL): one "
                   "for the ensemble (the default of the flag), or one per member; ensemble.pt applies it "
                   "in predict_proba, results.json reports the test metrics before and after")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train: auto (CUDA when available), cpu or cuda (default auto)")
    add_threads_argument(g)
    add_fuse_argument(g)
    g.add_argument("--out", metavar="DIR",
                   help=f"folder for results.json, history.csv, ensemble.pt and ckpt/ (default "
                   f"{out_default}); one that holds a finished run is refused without --resume or --force")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in OUT/ckpt (same options as the first run)")
    g.add_argument("--epochs-scale", type=number(float, 0, above=True, highest=MAX_EPOCHS_SCALE), default=1.0,
                   metavar="F",
                   help="multiply max_epochs, hatched_max_epochs and patience by F, rounding up, "
                   "at least 1 (default 1)")
    g.add_argument("--seed", type=number(int, 0, highest=MAX_SEED), metavar="S",
                   help="seed of initialisation, batch order and noise (default: the spec's seed)")
    g.add_argument("--quiet", action="store_true", help="print only the final table")
    g.add_argument("--sequential", action="store_true",
                   help="train the nets of a phase one at a time instead of over one shared batch "
                   "stream (same weights on the CPU, slower)")
    g.add_argument("--method", default="mothernets", metavar="NAME",
                   help="how to train the ensemble: " + ", ".join(METHODS) + " (default mothernets; "
                   "docs/baselines.md)")
    g.add_argument("--noise-mode", choices=NOISE_MODES, default=None,
                   help="noise after hatching: gaussian (default), or symmetric (exact +d/-d pairs)")
    add_engine_arguments(p.add_argument_group("engine"))
    t = p.add_argument_group("training settings (override the spec's train { ... })")
    t.add_argument("--batch", type=number(int, 1, highest=MAX_EXAMPLES), metavar="N", help="mini-batch size")
    t.add_argument("--lr", type=number(float, 0, above=True, highest=MAX_LR), metavar="LR",
                   help="learning rate of MotherNets (and of full-data members)")
    t.add_argument("--hatched-lr", type=number(float, 0, above=True, highest=MAX_LR), metavar="LR",
                   help="learning rate of hatched members (default: --hatched-lr-factor x lr)")
    add_hatched_lr_factor_argument(t)
    t.add_argument("--momentum", type=number(float, 0.0, below=1.0), metavar="M",
                   help="SGD momentum, from 0 to below 1")
    t.add_argument("--weight-decay", type=number(float, 0.0, highest=1.0), metavar="WD",
                   help="SGD weight decay, from 0 to 1")
    t.add_argument("--patience", type=number(int, 0, highest=MAX_EPOCHS), metavar="N",
                   help="stop when what --stop watches has not improved for N epochs (0: never)")
    t.add_argument("--max-epochs", type=number(int, 1, highest=MAX_EPOCHS), metavar="N",
                   help="epoch cap of MotherNets and of nets trained from scratch")
    t.add_argument("--hatched-max-epochs", type=number(int, 0, highest=MAX_EPOCHS), metavar="N",
                   help="epoch cap of hatched members")
    t.add_argument("--noise", type=number(float, 0.0, highest=MAX_NOISE), metavar="STD",
                   help="std of the noise added after hatching, relative to each tensor's std")
    t.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    add_method_arguments(p)
    return g


def build_parser(defaults: Mapping[str, Any], prog: str = "train.py") -> argparse.ArgumentParser:
    """The option parser of a generated train.py."""
    name = str(defaults.get("ensemble", "ensemble"))
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Train ensemble {name} with MotherNets (or another --method) and evaluate it.",
        epilog="Writes OUT/results.json, OUT/history.csv and checkpoints under OUT/ckpt/; "
        "see docs/training.md in the mncompile repository.",
    )
    g = add_run_arguments(p, name)
    g.add_argument("--force", action="store_true",
                   help="replace a finished run in --out (its results.json, history.csv, ensemble.pt and "
                   "this method's checkpoints)")
    return p


def resolve_config(train: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The train settings: `train` (the spec's), then the options that override them, then the scale."""
    try:
        base = validate_train(train)
    except MNError as err:
        raise MNError(f"the training settings are invalid: {err.message}",
                      hint="recompile the spec; train.py holds the settings it was generated with") from None
    for key in TRAIN_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    scale = float(getattr(args, "epochs_scale", 1.0) or 1.0)
    if scale != 1.0:
        for key in ("max_epochs", "hatched_max_epochs", "patience"):
            if base[key] <= 0:  # patience 0 (never stop early), hatched_max_epochs 0 (no fine-tuning)
                continue
            base[key] = max(1, math.ceil(base[key] * scale - 1e-9))
    if getattr(args, "seed", None) is not None:
        base["seed"] = args.seed
    base["hatched_lr"] = hatched_lr(base, args)
    return base


def resume_command(argv: Sequence[str], prog: str) -> str:
    """The command line that resumes an interrupted run."""
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    return " ".join([prog, *map(shlex.quote, args)])
