"""`mncompile run SPEC`: compile the spec, then train and evaluate its ensemble in-process.

The same as `mncompile SPEC -o DIR` followed by `python DIR/train.py [options]`: the generated
folder is written first (refusing folders mncompile did not generate, like compile), then the
pipeline runs on it with the remaining options. Without `--data`, the spec's `data` is used,
else mnist1d. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse

from mncompile.api import load
from mncompile.commands.compile import add_compile_arguments, compile_to
from mncompile.diagnostics import MNError
from mncompile.runtime.options import add_run_arguments, resume_command

NAME = "run"
HELP = "compile a spec, then train its MotherNets and members and evaluate the ensemble"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `mncompile run`: compile options, then those of train.py."""
    p.add_argument("spec", help="the .mnet file")
    # --seed is the training seed here, as in train.py; the clustering seed is --cluster-seed
    add_compile_arguments(p.add_argument_group("compile"), seed_flag="--cluster-seed")
    add_run_arguments(p)
    from mncompile.budget import add_budget_arguments

    add_budget_arguments(p.add_argument_group("budget (pick g)"))


_PARSER = argparse.ArgumentParser(add_help=False)
add_arguments(_PARSER)


#: options that are not passed on when the run is resumed
_NOT_OPTIONS = frozenset({"spec", "command", "handler", "debug", "resume"})


def command_line(args: argparse.Namespace) -> list[str]:
    """`run SPEC` and the options of `args` that differ from their defaults (to resume the run)."""
    defaults = vars(_PARSER.parse_args([args.spec]))
    argv = ["run", args.spec]
    for dest, value in vars(args).items():
        # None is a default left alone, except where the default is a value (--max-params none)
        if (dest in _NOT_OPTIONS or dest not in defaults or value == defaults[dest]
                or (value is None and defaults[dest] is None)):
            continue
        flag = "--output" if dest == "output" else "--" + dest.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def _trained_on(train_size: int | None, val_fraction: float | None) -> int | None:
    """The examples an epoch trains on with --train-size N: N less the validation split."""
    if train_size is None:
        return None
    return train_size - int(train_size * float(val_fraction or 0.0) + 0.5)


def _without_budget(args: argparse.Namespace) -> argparse.Namespace:
    import copy

    fixed = copy.copy(args)
    fixed.budget = None
    return fixed


def run(args: argparse.Namespace) -> int:
    import copy

    from mncompile.runtime.options import apply_recipe, check_calibration, stop_rule
    from mncompile.userfile import is_file_name

    e = load(args.spec, max_params=args.max_params)
    try:
        # options that cannot train together fail before anything is written (on a copy: the
        # resume command names only the options given)
        resolved = copy.copy(args)
        apply_recipe(resolved)
        stop_rule(resolved)
        stop_rule(resolved, hatched=True)
        if not is_file_name(resolved.data or ""):  # a data function may bring a split of its own
            check_calibration(resolved)
    except MNError as err:
        raise err.with_source("mncompile run", "") from None
    if args.budget is not None:
        if args.clusters is not None:
            raise MNError("--budget picks g: give it or --clusters, not both")
        from mncompile.budget import choose_g

        args.clusters, args.budget_record = choose_g(
            e, args.budget, rate=args.rate, steps=args.probe, runs=args.runs,
            train_size=args.budget_train_size or _trained_on(args.train_size, resolved.val_fraction),
            device=args.device, epochs_scale=args.epochs_scale,
            data=args.data, threads=args.threads)
    dest, _ = compile_to(args.spec, e, args.output, args.clusters, args.cluster_seed, args.force,
                         args.max_params)
    print(f"wrote {dest}; training with method {args.method}", flush=True)
    defaults = {"ensemble": e.name, "data": e.data, "train": e.config.model_dump()}
    # a resume recompiles too: the same spec and options give the same folder
    # the g a budget picked stays the run's g on resume (a new probe might pick another)
    hint = resume_command(command_line(copy.copy(args) if args.budget is None else
                                       _without_budget(args)), "mncompile")
    from mncompile.runtime.pipeline import run_guarded

    try:
        return run_guarded(dest, defaults, args, hint)
    except MNError as err:
        raise err.with_source("mncompile run", "") from None
