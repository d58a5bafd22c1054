"""The training pipeline a generated `train.py` runs: options, methods, evaluation, results.

A generated folder (`models.py`, `plan.json`, `hatch/*.json`) plus a dataset go in; the trained
ensemble's `results.json`, `history.csv` and checkpoints come out. `main(folder, defaults, argv)`
is what `train.py` calls; `mncompile run` calls `execute` on the options it parsed itself.

How an ensemble is trained is a *method*, looked up by name in `METHODS`. A method gets a
`RunContext` (everything about the run: folder, models, plan, tables, data, settings, output
folder, device, seed, progress) and returns an `Outcome`: its phases (for timing) and the
trained members. The pipeline evaluates the members on the test set the same way for every
method, so methods are comparable. Two methods are built in:

- `mothernets`: per cluster, train the MotherNet on the full training set (all MotherNets in
  lockstep over one shared batch stream), hatch every member through its table, check the hatch
  numerically, add noise, then train the hatched members in lockstep over one shared stream.
  A cluster of one net has no MotherNet of its own: the net is trained in the first phase.
- `full-data`: every member from scratch with the MotherNet settings, in lockstep.

Another module can add a method (a baseline, say) with the decorator::

    from mncompile.runtime.pipeline import Outcome, RunContext, register_method

    @register_method("bagging", help="every member from scratch on a bootstrap sample")
    def bagging(ctx: RunContext) -> Outcome:
        ...

Modules named in `METHOD_MODULES` are imported (when they exist) before a method is looked
up, so `--method bagging` then works from every `train.py`. This module imports torch lazily,
so that the `mncompile` command can build its option parser without it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.util
import json
import math
import shlex
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.passes.hatch_plan import HatchTable
    from mncompile.runtime.data import Dataset
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.results import PhaseRecord
    from mncompile.runtime.train import ModelResult, TrainSettings

#: the train keys, in the order `--help` lists their overrides
TRAIN_KEYS: tuple[str, ...] = (
    "batch", "lr", "hatched_lr", "momentum", "weight_decay", "patience", "max_epochs",
    "hatched_max_epochs", "noise", "schedule",
)
DEFAULT_DATA = "mnist1d"
DEVICES = ("auto", "cpu", "cuda")
NOISE_MODES = ("gaussian", "symmetric")
#: where the networks train: this process, or a Ray cluster (docs/ray.md)
ENGINES = ("local", "ray")
#: modules that register more methods when imported; skipped when they do not exist
METHOD_MODULES: list[str] = ["mncompile.runtime.baselines", "mncompile.runtime.shared"]
#: the largest |hatched - MotherNet| output difference, relative to the output scale, that
#: still counts as "the same function" for a table that claims to be exact
EXACT_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------- methods


@dataclass
class Outcome:
    """What a method hands back: its phases (wall time, trained models) and the ensemble.

    `members` maps each ensemble member's name to a trained module (input -> logits); the
    pipeline evaluates them on the test set. `info` is added to results.json's `info`.
    """

    phases: list[PhaseRecord]
    members: dict[str, nn.Module]
    info: dict[str, Any] = field(default_factory=dict)


Method = Callable[["RunContext"], Outcome]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    run: Method
    help: str


#: every training method by its `--method` name
METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, *, help: str = "") -> Callable[[Method], Method]:  # noqa: A002
    """Decorator: make `func(ctx) -> Outcome` available as `--method NAME`."""

    def add(func: Method) -> Method:
        if name in METHODS and METHODS[name].run is not func:
            raise ValueError(f"method '{name}' is registered twice")
        METHODS[name] = MethodSpec(name, func, help)
        return func

    return add


def load_methods() -> dict[str, MethodSpec]:
    """`METHODS`, after importing every existing module of `METHOD_MODULES`."""
    for module in METHOD_MODULES:
        if module not in sys.modules and importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return METHODS


@dataclass
class RunContext:
    """Everything a method needs to train one ensemble.

    `config` holds the resolved train settings (the spec's, then command-line overrides, then
    `--epochs-scale`); `mother_settings` and `hatched_settings` are its two phases. Model names
    are the spec's. Use `build` for a freshly initialised net (seeded by the run seed and the
    name), `train` to train a group of nets (lockstep, or one at a time with `--sequential`,
    checkpointed under `ckpt_dir(phase)`), and `timed_phase` to record a phase's wall time.
    """

    folder: Path
    models: ModuleType
    plan: dict[str, Any]
    tables: dict[str, HatchTable]
    dataset: Dataset
    config: dict[str, Any]
    mother_settings: TrainSettings
    hatched_settings: TrainSettings
    out: Path
    device: torch.device
    seed: int
    progress: Progress
    resume: bool = False
    sequential: bool = False
    method: str = "mothernets"
    noise: float = 0.0
    noise_mode: str = "gaussian"
    info: dict[str, Any] = field(default_factory=dict)
    #: `local`, or `ray` (runtime/ray_engine.py) with `engine_options` address, gpus_per_model, device
    engine: str = "local"
    engine_options: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> list[str]:
        """The ensemble's members, in spec order."""
        return [m["name"] for m in self.plan["members"]]

    @property
    def clusters(self) -> list[tuple[str, list[str]]]:
        """(MotherNet name, its members) per cluster, in plan order."""
        return [(c["mother"]["name"], list(c["members"])) for c in self.plan["clusters"]]

    def build(self, name: str, *, salt: str = "") -> nn.Module:
        """A fresh `name` net from models.py, initialised from (seed, name, salt) only."""
        import torch

        cls = self.models.MODELS[name]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "init", name, salt))
            model: nn.Module = cls()
        return model

    def ckpt_dir(self, phase: str) -> Path:
        """Where the checkpoints of one phase of this method live: OUT/ckpt/<method>/<phase>."""
        return self.out / "ckpt" / self.method / phase

    def train(self, models: Mapping[str, nn.Module], settings: TrainSettings | Mapping[str, TrainSettings],
              phase: str) -> dict[str, ModelResult]:
        """Train `models` in lockstep (or one at a time with `--sequential`), checkpointed and resumable."""
        from mncompile.runtime.train import train_lockstep, train_sequential

        trainer = train_sequential if self.sequential else train_lockstep
        return trainer(models, self.dataset, settings, seed=self.seed, device=self.device,
                       checkpoint_dir=self.ckpt_dir(phase), resume=self.resume, progress=self.progress,
                       phase=phase)

    def phase_seconds(self, results: Mapping[str, ModelResult]) -> float:
        """The wall time of a trained group: shared epochs once (lockstep), or every model's (sequential)."""
        from mncompile.runtime.train import group_seconds

        if self.sequential:
            return sum(r.seconds for r in results.values())
        return group_seconds(results)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from the run seed and some names: independent streams per purpose and model."""
    import numpy as np

    words = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF] + [zlib.crc32(p.encode()) for p in parts]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)
    return int(state[0]) >> 1


@register_method("mothernets", help="train the MotherNets, hatch the members, train them (default)")
def train_mothernets(ctx: RunContext) -> Outcome:
    """MotherNets: mothers (and lone members) first, then hatching, then the hatched members."""
    if ctx.engine == "ray":
        from mncompile.runtime import ray_engine

        return ray_engine.train_mothernets(ctx)
    from mncompile.runtime.results import PhaseRecord

    first, mother_of, phases = train_first_phase(ctx)
    members: dict[str, nn.Module] = {m: first[m] for m in ctx.members if m in first}
    hatched, checks, hatch_seconds = hatch_members(ctx, first, mother_of)
    if hatched:
        phases.append(PhaseRecord("hatching", hatch_seconds, {}))
        results = ctx.train(hatched, ctx.hatched_settings, "members")
        phases.append(PhaseRecord("members", ctx.phase_seconds(results), results))
    members.update(hatched)
    return Outcome(phases, {m: members[m] for m in ctx.members}, {"hatch": checks})


def train_first_phase(ctx: RunContext) -> tuple[dict[str, nn.Module], dict[str, str], list[PhaseRecord]]:
    """Train every MotherNet and every lone member (a cluster of one) in lockstep.

    Returns the trained nets by name, each hatched member's MotherNet, and the phase record.
    """
    from mncompile.runtime.results import PhaseRecord

    first, mother_of = first_phase_nets(ctx)
    first_results = ctx.train(first, ctx.mother_settings, "mothernets")
    phases = [PhaseRecord("mothernets", ctx.phase_seconds(first_results), first_results)]
    for name, r in first_results.items():
        if not r.ok:
            raise MNError(f"MotherNet '{name}' diverged: {r.message}",
                          hint="lower --lr, or check the data; nothing can hatch from it")
    return first, mother_of, phases


def first_phase_nets(ctx: RunContext) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Fresh MotherNets (and lone members: clusters of one net), and each hatched member's MotherNet."""
    first: dict[str, nn.Module] = {}
    mother_of: dict[str, str] = {}
    for mother_name, cluster in ctx.clusters:
        if len(cluster) == 1:
            first[cluster[0]] = ctx.build(cluster[0])
        else:
            first[mother_name] = ctx.build(mother_name)
            mother_of.update({m: mother_name for m in cluster})
    return first, mother_of


def hatch_members(ctx: RunContext, first: Mapping[str, nn.Module], mother_of: Mapping[str, str], *,
                  plain: dict[str, nn.Module] | None = None,
                  ) -> tuple[dict[str, nn.Module], dict[str, Any], float]:
    """Hatch every member of a cluster from its trained MotherNet, check it, then add the run's noise.

    `plain`, when given, also receives every member exactly as hatched, before the noise.
    Returns the hatched members (spec order), the numerical check of each, and the seconds spent.
    """
    from mncompile.runtime.hatching import hatch, verify_hatch

    hatched: dict[str, nn.Module] = {}
    checks: dict[str, Any] = {}
    batch = ctx.dataset.x_train[: min(256, len(ctx.dataset.x_train))].to(ctx.device)
    hatch_seconds = 0.0
    for m in ctx.members:
        if m not in mother_of:
            continue
        mother, table = first[mother_of[m]], ctx.tables[m]
        model = ctx.build(m).to(ctx.device)
        start = time.perf_counter()
        model.load_state_dict(hatch(mother, table))
        hatch_seconds += time.perf_counter() - start
        diff = verify_hatch(mother, model, batch)
        scale = verify_scale(mother, batch)
        checks[m] = {"mother": mother_of[m], "table_exact": table.exact, "max_abs_diff": diff,
                     "relative_diff": diff / scale, "reasons": list(table.reasons)}
        if table.exact and not diff <= EXACT_TOLERANCE * scale:
            checks[m]["warning"] = (f"hatching '{m}' from '{mother_of[m]}' should be exact, but the "
                                    f"outputs differ by {diff:.3g} (output scale {scale:.3g})")
            print(f"warning: {checks[m]['warning']}", file=sys.stderr, flush=True)
        if plain is not None:
            plain[m] = copy.deepcopy(model) if ctx.noise > 0 else model
        if ctx.noise > 0:
            # hatched again with the noise: the check above must see the noiseless member
            start = time.perf_counter()
            model.load_state_dict(hatch(mother, table, noise=ctx.noise, noise_mode=ctx.noise_mode,
                                        seed=derive_seed(ctx.seed, "noise", m)))
            hatch_seconds += time.perf_counter() - start
        hatched[m] = model
    return hatched, checks, hatch_seconds


def verify_scale(mother: nn.Module, batch: torch.Tensor) -> float:
    """1 + the largest |logit| of `mother` on `batch` (eval mode): what hatch differences are relative to."""
    import torch

    was = mother.training
    mother.eval()
    try:
        with torch.no_grad():
            return 1.0 + float(mother(batch).abs().max())
    finally:
        mother.train(was)


@register_method("full-data", help="every member from scratch on all the data, MotherNet settings")
def train_full_data(ctx: RunContext) -> Outcome:
    """The FD baseline: each member trained from scratch with the MotherNet settings, in lockstep."""
    if ctx.engine == "ray":
        from mncompile.runtime import ray_engine

        return ray_engine.train_full_data(ctx)
    from mncompile.runtime.results import PhaseRecord

    models = {m: ctx.build(m) for m in ctx.members}
    results = ctx.train(models, ctx.mother_settings, "members")
    return Outcome([PhaseRecord("members", ctx.phase_seconds(results), results)], models)


# ---------------------------------------------------------------------------------- options


def _number(kind: type, lowest: float, inclusive: bool = True) -> Callable[[str], Any]:
    word = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if value < lowest or (not inclusive and value == lowest):
            bound = f"at least {lowest}" if inclusive else f"above {lowest}"
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        return value

    return parse


def _gpus_per_model(text: str) -> int | None:
    return None if text == "auto" else _number(int, 1)(text)


def add_engine_arguments(g: Any) -> None:
    """--engine, --address, --gpus-per-model (an argument parser or group)."""
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="where the networks train: local (this process, default) or ray (a Ray "
                   "cluster, see docs/ray.md; pip install \"mncompile[ray]\")")
    g.add_argument("--address", metavar="ADDR",
                   help="with --engine ray: the cluster to use (HOST:PORT, or auto for the one `ray start` "
                   "runs on this machine); default RAY_ADDRESS, else a new Ray instance on this machine")
    g.add_argument("--gpus-per-model", type=_gpus_per_model, metavar="N|auto",
                   help="with --engine ray: GPUs (CPU workers on a cluster without GPUs) per network; "
                   "auto (default): one each while more networks are ready than devices are free, "
                   "else the free ones split among them, data-parallel")


def add_run_arguments(p: argparse.ArgumentParser, default_out: str | None) -> None:
    """The training options shared by `train.py` and `mncompile run`."""
    out_default = default_out if default_out is not None else "runs/<ensemble>"
    g = p.add_argument_group("run")
    g.add_argument("--data", metavar="NAME",
                   help="dataset: mnist1d, digits, cifar10, cifar100, svhn, synthetic or npz:PATH "
                   "(default: the spec's `data`, else mnist1d)")
    g.add_argument("--data-dir", metavar="DIR", help="folder holding cifar10/cifar100/svhn files")
    g.add_argument("--train-size", type=_number(int, 2), metavar="N",
                   help="use only the first N training examples (synthetic: generate N)")
    g.add_argument("--test-size", type=_number(int, 1), metavar="N",
                   help="use only the first N test examples (synthetic: generate N)")
    g.add_argument("--data-seed", type=_number(int, 0), default=0, metavar="S",
                   help="seed of generated data (mnist1d, synthetic) and the digits split (default 0)")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where to train: auto (CUDA when available), cpu or cuda (default auto)")
    g.add_argument("--out", metavar="DIR", default=default_out,
                   help=f"folder for results.json, history.csv and ckpt/ (default {out_default})")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in OUT/ckpt (same options as the first run)")
    g.add_argument("--epochs-scale", type=_number(float, 0.0, inclusive=False), default=1.0, metavar="F",
                   help="multiply max_epochs, hatched_max_epochs and patience by F, rounding up, "
                   "at least 1 (default 1)")
    g.add_argument("--seed", type=_number(int, 0), metavar="S",
                   help="seed of initialisation, batch order and noise (default: the spec's seed)")
    g.add_argument("--quiet", action="store_true", help="print only the final table")
    g.add_argument("--sequential", action="store_true",
                   help="train the nets of a phase one at a time instead of over one shared batch "
                   "stream (same weights on the CPU, slower)")
    g.add_argument("--method", default="mothernets", metavar="NAME",
                   help="how to train the ensemble: mothernets (default), full-data, bagging, "
                   "distill, snapshot, fge or treenet (docs/baselines.md)")
    g.add_argument("--noise-mode", choices=NOISE_MODES, default="gaussian",
                   help="noise after hatching: gaussian (default), or symmetric (exact +d/-d pairs)")
    add_engine_arguments(p.add_argument_group("engine"))
    t = p.add_argument_group("training settings (override the spec's train { ... })")
    t.add_argument("--batch", type=_number(int, 1), metavar="N", help="mini-batch size")
    t.add_argument("--lr", type=_number(float, 0.0, inclusive=False), metavar="LR",
                   help="learning rate of MotherNets (and of full-data members)")
    t.add_argument("--hatched-lr", type=_number(float, 0.0, inclusive=False), metavar="LR",
                   help="learning rate of hatched members")
    t.add_argument("--momentum", type=_number(float, 0.0), metavar="M", help="SGD momentum")
    t.add_argument("--weight-decay", type=_number(float, 0.0), metavar="WD", help="SGD weight decay")
    t.add_argument("--patience", type=_number(int, 0), metavar="N",
                   help="stop when training accuracy has not improved for N epochs (0: never)")
    t.add_argument("--max-epochs", type=_number(int, 1), metavar="N",
                   help="epoch cap of MotherNets and of nets trained from scratch")
    t.add_argument("--hatched-max-epochs", type=_number(int, 1), metavar="N",
                   help="epoch cap of hatched members")
    t.add_argument("--noise", type=_number(float, 0.0), metavar="STD",
                   help="std of the noise added after hatching, relative to each tensor's std")
    t.add_argument("--schedule", choices=("cosine", "constant"), help="learning-rate schedule")
    # imported here: baselines imports this module; its options are plain argparse (no torch)
    from mncompile.runtime.baselines import add_method_arguments

    add_method_arguments(p)


def build_parser(defaults: Mapping[str, Any], prog: str = "train.py") -> argparse.ArgumentParser:
    """The option parser of a generated train.py."""
    name = str(defaults.get("ensemble", "ensemble"))
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Train ensemble {name} with MotherNets (or another --method) and evaluate it.",
        epilog="Writes OUT/results.json, OUT/history.csv and checkpoints under OUT/ckpt/; "
        "see docs/training.md in the mncompile repository.",
    )
    add_run_arguments(p, f"runs/{name}")
    return p


def resolve_config(train: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The train settings: `train` (the spec's), then the options that override them, then the scale."""
    from pydantic import ValidationError

    from mncompile.ir import TrainConfig

    try:
        base = TrainConfig(**dict(train)).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise MNError(f"the training settings are invalid: {where}: {first['msg']}",
                      hint="recompile the spec; train.py holds the settings it was generated with") from None
    for key in TRAIN_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    scale = float(getattr(args, "epochs_scale", 1.0) or 1.0)
    if scale != 1.0:
        for key in ("max_epochs", "hatched_max_epochs", "patience"):
            if key == "patience" and base[key] <= 0:
                continue
            base[key] = max(1, math.ceil(base[key] * scale - 1e-9))
    if getattr(args, "seed", None) is not None:
        base["seed"] = args.seed
    return base


# ---------------------------------------------------------------------------------- the run


def load_generated_module(path: Path, kind: str, key: Path) -> ModuleType:
    """Execute a generated file as a fresh module named after `kind` and `key` (not in sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"mncompile_{kind}_{zlib.crc32(str(key).encode())}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_folder(folder: Path) -> tuple[ModuleType, dict[str, Any], dict[str, HatchTable]]:
    """models.py (as a fresh module), plan.json and the hatch tables of a generated folder, checked."""
    from mncompile.runtime.hatching import load_table

    folder = Path(folder)
    plan_path, models_path = folder / "plan.json", folder / "models.py"
    for path in (plan_path, models_path):
        if not path.is_file():
            raise MNError(f"'{path}' does not exist",
                          hint="compile the spec again: mncompile SPEC -o " + str(folder))
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        members = [m["name"] for m in plan["members"]]
        clusters = [(c["mother"]["name"], list(c["members"])) for c in plan["clusters"]]
    except (ValueError, KeyError, TypeError) as err:
        raise MNError(f"'{plan_path}' is not a plan this mncompile can read ({err})",
                      hint="compile the spec again") from None
    models = load_generated_module(models_path, "models", folder)
    known = getattr(models, "MODELS", {})
    needed = members + [mother for mother, ms in clusters if len(ms) > 1]
    missing = [n for n in needed if n not in known]
    if missing:
        raise MNError(f"'{models_path}' has no class for '{missing[0]}', which plan.json names",
                      hint="the folder is out of date: compile the spec again")
    tables: dict[str, HatchTable] = {}
    hatch_dir = folder / "hatch"
    for path in sorted(hatch_dir.glob("*.json")) if hatch_dir.is_dir() else []:
        table = load_table(path)
        tables[table.member] = table
    for mother, ms in clusters:
        for m in ms if len(ms) > 1 else []:
            if m not in tables:
                raise MNError(f"member '{m}' has no hatch table in '{hatch_dir}'",
                              hint="the folder is out of date: compile the spec again")
            if tables[m].mother != mother:
                raise MNError(f"the hatch table of '{m}' is for MotherNet '{tables[m].mother}', but "
                              f"plan.json puts it under '{mother}'", hint="compile the spec again")
    return models, plan, tables


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
        diff = [k for k in sorted(set(old) | set(record)) if old.get(k) != record.get(k)]
        if diff:
            parts = ", ".join(f"{k} {old.get(k)!r} -> {record.get(k)!r}" for k in diff)
            raise MNError(f"cannot resume: this run differs from the one in {path.parent} ({parts})",
                          hint="resume with the options of the first run, or drop --resume to start over")
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def execute(folder: Path, defaults: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate the ensemble of a generated folder with the parsed options; returns results.json."""
    from mncompile import __version__

    methods = load_methods()
    if args.method not in methods:
        raise MNError(f"unknown method '{args.method}'", hint="known methods: " + ", ".join(sorted(methods)))
    engine = getattr(args, "engine", "local")
    if engine == "ray":
        from mncompile.runtime import ray_engine

        ray_engine.check(args)
    elif getattr(args, "address", None) is not None or getattr(args, "gpus_per_model", None) is not None:
        raise MNError("--address and --gpus-per-model are options of --engine ray", hint="add --engine ray")
    config = resolve_config(defaults.get("train", {}), args)
    models, plan, tables = load_folder(Path(folder))
    ensemble = str(plan.get("ensemble", defaults.get("ensemble", "ensemble")))
    data_name = args.data or defaults.get("data") or DEFAULT_DATA
    input_shape = tuple(int(d) for d in plan["input"])
    classes = int(plan["classes"])

    import torch

    from mncompile.runtime.data import load_dataset
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.results import build_results, format_table, write_history, write_results
    from mncompile.runtime.train import TrainSettings, resolve_device

    device = resolve_device(args.device)
    dataset = load_dataset(data_name, input_shape, classes, args.data_dir, seed=args.data_seed,
                           train_size=args.train_size, test_size=args.test_size)
    out = Path(args.out if args.out is not None else f"runs/{ensemble}")
    progress = Progress(quiet=args.quiet)
    ctx = RunContext(
        folder=Path(folder), models=models, plan=plan, tables=tables, dataset=dataset, config=config,
        mother_settings=TrainSettings.from_config(config, "mother"),
        hatched_settings=TrainSettings.from_config(config, "hatched"),
        out=out, device=device, seed=int(config["seed"]), progress=progress, resume=args.resume,
        sequential=args.sequential, method=args.method, noise=float(config["noise"]),
        noise_mode=args.noise_mode, engine=engine,
        engine_options={"address": getattr(args, "address", None), "device": args.device,
                        "gpus_per_model": getattr(args, "gpus_per_model", None)},
    )
    from mncompile.runtime.baselines import method_options

    ctx.info["method_options"] = method_options(args)
    ctx.info.update({
        "ensemble": ensemble, "dataset": data_name, "train_size": len(dataset.y_train),
        "test_size": len(dataset.y_test), "data_seed": args.data_seed, "seed": ctx.seed,
        "device": str(device), "g": plan.get("g"), "clustering_seed": plan.get("seed"),
        "method": args.method, "config": config, "epochs_scale": args.epochs_scale,
        "noise_mode": args.noise_mode, "sequential": args.sequential, "mncompile": __version__,
        "torch": torch.__version__,
    })
    record = {k: ctx.info[k] for k in ("ensemble", "dataset", "train_size", "test_size", "data_seed",
                                       "seed", "method", "config", "noise_mode", "method_options", "g",
                                       "clustering_seed")}
    out.mkdir(parents=True, exist_ok=True)
    _check_run_record(out / "ckpt" / args.method / "run.json", record, args.resume)

    outcome = methods[args.method].run(ctx)
    metrics, excluded = evaluate(outcome.members, dataset, device)
    info = {**ctx.info, **outcome.info}
    if excluded:
        info["excluded_members"] = excluded
    doc = build_results(args.method, outcome.phases, metrics, info=info)
    write_results(out, doc)
    write_history(out, outcome.phases)
    from mncompile.runtime.ensemble import FILE_NAME, save_ensemble

    unsaved = save_ensemble(out / FILE_NAME, folder, outcome.members, models, args.method, excluded)
    print(format_table(doc))
    print(extra_lines(doc))
    if unsaved is None:
        print(f"wrote {out / 'results.json'}, {out / 'history.csv'} and {out / FILE_NAME} "
              "(mncompile.runtime.load_ensemble reads it)")
    else:
        print(f"wrote {out / 'results.json'} and {out / 'history.csv'}; no {FILE_NAME}: {unsaved}")
    return doc


def evaluate(members: Mapping[str, nn.Module], dataset: Dataset,
             device: torch.device) -> tuple[dict[str, Any], list[str]]:
    """Ensemble metrics of the members on the test set; members whose outputs are not finite are left out."""
    import torch

    from mncompile.runtime.metrics import ensemble_metrics
    from mncompile.runtime.train import predict_proba

    probs, names, excluded = [], [], []
    for name, model in members.items():
        p = predict_proba(model, dataset.x_test, device=device)
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
        worst = max(c["max_abs_diff"] for c in checks.values())
        exact = sum(1 for c in checks.values() if c["table_exact"])
        lines.append(f"hatching: {exact} of {len(checks)} tables exact; largest output difference "
                     f"before noise {worst:.3g}")
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
        lines.append("left out of the ensemble (not finite): " + ", ".join(doc["info"]["excluded_members"]))
    if doc["info"].get("failed_members"):
        failed = ", ".join(doc["info"]["failed_members"])
        lines.append(f"left out of the ensemble (training failed): {failed}")
    return "\n".join(lines)


def resume_command(argv: Sequence[str], prog: str) -> str:
    """The command line that resumes an interrupted run."""
    args = list(argv)
    if "--resume" not in args:
        args.append("--resume")
    return " ".join([prog, *map(shlex.quote, args)])


def run_guarded(folder: Path, defaults: Mapping[str, Any], args: argparse.Namespace,
                resume_hint: str) -> int:
    """`execute`, turning Ctrl-C into exit status 130 with a message on how to resume."""
    try:
        execute(folder, defaults, args)
    except KeyboardInterrupt:
        out = args.out if args.out is not None else "the output folder"
        print(f"\ninterrupted: the checkpoints of finished epochs are in {out}/ckpt; "
              f"resume with:\n  {resume_hint}", file=sys.stderr)
        return 130
    return 0


def main(folder: str | Path, defaults: Mapping[str, Any], argv: Sequence[str] | None = None) -> int:
    """What a generated train.py runs: parse `argv`, train, evaluate, write results; an exit status.

    `defaults` holds `ensemble` (its name), `data` (the spec's dataset or None) and `train`
    (the spec's resolved train settings). User errors print one message and give status 2.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "python " + str(Path(folder) / "train.py")
    args = build_parser(defaults, prog="train.py").parse_args(argv)
    try:
        return run_guarded(Path(folder), defaults, args, resume_command(argv, prog))
    except MNError as err:
        print(str(err.with_source("train.py", "")), file=sys.stderr)
        return 2
