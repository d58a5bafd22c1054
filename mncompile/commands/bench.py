"""`mncompile bench SPEC`: MotherNets at several g and every baseline, on one data set: the frontier.

The spec is compiled once per g into OUT/code/g<k>/; each (method, g, seed) then runs in-process
through the training pipeline (`pipeline.execute`, exactly what train.py does) into
OUT/runs/<method>[-g<k>]/seed<s>/ (results.json, history.csv, log.txt, y.npy). MotherNets (and
Shared-MotherNets) run at every g, except g = m when full-data runs (one MotherNet per net trains
the very nets full-data trains); the other methods do not depend on g and run once per seed, 3
seeds by default. Finally `runtime/frontier.py` and `runtime/figures.py` write OUT/frontier.csv,
frontier.md (the frontier with intervals, Table 3, calibration, diversity), frontier.png,
breakdown.png, learning_curves.png and, with two seeds or more, diversity.csv and diversity.png.
Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mncompile.api import load
from mncompile.diagnostics import MNError
from mncompile.table import duration
from mncompile.validators import number, positive, positive_ints

NAME = "bench"
HELP = "train the ensemble with MotherNets at several g and with the baselines; write the frontier"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mncompile.formats.settings import NOISE_MODES
    from mncompile.runtime.fuse_rule import add_fuse_argument
    from mncompile.runtime.jobs import BATCH_ORDERS, STOP_RULES
    from mncompile.runtime.methods.options import add_method_arguments
    from mncompile.runtime.options import (
        DEFAULT_VAL_FRACTION,
        DEVICES,
        MAX_EPOCHS,
        MAX_EXAMPLES,
        MAX_SEED,
        add_engine_arguments,
        add_hatched_lr_factor_argument,
        add_recipe_argument,
        val_fraction_arg,
    )
    from mncompile.runtime.threads import add_threads_argument

    p.add_argument("spec", help="the .mnet file")
    p.add_argument("--data", metavar="NAME",
                   help="dataset: mnist1d, digits, cifar10, cifar100, svhn, synthetic, npz:PATH, or "
                   "FILE.py:FUNCTION (your function returning (train, val, test): this runs FILE.py) "
                   "(default: the spec's `data`, else mnist1d)")
    p.add_argument("--methods", metavar="A,B,...",
                   help="methods to run (default: every registered method that applies to the ensemble)")
    p.add_argument("--clusters", "-g", type=positive_ints, metavar="G,...",
                   help="the g of the MotherNets runs (default: the number of architecture classes, the "
                   "midpoint to m, and m; g = m is left out when full-data runs: it trains the same nets)")
    p.add_argument("--seeds", type=positive(int), default=3, metavar="N",
                   help="trainings per point, seeds S..S+N-1 (default 3: mean and std over seeds; 2 or more "
                   "adds the diversity table)")
    p.add_argument("--seed", type=int, metavar="S", help="the first seed (default: the spec's seed)")
    p.add_argument("--epochs-scale", type=positive(float), default=1.0, metavar="F",
                   help="multiply max_epochs, hatched_max_epochs and patience by F (default 1)")
    p.add_argument("--out", metavar="DIR", help="the bench folder (default bench-out/<ensemble>)")
    p.add_argument("--data-dir", metavar="DIR", help="folder holding cifar10/cifar100/svhn files")
    p.add_argument("--train-size", type=number(int, 2, highest=MAX_EXAMPLES), metavar="N",
                   help="training examples: the first N; mnist1d above its 4000: generate N (cached)")
    p.add_argument("--test-size", type=number(int, 1, highest=MAX_EXAMPLES), metavar="N",
                   help="test examples: the first N; mnist1d above its 1000: generate N (cached)")
    p.add_argument("--data-seed", type=number(int, 0, highest=MAX_SEED), default=0, metavar="S",
                   help="seed of generated data and of the validation split (default 0)")
    add_recipe_argument(p)
    p.add_argument("--val-fraction", type=val_fraction_arg, default=None, metavar="F",
                   help="share of each class held out for validation, as train.py's option (default "
                   f"{DEFAULT_VAL_FRACTION}; 0: none, the paper's setting)")
    p.add_argument("--stop", choices=STOP_RULES,
                   help="what early stopping watches, as train.py's option (default train-acc)")
    p.add_argument("--hatched-stop", choices=STOP_RULES, help="as train.py's option")
    p.add_argument("--hatched-patience", type=number(int, 0, highest=MAX_EPOCHS), metavar="N",
                   help="as train.py's option")
    p.add_argument("--batch-order", choices=BATCH_ORDERS, help="as train.py's option")
    p.add_argument("--noise-mode", choices=NOISE_MODES, help="as train.py's option")
    add_hatched_lr_factor_argument(p)
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to train")
    add_threads_argument(p)
    add_fuse_argument(p)
    p.add_argument("--resume", action="store_true",
                   help="keep the runs that finished, resume the others from their checkpoints")
    p.add_argument("--verbose", action="store_true", help="show each run's epochs instead of a log file")
    add_engine_arguments(p)
    add_method_arguments(p)


def _threads(runs: Sequence[Any], now: int) -> str:
    """The thread counts the runs trained at (a run from before --threads: the count of now)."""
    counts = sorted({int(r.doc.get("info", {}).get("threads", now)) for r in runs} or {now})
    return " and ".join(map(str, counts))


def _fused(runs: Sequence[Any]) -> str:
    """How the runs trained their lockstep phases: ', fused groups' where some used --fuse, else ''."""
    fused = [bool(r.doc.get("info", {}).get("fuse", False)) for r in runs]
    if not any(fused):
        return ""
    return ", fused groups (--fuse)" if all(fused) else f", fused groups in {sum(fused)} of {len(fused)} runs"


#: methods whose result depends on the number of MotherNets g: run once per g
G_METHODS = ("mothernets", "shared-mothernets")


def _plan_runs(methods: Sequence[str], clusters: Sequence[int], seeds: Sequence[int],
               shareable: Sequence[int] | None = None) -> list[tuple[str, int | None, int]]:
    """(method, g, seed) runs; shared-mothernets only at the g in `shareable` (default: every g)."""
    runs: list[tuple[str, int | None, int]] = []
    for seed in seeds:
        for method in methods:
            if method == "shared-mothernets" and shareable is not None:
                runs += [(method, g, seed) for g in clusters if g in shareable]
            elif method in G_METHODS:
                runs += [(method, g, seed) for g in clusters]
            else:
                runs.append((method, None, seed))
    return runs


def run_one(folder: Path, defaults: dict[str, Any], argv: list[str], method: str,
            method_options: dict[str, Any], log: Path | None) -> tuple[dict[str, Any], Any]:
    """One pipeline run of `method` with train.py's options `argv`; its results.json and Y [K, N].

    Y has a row per member of the ensemble: a member that diverged, failed or was excluded from
    the evaluation has none, so the diversity tables are of the members the ensemble averaged.

    The method is wrapped for the run so that it sees `method_options` in `ctx.info` and so that
    its trained members' Y (probability of the correct class on each test example) is kept.
    """
    import numpy as np

    from mncompile.runtime import pipeline
    from mncompile.runtime.context import Outcome, RunContext
    from mncompile.runtime.methods import METHODS, MethodSpec
    from mncompile.runtime.metrics import correct_class_probs
    from mncompile.runtime.train import predict_proba

    methods = METHODS
    spec = methods[method]
    captured: dict[str, Any] = {}

    def wrapped(ctx: RunContext) -> Outcome:
        import torch

        ctx.info["method_options"] = dict(method_options)
        outcome = spec.run(ctx)
        x_test = ctx.dataset.x_test
        probs = torch.stack([predict_proba(m.to(ctx.device), x_test, device=ctx.device)
                             for m in outcome.members.values()])
        captured["y"] = correct_class_probs(probs, ctx.dataset.y_test.cpu()).float().numpy()
        captured["names"] = list(outcome.members)
        return outcome

    args = pipeline.build_parser(defaults).parse_args(argv)
    methods[method] = MethodSpec(method, wrapped, spec.help)
    try:
        if log is None:
            doc = pipeline.execute(folder, defaults, args)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
                doc = pipeline.execute(folder, defaults, args)
    finally:
        methods[method] = spec
    out = Path(args.out)
    # the members the ensemble holds: not one that diverged, failed or was excluded at evaluation
    info = doc.get("info") or {}
    left_out = {*info.get("excluded_members", []), *info.get("failed_members", {})}
    keep = [i for i, n in enumerate(captured["names"]) if n not in left_out]
    y, names = captured["y"][keep], [captured["names"][i] for i in keep]
    np.save(out / "y.npy", y)
    (out / "y_members.json").write_text(json.dumps(names) + "\n", encoding="utf-8")
    return doc, y


def _choose_methods(args: argparse.Namespace, families: set[str]) -> list[str]:
    from mncompile.runtime.methods import METHODS as known
    plain_only = families - {"plain"}
    if args.methods:
        names = [t.strip() for t in args.methods.split(",") if t.strip()]
        for n in names:
            if n not in known:
                raise MNError(f"unknown method '{n}'", hint="known methods: " + ", ".join(sorted(known)))
        if "treenet" in names and plain_only:
            raise MNError("treenet needs plain conv members, but this ensemble has "
                          f"{', '.join(sorted(plain_only))} nets",
                          hint="leave treenet out of --methods")
        return list(dict.fromkeys(names))
    names = ["mothernets", *sorted(n for n in known if n != "mothernets")]
    if plain_only:
        print(f"bench: leaving out treenet (not defined for {', '.join(sorted(plain_only))} nets)")
        names.remove("treenet")
    return names


def _engine_argv(args: argparse.Namespace) -> list[str]:
    """train.py's engine options, passed on to every run."""
    if args.engine == "local":
        if args.address is not None or args.gpus_per_model is not None:
            raise MNError("--address and --gpus-per-model are options of --engine ray",
                          hint="add --engine ray")
        return []
    argv = ["--engine", args.engine]
    argv += ["--address", args.address] if args.address is not None else []
    argv += ["--gpus-per-model", str(args.gpus_per_model)] if args.gpus_per_model is not None else []
    return argv


def run(args: argparse.Namespace) -> int:
    from mncompile.compiler import compile_ensemble
    from mncompile.formats.settings import validate_train
    from mncompile.passes.cluster import arch_classes
    from mncompile.passes.share_plan import Refusal
    from mncompile.runtime.frontier import Run, write_frontier
    from mncompile.runtime.methods.options import method_options
    from mncompile.runtime.options import HATCHING_METHODS, RECIPES, apply_recipe, stop_rule
    from mncompile.runtime.results import load_results
    from mncompile.writer import write_folder

    e = load(args.spec)
    given_recipe, given = args.recipe, copy.copy(args)
    apply_recipe(args)  # what the runs get: the recipe's values where no option was given
    stop = stop_rule(args)  # --stop val-loss with --val-fraction 0 fails before anything is written
    stop_rule(args, hatched=True)
    m = len(e.nets)
    n_classes = len(arch_classes(e))
    clusters = args.clusters or sorted({n_classes, (n_classes + m) // 2, m})
    bad = [g for g in clusters if not n_classes <= g <= m]
    if bad:
        raise MNError(f"--clusters {bad[0]} is not possible for this ensemble",
                      hint=f"g ranges from {n_classes} (one MotherNet per architecture class) "
                      f"to {m} (one per net)")
    families = {family for family, _ in arch_classes(e)}
    methods = _choose_methods(args, families)
    if not args.clusters and "full-data" in methods and m in clusters and len(clusters) > 1:
        # one MotherNet per net hatches each net as itself: the same training as full-data
        clusters = [g for g in clusters if g != m]
        print(f"bench: mothernets at g = {m} = m left out (it trains exactly what full-data does)",
              flush=True)
    first_seed = args.seed if args.seed is not None else int(e.config.seed)
    seeds = [first_seed + i for i in range(args.seeds)]
    out = Path(args.out) if args.out else Path("bench-out") / e.name
    data = args.data or e.data or "mnist1d"
    defaults = {"ensemble": e.name, "data": e.data, "train": e.config.model_dump()}
    train = validate_train(e.config.model_dump())

    folders: dict[int, Path] = {}
    needed = clusters if any(m in G_METHODS for m in methods) else clusters[:1]
    shareable: list[int] = []
    for g in needed:
        folders[g] = out / "code" / f"g{g}"
        compiled = compile_ensemble(e, clusters=g, source_name=Path(args.spec).name)
        write_folder(folders[g], compiled.files, protect=[Path(args.spec)])
        if any(not isinstance(sp, Refusal) for sp in compiled.shares.values()):
            shareable.append(g)
    if "shared-mothernets" in methods and len(shareable) < len(clusters):
        skipped = ", ".join(str(g) for g in clusters if g not in shareable)
        print(f"bench: shared-mothernets skipped at g = {skipped} (no cluster there is shared: it would "
              "train exactly what mothernets does)", flush=True)

    plan = _plan_runs(methods, clusters, seeds, shareable)
    common = ["--data", data, "--epochs-scale", str(args.epochs_scale), "--device", args.device,
              "--data-seed", str(args.data_seed), "--val-fraction", str(args.val_fraction)]
    for flag, value in (("--data-dir", args.data_dir), ("--train-size", args.train_size),
                        ("--test-size", args.test_size), ("--stop", given.stop), ("--recipe", given_recipe),
                        ("--hatched-stop", given.hatched_stop),
                        ("--hatched-patience", given.hatched_patience),
                        ("--batch-order", given.batch_order), ("--noise-mode", given.noise_mode),
                        ("--hatched-lr-factor", given.hatched_lr_factor),
                        ("--threads", None if args.threads == "auto" else args.threads),
                        ("--fuse", None if args.fuse == "auto" else args.fuse)):
        # only the options given: each run applies the recipe itself, for its own method
        if value is not None:
            common += [flag, str(value)]
    engine = _engine_argv(args)
    opts = method_options(args)
    from mncompile.runtime.methods.options import DEFAULTS as METHOD_DEFAULTS

    # what the shared-mothernets runs train on: the option, the recipe's, or the default
    shared_loss = str(getattr(args, "shared_loss", None) or (RECIPES[args.recipe].get("shared_loss")
                                                               if given_recipe else None)
                      or METHOD_DEFAULTS["shared_loss"])
    print(f"bench {e.name}: {len(plan)} runs ({', '.join(methods)}; g {', '.join(map(str, clusters))}; "
          f"seeds {', '.join(map(str, seeds))}) on {data}, epochs x{args.epochs_scale}, into {out}",
          flush=True)
    runs: list[Run] = []
    walls: list[float] = []
    start = time.perf_counter()
    for i, (method, g, seed) in enumerate(plan, start=1):
        name = method if g is None else f"{method}-g{g}"
        run_dir = out / "runs" / name / f"seed{seed}"
        where = f"[bench {i}/{len(plan)}] {name} seed {seed}"
        if args.resume and (run_dir / "results.json").is_file() and (run_dir / "y.npy").is_file():
            import numpy as np

            doc = load_results(run_dir / "results.json")
            _check_kept(doc, run_dir, {"dataset": data, "data_seed": args.data_seed,
                                       "epochs_scale": args.epochs_scale, "val_fraction": args.val_fraction,
                                       "stop": stop, "batch_order": args.batch_order or "shared",
                                       "hatched_stop": args.hatched_stop or stop,
                                       **({"shared_loss": shared_loss} if method == "shared-mothernets"
                                          else {}),
                                       **({"hatched_lr": _hatched_lr(train, method, given)}
                                          if method in HATCHING_METHODS else {})})
            runs.append(Run(method, g, seed, doc, np.load(run_dir / "y.npy"), _history(run_dir)))
            print(f"{where}: kept (finished before)", flush=True)
            continue
        elapsed = time.perf_counter() - start
        eta = f", ETA ~{duration(sum(walls) / len(walls) * (len(plan) - i + 1))}" if walls else ""
        print(f"{where}: running (elapsed {duration(elapsed)}{eta})", flush=True)
        argv = [*common, "--method", method, "--seed", str(seed), "--out", str(run_dir)]
        argv += engine
        argv += [] if args.verbose else ["--quiet"]
        argv += ["--resume"] if args.resume else []
        t0 = time.perf_counter()
        folder = folders[g if g is not None else needed[0]]
        try:
            log = None if args.verbose else run_dir / "log.txt"
            doc, y = run_one(folder, defaults, argv, method, opts, log)
        except MNError as err:
            raise MNError(f"{name} seed {seed}: {err.message}", hint=err.hint) from None
        walls.append(time.perf_counter() - t0)
        runs.append(Run(method, g, seed, doc, y, _history(run_dir)))
        print(f"{where}: ensemble error {doc['ensemble']['error'] * 100:.2f}%, "
              f"training {doc['total_seconds']:.1f}s "
              f"(wall {walls[-1]:.1f}s)", flush=True)

    import torch

    sizes = runs[0].doc["info"] if runs else {}
    where = (f"{sizes.get('train_size')} train / {sizes.get('val_size', 0)} validation / "
             f"{sizes.get('test_size')} test examples")
    notes = [f"`{_command(given)}`",
             "",
             f"{e.name}: {m} members; {data}, {where} (data seed {args.data_seed}); g in "
             f"{', '.join(map(str, clusters))}; seeds {', '.join(map(str, seeds))}; early stopping on "
             f"{sizes.get('stop', '-')}; device {sizes.get('device', args.device)}, torch "
             f"{torch.__version__} at {_threads(runs, torch.get_num_threads())} thread(s){_fused(runs)}.",
             "Training time is wall clock on this machine; cost prices it at the paper's hourly rates."]
    title = f"ensemble '{e.name}' ({m} members); data {data}, {sizes.get('test_size')} test examples"
    paths = write_frontier(out, runs, title=title, notes=notes)
    print((out / "frontier.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _hatched_lr(train: dict[str, Any], method: str, given: argparse.Namespace) -> float:
    """The hatched lr a run of `method` trains at, with the bench's options as given (the recipe's
    factor is for some methods only: options.METHOD_OPTION_USERS)."""
    from mncompile.runtime.options import apply_recipe, hatched_lr

    ns = argparse.Namespace(method=method, recipe=given.recipe, hatched_lr=None,
                            hatched_lr_factor=given.hatched_lr_factor)
    apply_recipe(ns)
    return hatched_lr(train, ns)


def _check_kept(doc: dict[str, Any], run_dir: Path, expected: dict[str, Any]) -> None:
    """Refuse to keep a finished run made with other data or training options than this bench's.

    A run from before the validation split had none (val_fraction 0) and stopped on training
    accuracy.
    """
    from mncompile.runtime.options import BEFORE_VALIDATION

    info = {**BEFORE_VALIDATION, "batch_order": "shared", **(doc.get("info") or {})}
    info.setdefault("hatched_stop", info.get("stop"))
    info["hatched_lr"] = (info.get("config") or {}).get("hatched_lr")
    if "shared_loss" in expected:  # a Shared-MotherNets run from before the option trained on the sum
        info["shared_loss"] = (info.get("shared") or {}).get("loss", "sum")
    diff = [f"{k} {info.get(k)!r} (this bench: {v!r})" for k, v in expected.items() if info.get(k) != v]
    if diff:
        raise MNError(f"--resume: the finished run in {run_dir} was made with " + ", ".join(diff),
                      hint="resume with the options of the first bench, or give another --out")


def _history(run_dir: Path) -> list[dict[str, str]] | None:
    """A run's history.csv rows (for the learning curves), or None when it has none."""
    import csv

    path = run_dir / "history.csv"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this bench (and, with --resume, continues it): every option
    of the bench's parser whose value is not its default, with the seeds written out."""
    import shlex

    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    parts = ["mncompile", "bench", args.spec]
    for action in p._actions:
        if not action.option_strings or action.dest in ("resume", "verbose"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or (value == action.default and action.dest != "seeds"):
            continue
        flag = max(action.option_strings, key=len)
        if value is True:
            parts.append(flag)
        else:
            parts += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return " ".join(shlex.quote(str(x)) for x in parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command alone (tests, `python -m mncompile.commands.bench`)."""
    p = argparse.ArgumentParser(prog="mncompile bench", description=HELP)
    add_arguments(p)
    try:
        return run(p.parse_args(list(sys.argv[1:] if argv is None else argv)))
    except MNError as err:
        print(str(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
