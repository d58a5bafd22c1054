"""The training pipeline a generated `train.py` runs: options in, one method on one engine, results out.

A generated folder (`models.py`, `plan.json`, `hatch/*.json`) plus a dataset go in; the trained
ensemble's `results.json`, `history.csv`, `ensemble.pt` and checkpoints come out.
`main(folder, defaults, argv)` is what `train.py` calls; `mncompile run` calls `execute` on the
options it parsed itself. The runtime's layers, each importing only those below it:

- here: read the folder and the data, choose the method (`methods.METHODS`) and the engine
  (`engines.ENGINES`) once, run the method, evaluate its members the same way for every method,
  write the results;
- `methods/`: what trains in which phase with which settings;
- `engines.py`, `ray_engine.py`: where it trains;
- `train.fit`: the one epoch loop, with `checkpoint.py`, `data.py`, `progress.py`;
- `mncompile.formats`: the files shared with the compiler.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.runtime.context import Outcome, RunContext
from mncompile.runtime.engines import make_engine
from mncompile.runtime.folder import load_folder
from mncompile.runtime.methods import METHODS
from mncompile.runtime.methods.options import method_options
from mncompile.runtime.options import (
    BEFORE_VALIDATION,
    DEFAULT_DATA,
    HATCHING_METHODS,
    add_run_arguments,
    apply_recipe,
    build_parser,
    check_calibration,
    hatched_patience,
    resolve_config,
    resume_command,
    stop_rule,
    unused_hatched_options,
)
from mncompile.runtime.rundir import RunFolder, default_out

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.runtime.data import Dataset
    from mncompile.runtime.userdata import UserData

Method = Callable[[RunContext], Outcome]

__all__ = ["add_run_arguments", "build_parser", "evaluate", "execute", "extra_lines", "load_folder", "main",
           "resolve_config", "resume_command", "run_guarded"]


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, so that a difference names the one setting that differs.

    >>> _flat({"seed": 1, "config": {"lr": 0.1, "batch": 8}})
    {'seed': 1, 'config.lr': 0.1, 'config.batch': 8}
    """
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_run_record(path: Path, record: dict[str, Any], resume: bool) -> None:
    """On --resume, refuse a run whose data or settings differ from the run that wrote the checkpoints."""
    import shutil

    from mncompile.runtime.checkpoint import atomic_write_text

    if not resume and path.parent.is_dir():
        # a fresh run must not find an earlier run's checkpoints (members, snapshots) and take
        # them for its own on a later --resume: start this method's checkpoint folder empty
        shutil.rmtree(path.parent)
    if resume and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if not isinstance(old, dict):
            raise MNError(f"'{path}' is damaged", hint="delete it (and OUT/ckpt) to start over")
        # a run from before the validation split had none and stopped on training accuracy
        before, now = _flat({**BEFORE_VALIDATION, **old}), _flat(record)
        diff = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if diff:
            parts = ", ".join(f"{k} {before.get(k, '(none)')!r} -> {now.get(k, '(none)')!r}" for k in diff)
            raise MNError(f"cannot resume: this run differs from the one in {path.parent} in {parts}",
                          hint="resume with the options of the first run, or drop --resume to start over")
    if resume and not path.is_file():
        print(f"note: --resume: {path.parent} holds no earlier run of this method; training from scratch",
              file=sys.stderr, flush=True)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def execute(folder: Path, defaults: Mapping[str, Any], args: argparse.Namespace,
            methods: Mapping[str, Method] | None = None, user: UserData | None = None) -> dict[str, Any]:
    """Train and evaluate the ensemble of a generated folder with the parsed options; returns results.json.

    `methods` runs a method in place of the one of `METHODS` of the same name (a generated
    train.py's own steps of the default method). `user` is data the caller read (the Python
    API's splits), in place of `--data`; `--data FILE.py:FUNCTION` reads such data too.
    """
    from mncompile import __version__

    if args.method not in METHODS:
        raise MNError(f"unknown method '{args.method}'", hint="known methods: " + ", ".join(sorted(METHODS)))
    unused = unused_hatched_options(args)  # what the user gave, before the recipe fills the rest
    if unused:
        print(unused, file=sys.stderr)
    apply_recipe(args)  # the options left unset take their --recipe's values
    # the one place the engine is chosen; it refuses what it cannot do before anything is written
    engine = make_engine(getattr(args, "engine", "local"), {
        "sequential": args.sequential, "address": getattr(args, "address", None), "device": args.device,
        "gpus_per_model": getattr(args, "gpus_per_model", None), "quiet": args.quiet})
    config = resolve_config(defaults.get("train", {}), args)
    models, plan, tables = load_folder(Path(folder))
    ensemble = plan.ensemble
    data_name = args.data or defaults.get("data") or DEFAULT_DATA
    input_shape, classes = plan.input, plan.classes

    import torch

    from mncompile.runtime.data import load_dataset
    from mncompile.runtime.jobs import TrainSettings
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.threads import choose_threads, cpu_threads
    from mncompile.runtime.train import resolve_device
    from mncompile.runtime.userdata import read_function
    from mncompile.userfile import is_file_name

    device = resolve_device(args.device)
    val_fraction = float(getattr(args, "val_fraction", 0.0) or 0.0)
    stop_rule(args)  # a rule the options cannot satisfy fails before the data is read
    stop_rule(args, hatched=True)
    order = getattr(args, "batch_order", None) or "shared"
    calibrate = check_calibration(args, user is not None and user.val is not None)
    if user is None and is_file_name(data_name):
        user = read_function(data_name)
    if user is not None and user.streamed:
        _check_streaming(user, args, config, order)
    if user is not None:
        data_name = user.label
        dataset = user.dataset(input_shape, classes, seed=args.data_seed, val_fraction=val_fraction,
                               train_size=args.train_size, test_size=args.test_size)
    else:
        dataset = load_dataset(data_name, input_shape, classes, args.data_dir, seed=args.data_seed,
                               train_size=args.train_size, test_size=args.test_size,
                               val_fraction=val_fraction)
    if calibrate and not dataset.has_val:
        raise MNError("--calibrate-temperature fits on the validation split, but --val-fraction "
                      f"{val_fraction} holds out no examples of this training set",
                      hint="use a larger --val-fraction or more training examples")
    stop = stop_rule(args, dataset.val_size)
    hatched_stop = stop_rule(args, dataset.val_size, hatched=True)
    out = Path(args.out) if args.out is not None else default_out(ensemble, args.method)
    progress = Progress(quiet=args.quiet)
    ctx = RunContext(
        folder=Path(folder), models=models, plan=plan, tables=tables, dataset=dataset, config=config,
        mother_settings=TrainSettings.from_config(config, "mother", stop),
        hatched_settings=TrainSettings.from_config(config, "hatched", hatched_stop,
                                                   patience=hatched_patience(args, config), order=order),
        out=out, device=device, seed=int(config["seed"]), progress=progress, engine=engine,
        resume=args.resume, method=args.method, noise=float(config["noise"]), noise_mode=args.noise_mode,
    )
    ctx.info["method_options"] = method_options(args)
    fuse, fuse_rule = _fuse_choice(getattr(args, "fuse", "auto"), device,
                                   out / "ckpt" / args.method / "run.json", args.resume, ctx)
    apart = (f"--engine {engine.name}" if engine.name != "local" else
             "--sequential" if getattr(args, "sequential", False) else None)
    if fuse and apart is not None:
        if fuse_rule.startswith("resumed"):
            raise MNError(f"cannot resume: the run in {out} trained its nets in fused groups, and {apart} "
                          "trains each net apart",
                          hint=f"resume without {apart}, or drop --resume to start over")
        if getattr(args, "fuse", "auto") == "on":
            raise MNError(f"--fuse on trains the nets of a phase together in one process, but {apart} trains "
                          "each net apart", hint=f"give --fuse on or {apart}, not both")
        fuse, fuse_rule = False, f"auto: off for {apart} (each net trains apart)"
    ctx.fuse = fuse
    threads, threads_rule = choose_threads(getattr(args, "threads", "auto"), device,
                                           lambda: _largest_macs(models, plan), int(config["batch"]))
    ctx.info.update({
        "ensemble": ensemble, "dataset": data_name, "train_size": dataset.train_size,
        "test_size": len(dataset.y_test), "data_seed": args.data_seed, "seed": ctx.seed,
        "val_fraction": val_fraction, "val_size": dataset.val_size,
        "stop": stop, "recipe": args.recipe,
        **({"data_digest": user.digest, "val_given": user.val is not None} if user is not None else {}),
        **({"streamed": {"workers": dataset.stream.num_workers}} if dataset.stream is not None else {}),
        **({"calibrate_temperature": calibrate} if calibrate else {}),
        **({"budget": args.budget_record} if getattr(args, "budget_record", None) else {}),
        **({"hatched_stop": hatched_stop} if hatched_stop != stop else {}),
        **({"hatched_patience": ctx.hatched_settings.patience}
           if ctx.hatched_settings.patience != ctx.mother_settings.patience else {}),
        **({"batch_order": order} if order != "shared" else {}),
        **({"hatched_lr_factor": args.hatched_lr_factor}
           if args.method in HATCHING_METHODS and getattr(args, "hatched_lr", None) is None
           and getattr(args, "hatched_lr_factor", None) is not None else {}),
        "device": str(device), "g": plan.g, "clustering_seed": plan.seed,
        "method": args.method, "config": config, "epochs_scale": args.epochs_scale,
        "noise_mode": args.noise_mode, "sequential": args.sequential, "mncompile": __version__,
        "torch": torch.__version__, "threads": threads, "threads_rule": threads_rule,
        "fuse": fuse, "fuse_rule": fuse_rule,
    })
    record = {k: ctx.info[k] for k in ("ensemble", "dataset", "train_size", "test_size", "data_seed",
                                       "seed", "method", "config", "noise_mode", "method_options", "g",
                                       "clustering_seed", "val_fraction", "stop")}
    record.update({k: ctx.info[k] for k in ("data_digest", "val_given") if k in ctx.info})
    # the joint objective is in the shared model's checkpoint identity (absent there: the sum,
    # as before the option), so an older run resumes with --shared-loss sum
    record["method_options"] = {k: v for k, v in record["method_options"].items() if k != "shared_loss"}
    # the recipe's choices beyond the paper's, only where they differ (older records resume)
    record.update({k: ctx.info[k] for k in ("hatched_stop", "hatched_patience", "batch_order")
                   if k in ctx.info})
    if fuse:  # fused and unfused steps differ in the last bits: a resume keeps the run's choice
        record["fuse"] = True
    force = bool(getattr(args, "force", False))
    with RunFolder(out, method=args.method, resume=args.resume, force=force) as run_folder:
        _check_run_record(out / "ckpt" / args.method / "run.json", record, args.resume)
        try:
            with cpu_threads(threads):
                doc = _train_and_evaluate(ctx, models, methods)
        except MNError:
            # a fresh run that failed before it had results leaves nothing behind
            run_folder.discard()
            raise
    return doc


def _fuse_choice(option: str, device: Any, record: Path, resume: bool, ctx: RunContext) -> tuple[bool, str]:
    """--fuse's choice for this run: on --resume with `auto`, the one the run recorded; else the
    device rule for the nets the run's method trains together."""
    from mncompile.formats.ensemble_file import describe_net
    from mncompile.runtime.fuse_rule import choose_fuse

    if resume and option == "auto" and record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            old = None  # _check_run_record reports the damage
        if isinstance(old, dict):
            return bool(old.get("fuse", False)), "resumed: the run's recorded choice"
    plan = ctx.plan
    # (a plan written before members had their layers names none: nothing of it can fuse)
    phases = [[describe_net(plan.nets[n], plan.input, plan.classes) for n in names if n in plan.nets]
              for names in METHODS[ctx.method].lockstep(ctx)]
    return choose_fuse(option, device, phases)


def _largest_macs(models: Any, plan: Any) -> int:
    """The forward multiply-accumulates per example of the largest member: plan.json's, or counted
    on the modules where the plan has none."""
    from mncompile.runtime.threads import largest_net_macs

    counts = [plan.macs.get(m, 0) for m in plan.member_names]
    if counts and all(c > 0 for c in counts):
        return max(counts)
    return largest_net_macs((models.MODELS[m] for m in plan.member_names), tuple(plan.input))


def _check_streaming(user: UserData, args: argparse.Namespace, config: dict[str, Any], order: str) -> None:
    """What a streamed training DataLoader cannot do, refused before anything trains; its batch size
    becomes the run's unless --batch is given."""
    from mncompile.runtime.userdata import Loader

    assert isinstance(user.train, Loader)
    if getattr(args, "engine", "local") != "local":
        raise MNError("a training DataLoader streams on the local engine only",
                      hint="for --engine ray pass its Dataset (read into memory, and shipped to the workers: "
                      "it must be picklable)")
    if order == "member":
        raise MNError("--batch-order member needs the training data in memory: a DataLoader is read once "
                      "per batch for the whole group, in one order",
                      hint="pass its Dataset (read into memory), or use --batch-order shared")
    if getattr(args, "batch", None) is None and user.train.batch_size != config["batch"]:
        print(f"note: training in batches of {user.train.batch_size}, the DataLoader's (the spec says "
              f"{config['batch']}; --batch sets it)", file=sys.stderr)
        config["batch"] = user.train.batch_size


def _train_and_evaluate(ctx: RunContext, models: Any, methods: Mapping[str, Method] | None) -> dict[str, Any]:
    """Run the method on the engine, evaluate its members, write results.json, history.csv, ensemble.pt."""
    from mncompile.runtime.ensemble import FILE_NAME, save_ensemble
    from mncompile.runtime.results import (
        build_results,
        format_table,
        history_rows,
        write_history,
        write_results,
    )

    engine, out, method = ctx.engine, ctx.out, ctx.method
    run = (methods or {}).get(method) or METHODS[method].run
    outcome = run(ctx)
    members = _kept(outcome.members, engine.failed)
    diverged = outcome.diverged()
    for m, why in diverged.items():
        print(f"warning: member '{m}' diverged and is left out of the ensemble: {why}", file=sys.stderr)
    if diverged and not set(members) - set(diverged):
        raise MNError("every member diverged in training: there is no ensemble to evaluate",
                      hint="lower the learning rate the warnings above name")
    metrics, excluded = evaluate({m: v for m, v in members.items() if m not in diverged}, ctx.dataset,
                                 ctx.device)
    excluded = [*diverged, *excluded]
    info = {**ctx.info, **outcome.info}
    engine_info = engine.info()
    if engine_info:  # what an engine records of itself (the local one: nothing)
        info.update({"engine": engine.name, engine.name: engine_info})
    if engine.failed:
        info["failed_members"] = {m: e for m, e in engine.failed.items() if m in outcome.members}
    if diverged:
        info["diverged_members"] = diverged
    if excluded:
        info["excluded_members"] = excluded
    doc = build_results(method, outcome.phases, metrics, info=info)
    calibration = None
    if ctx.info.get("calibrate_temperature"):
        from mncompile.runtime.calibration import calibrate

        kept = {m: v for m, v in members.items() if m not in set(excluded)}
        calibration = calibrate(kept, ctx.dataset, ctx.device, ctx.info["calibrate_temperature"])
        doc["calibration"] = calibration
    write_results(out, doc)
    write_history(out, outcome.phases)
    # the plan it trained from: the file stores its nets' layers and its digest, not the folder
    unsaved = save_ensemble(out / FILE_NAME, ctx.plan, members, models, method, excluded,
                            temperature=calibration["temperature"] if calibration else None)
    curves = _learning_curves(out, doc, history_rows(outcome.phases))
    print(format_table(doc))
    print(extra_lines(doc))
    if calibration is not None:
        from mncompile.runtime.calibration import describe

        print(describe(calibration))
    budget = info.get("budget")
    if budget:
        actual = float(doc["total_seconds"])
        print(f"budget: estimated {budget['estimate_seconds']:.1f}s for g = {budget['g']}, trained in "
              f"{actual:.1f}s ({actual / budget['estimate_seconds']:.2f}x the estimate; budget "
              f"{budget['budget_seconds']:.0f}s)")
    wrote = f"{out / 'results.json'}, {out / 'history.csv'}" + (f", {curves}" if curves else "")
    if unsaved is None:
        print(f"wrote {wrote} and {out / FILE_NAME} (mncompile.runtime.load_ensemble reads it)")
    else:
        # an ensemble.pt of an earlier run must not stand beside these results as if it were theirs
        (out / FILE_NAME).unlink(missing_ok=True)
        print(f"wrote {wrote}; no {FILE_NAME}: {unsaved}")
    return doc


def _learning_curves(out: Path, doc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """OUT/learning_curves.png of history.csv's `rows`, when matplotlib is installed (else a note)."""
    import importlib.util

    path = out / "learning_curves.png"
    if importlib.util.find_spec("matplotlib") is None:
        path.unlink(missing_ok=True)
        print('note: no learning_curves.png: pip install "mncompile[plots]" for it', file=sys.stderr)
        return None
    from mncompile.runtime.figures import plot_run_curves

    info = doc.get("info", {})
    title = (f"ensemble '{info.get('ensemble')}' trained with {doc['method']}, seed {info.get('seed')}; "
             f"data {info.get('dataset')}: {info.get('train_size')} train / {info.get('val_size', 0)} "
             "validation examples")
    try:
        plot_run_curves(rows, path, title=title)
    except Exception as err:  # noqa: BLE001 - a plot must never cost the run its results
        path.unlink(missing_ok=True)
        print(f"note: no learning_curves.png: drawing it failed ({type(err).__name__}: {err})",
              file=sys.stderr)
        return None
    return path


def _kept(members: Mapping[str, nn.Module], failed: Mapping[str, str]) -> dict[str, nn.Module]:
    """The members whose training did not fail on the engine (a diverged one is evaluated, then left out)."""
    kept = {m: model for m, model in members.items() if m not in failed}
    if not kept:
        raise MNError("every member failed to train: there is no ensemble to evaluate",
                      hint="see the errors above")
    return kept


def evaluate(members: Mapping[str, nn.Module], dataset: Dataset,
             device: torch.device) -> tuple[dict[str, Any], list[str]]:
    """Ensemble metrics of the members on the test set; members whose outputs are not finite are left out."""
    import torch

    from mncompile.runtime.metrics import ensemble_metrics
    from mncompile.runtime.train import predict_proba

    probs, names, excluded = [], [], []
    for name, model in members.items():
        # an engine may hand back nets trained elsewhere: evaluated on --device, as every method's are
        p = predict_proba(model.to(device), dataset.x_test, device=device)
        if not torch.isfinite(p).all():
            excluded.append(name)
            continue
        probs.append(p)
        names.append(name)
    if not probs:
        raise MNError("every member diverged: there is no ensemble to evaluate",
                      hint="lower the learning rates (--lr, --hatched-lr)")
    return ensemble_metrics(torch.stack(probs), dataset.y_test.cpu(), names=names), excluded


def extra_lines(doc: Mapping[str, Any]) -> str:
    """What the results table leaves out: per-phase epochs, diversity, the hatch check, exclusions."""
    lines = []
    for p in doc["phases"]:
        epochs = [doc["models"][m]["epochs"] for m in p["models"]]
        if epochs:
            lines.append(f"phase {p['name']}: {len(epochs)} model{'s' if len(epochs) != 1 else ''}, "
                         f"{sum(epochs)} epochs ({min(epochs)}-{max(epochs)} each), {p['seconds']:.1f}s")
        else:
            lines.append(f"phase {p['name']}: {p['seconds']:.2f}s")
    div = (doc.get("ensemble") or {}).get("diversity") or {}
    if div:
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"diversity: member covariance {fmt(div.get('member_covariance'))}, "
                     f"member variance {fmt(div.get('member_variance'))}, "
                     f"ensemble variance {fmt(div.get('ensemble_variance'))}")
    checks = doc["info"].get("hatch") or {}
    if checks:
        worst = max(checks, key=lambda m: checks[m]["max_abs_diff"])
        exact = sum(1 for c in checks.values() if c["table_exact"])
        lines.append(f"hatching: {exact} of {len(checks)} tables exact; largest output difference "
                     f"before noise {checks[worst]['max_abs_diff']:.3g} (member {worst})")
        for m, c in checks.items():
            if not c["table_exact"]:
                why = "; ".join(c.get("reasons") or []) or "its table says it is not exact"
                lines.append(f"  {m} does not start as its MotherNet's function: {why} "
                             "(`mncompile check` says what to change in the spec)")
    shared = (doc["info"].get("shared") or {}).get("clusters") or {}
    for mother, c in shared.items():
        if not c.get("shared"):
            lines.append(f"shared-mothernets: {mother} kept separate members: {c.get('reason')}")
            continue
        lines.append(f"shared-mothernets: {mother}: {c['shared_params']:,} parameters instead of "
                     f"{c['members_params']:,} ({c['reduction']:.1%} fewer; the paper's (K-1)|M| = "
                     f"{c['paper_saving']:,}, chi = {c['chi']:.3f}); reproduces its hatched members to "
                     f"{c['max_abs_diff']:.3g} (eval mode) before noise")
    if doc["info"].get("excluded_members"):
        lines.append("left out of the ensemble (diverged in training, or outputs not finite): "
                     + ", ".join(doc["info"]["excluded_members"]))
    if doc["info"].get("failed_members"):
        failed = ", ".join(doc["info"]["failed_members"])
        lines.append(f"left out of the ensemble (training failed): {failed}")
    return "\n".join(lines)


def run_guarded(folder: Path, defaults: Mapping[str, Any], args: argparse.Namespace,
                resume_hint: str, methods: Mapping[str, Method] | None = None) -> int:
    """`execute`, turning Ctrl-C into exit status 130 with a message on how to resume."""
    try:
        execute(folder, defaults, args, methods)
    except KeyboardInterrupt:
        out = args.out if args.out is not None else default_out(str(defaults.get("ensemble", "ensemble")),
                                                                 args.method)
        print(f"\ninterrupted: the checkpoints of finished epochs are in {out}/ckpt; "
              f"resume with:\n  {resume_hint}", file=sys.stderr)
        return 130
    return 0


def main(folder: str | Path, defaults: Mapping[str, Any], argv: Sequence[str] | None = None, *,
         methods: Mapping[str, Method] | None = None) -> int:
    """What a generated train.py runs: parse `argv`, train, evaluate, write results; an exit status.

    `defaults` holds `ensemble` (its name), `data` (the spec's dataset or None) and `train`
    (the spec's resolved train settings). User errors print one message and give status 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python " + str(Path(folder) / "train.py")
    args = build_parser(defaults, prog="train.py").parse_args(argv)
    try:
        return run_guarded(Path(folder), defaults, args, resume_command(argv, prog), methods)
    except MNError as err:
        print(str(err.with_source("train.py", "")), file=sys.stderr)
        return 2
