"""mncompile's full-data, snapshot and fge methods against torchensemble 0.2, same data, same net.

Trains, in one run and on one machine, each pair:

- `voting`:   our `full-data` on a spec of N copies of one member (default: `c32` of
  examples/mnist1d.mnet, N = the spec's member count, 5) against torchensemble's
  `VotingClassifier` with `n_estimators` N of the same generated PyTorch class;
- `snapshot`: our `snapshot` (base: that member) against `SnapshotEnsembleClassifier`;
- `fge`:      our `fge` against `FastGeometricClassifier`.

Both sides get the same MNIST-1D examples (`mncompile.runtime.data.load_dataset`, our runs with
`--val-fraction 0 --stop train-acc` where the runtime has those options), the same class from the
generated `models.py`, SGD with the spec's batch, momentum and weight decay, and the learning
rates, epoch budgets and cycle schedules our methods use (read back from our run's results.json,
docs/baselines.md). torchensemble has no early stopping, so ours runs with `--patience 0`: a fixed
number of epochs on both sides. torchensemble gets a plain `DataLoader(TensorDataset(...),
shuffle=True)` and `test_loader=None` (given a test loader it keeps the ensemble best on the test
set). Every ensemble, ours and theirs, is scored the same way: `mncompile.runtime.pipeline.evaluate`
(the mean of the members' softmax outputs, eval mode) on the same test set, with the error's 95 %
Wilson interval.

Timing: for each method `--repeats` runs alternate ours, theirs, ours, theirs, ... at `--threads`
torch threads. Ours: `train` is results.json's total_seconds (the epochs' training loops; the
per-epoch checkpoint writes and the evaluation are not in it), `+ckpt` the wall time of the
method's whole run (training, every checkpoint and snapshot written and read back: the like for
like figure), `execute` the whole in-process pipeline call (data, evaluation, results, ensemble.pt).
Theirs: the wall time of `fit` (it includes torchensemble's own saving, below). The ratio is ours /
theirs per epoch (each side's seconds over its epochs), the median over the repeats; below 1
means ours is cheaper.

What each side saves: ours writes every net's checkpoint (weights, optimizer state, history;
SHA-256, atomic) after every epoch, and one file per snapshot (SE, FGE). torchensemble's fit
(`save_model=True`, its default, into a temporary `save_dir`) writes one file of the whole
ensemble's state_dict after every epoch for Voting, and once at the end for Snapshot and FGE.

`--profile` then looks for where an epoch's time goes, on the voting workload (N nets) and on one
net: whole runs of `--profile-epochs` epochs, `--repeats` times round-robin (our `fit` with
checkpoints and without, i.e. checkpoint_dir None; a bare loop with and without the running
loss/accuracy sums; the batch stream alone; their fit with and without saving; their DataLoader
passes alone), and the pieces timed call by call (best of 5 rounds), multiplied by the calls an
epoch makes: our `save_checkpoint` split into its SHA-256 digest, its serialisation and the rest
(the temporary file, fsync, rename), torchensemble's `io.save`, the running sums of one step, one
SGD step. It prints what was measured; on a busy machine only the per-call figures are stable.

    python bench/peers.py                                        # mnist1d.mnet, c32 x 5, 60 epochs, 3 repeats
    OMP_NUM_THREADS=1 python bench/peers.py --repeats 1          # one run each
    python bench/peers.py --epochs 20 --methods voting --profile # quicker, with the cost split
    python bench/peers.py --spec examples/mlp.mnet --member mlp2 --train-size 16000 --test-size 8000

Needs torchensemble 0.2, installed by hand (its dependencies are torch, already here, and joblib,
which scikit-learn brings; torchvision is not needed): `pip install --no-deps torchensemble==0.2.0`.
Times are wall clock on a machine that may be shared: compare the ratios of one invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mncompile.api import load, loads  # noqa: E402
from mncompile.compiler import compile_ensemble  # noqa: E402
from mncompile.diagnostics import MNError  # noqa: E402
from mncompile.fmt import format_ensemble  # noqa: E402
from mncompile.ir import Ensemble  # noqa: E402
from mncompile.runtime.metrics import wilson  # noqa: E402
from mncompile.runtime.pipeline import build_parser, execute  # noqa: E402
from mncompile.table import render  # noqa: E402
from mncompile.writer import write_folder  # noqa: E402

#: our method and torchensemble's class, per pair
PAIRS: dict[str, tuple[str, str]] = {
    "voting": ("full-data", "VotingClassifier"),
    "snapshot": ("snapshot", "SnapshotEnsembleClassifier"),
    "fge": ("fge", "FastGeometricClassifier"),
}
NEVER = 10**9  # torchensemble's log_interval: it still logs batch 0 of every epoch
INSTALL = "pip install --no-deps torchensemble==0.2.0"


class UsageError(Exception):
    """A bad option or a missing package: one message, exit status 2."""


def import_torchensemble() -> Any:
    """torchensemble, or a UsageError saying how to install it."""
    try:
        import torchensemble
        from torchensemble import fast_geometric, snapshot_ensemble, voting  # noqa: F401
    except ImportError as err:
        missing = getattr(err, "name", None) or "torchensemble"
        if missing.split(".")[0] == "torchensemble":
            raise UsageError(f"bench/peers.py needs torchensemble 0.2: {INSTALL}") from None
        raise UsageError(f"torchensemble could not import {missing} ({err}); install it (joblib comes "
                         "with scikit-learn, in mncompile's dev extra)") from None
    return torchensemble


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------ the spec


def copies_spec(e: Ensemble, member: str, copies: int) -> Ensemble:
    """A spec of `copies` copies of `member` of `e` (named member_1, ...), with e's task and settings."""
    names = [n.name for n in e.nets]
    if member not in names:
        raise UsageError(f"--member '{member}' is not a net of {e.source}; its nets: {', '.join(names)}")
    net = e.net(member)
    nets = tuple(net.model_copy(update={"name": f"{member}_{i}"}) for i in range(1, copies + 1))
    text = format_ensemble(e.model_copy(update={"name": f"{e.name}_{member}_x{copies}", "nets": nets}))
    return loads(text, source=f"{member}_x{copies}.mnet")


# ------------------------------------------------------------------------------------ ours


def run_ours(folder: Path, defaults: Mapping[str, Any], method: str, argv: Sequence[str]) -> dict[str, Any]:
    """One in-process pipeline run: its results.json plus the method's and the call's wall times."""
    from mncompile.runtime.methods import METHODS

    args = build_parser(defaults).parse_args(list(argv))
    timed: dict[str, float] = {}

    def method_run(ctx: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return METHODS[method].run(ctx)
        finally:
            timed["method"] = time.perf_counter() - start
            timed["cpu"] = time.process_time() - cpu

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        doc = execute(folder, defaults, args, methods={method: method_run})
    wall = time.perf_counter() - start
    epochs = sum(max(doc["models"][m]["epochs"] for m in p["models"]) for p in doc["phases"] if p["models"])
    n = int(doc["info"]["test_size"])
    return {"train_s": float(doc["total_seconds"]), "ckpt_s": timed["method"], "cpu_s": timed["cpu"],
            "wall_s": wall, "epochs": epochs, "error": float(doc["ensemble"]["error"]), "n_test": n,
            "members": len(doc["members"]), "info": doc["info"]}


# ------------------------------------------------------------------------------------ theirs


@dataclasses.dataclass(frozen=True)
class Recipe:
    """torchensemble's settings for one pair, read from our run of it."""

    kind: str
    n: int
    batch: int
    lr: float
    momentum: float
    weight_decay: float
    cosine: bool
    epochs: int  # voting: epochs; snapshot: all cycles; fge: pre-training
    cycle: int = 0  # fge: epochs per cycle
    lr1: float = 0.0
    lr2: float = 0.0

    @property
    def total_epochs(self) -> int:
        """Epochs torchensemble trains: FGE stops at the n-th collection, half-way through its last cycle."""
        if self.kind == "fge":
            return self.epochs + self.cycle * (self.n - 1) + self.cycle // 2
        return self.epochs


def recipe_of(kind: str, ours: Mapping[str, Any], n: int) -> Recipe:
    """torchensemble's settings that match what our run of `kind` recorded in results.json."""
    info = ours["info"]
    c = info["config"]
    base = {"kind": kind, "n": n, "batch": int(c["batch"]), "lr": float(c["lr"]),
            "momentum": float(c["momentum"]), "weight_decay": float(c["weight_decay"]),
            "cosine": c["schedule"] == "cosine"}
    if kind == "voting":
        return Recipe(**base, epochs=int(c["max_epochs"]))
    if kind == "snapshot":
        s = info["snapshot"]
        assert int(s["cycles"]) == n
        return Recipe(**{**base, "lr": float(s["lr0"]), "cosine": False},
                      epochs=int(s["cycles"]) * int(s["cycle_epochs"]))
    f = info["fge"]
    assert int(f["cycles"]) == n
    if int(f["cycle_epochs"]) < 2:  # torchensemble collects at epoch cycle // 2 of a cycle: never for 1
        raise UsageError("torchensemble's FGE needs cycles of at least 2 epochs")
    return Recipe(**base, epochs=int(f["pretrain_epochs"]), cycle=int(f["cycle_epochs"]),
                  lr1=float(f["lr1"]), lr2=float(f["lr2"]))


def loader_of(dataset: Any, batch: int) -> Any:
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(dataset.x_train, dataset.y_train), batch_size=batch, shuffle=True)


def make_peer(recipe: Recipe, net_class: type, n: int | None = None) -> Any:
    """torchensemble's ensemble object for `recipe`, optimizer and scheduler set, on the CPU."""
    from torchensemble import FastGeometricClassifier, SnapshotEnsembleClassifier, VotingClassifier

    n = recipe.n if n is None else n
    cls = {"voting": VotingClassifier, "snapshot": SnapshotEnsembleClassifier,
           "fge": FastGeometricClassifier}[recipe.kind]
    model = cls(estimator=net_class, n_estimators=n, cuda=False)
    model.set_optimizer("SGD", lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.cosine:
        # Voting: the whole run; FGE: its pre-training only (the cycles set their own rates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FGE warns that the scheduler is for pre-training only
            model.set_scheduler("CosineAnnealingLR", T_max=recipe.epochs)
    return model


def fit_peer(model: Any, recipe: Recipe, loader: Any, save: bool, save_dir: Path) -> tuple[float, float]:
    """torchensemble's fit, its prints silenced; its wall and CPU seconds."""
    kwargs: dict[str, Any] = {"epochs": recipe.epochs, "log_interval": NEVER, "test_loader": None,
                              "save_model": save, "save_dir": str(save_dir)}
    if recipe.kind == "fge":
        kwargs.update(cycle=recipe.cycle, lr_1=recipe.lr1, lr_2=recipe.lr2)
    save_dir.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(loader, **kwargs)
        return time.perf_counter() - start, time.process_time() - cpu


def run_theirs(recipe: Recipe, net_class: type, dataset: Any, seed: int, save_dir: Path) -> dict[str, Any]:
    """One torchensemble run: fit's wall time and the ensemble's test error, scored as ours."""
    import torch

    from mncompile.runtime.pipeline import evaluate

    torch.manual_seed(seed)
    model = make_peer(recipe, net_class)
    seconds, cpu = fit_peer(model, recipe, loader_of(dataset, recipe.batch), True, save_dir)
    members = {f"{recipe.kind}@{k}": est for k, est in enumerate(model.estimators_, start=1)}
    metrics, _ = evaluate(members, dataset, torch.device("cpu"))
    saved = sorted(p.name for p in save_dir.iterdir())
    return {"fit_s": seconds, "cpu_s": cpu, "epochs": recipe.total_epochs, "error": float(metrics["error"]),
            "n_test": len(dataset.y_test), "members": len(members), "saved": saved}


def warm_up(net_class: type, dataset: Any, batch: int) -> None:
    """One untimed SGD step and one save, so that neither side pays the process's one-time imports.

    The first `torch.optim.SGD` of a process imports torch._dynamo (seconds); whichever side ran
    first would be charged for it.
    """
    import torch
    import torch.nn.functional as F

    net = net_class()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = dataset.x_train[:batch], dataset.y_train[:batch]
    F.cross_entropy(net(x), y).backward()
    opt.step()
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, io.BytesIO())


# ------------------------------------------------------------------------------------ profile


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of `fn()` (CPU: this process's, every thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def profile(net_class: type, dataset: Any, recipe: Recipe, epochs: int, seed: int, root: Path,
            counts: Sequence[int], repeats: int) -> list[list[str]]:
    """Time ours and theirs piece by piece on `k` nets for `epochs` epochs, for each k in `counts`.

    Every variant runs `repeats` times, round-robin; the differences are between the fastest runs.
    """
    import torch
    import torch.nn.functional as F

    from mncompile.runtime.data import batches
    from mncompile.runtime.jobs import Job, TrainSettings
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.train import epoch_generator, fit

    settings = TrainSettings(batch=recipe.batch, lr=recipe.lr, momentum=recipe.momentum,
                             weight_decay=recipe.weight_decay, patience=0, max_epochs=epochs,
                             schedule="cosine" if recipe.cosine else "constant")
    peer = dataclasses.replace(recipe, kind="voting", epochs=epochs)

    def nets(k: int) -> list[torch.nn.Module]:
        torch.manual_seed(seed)
        return [net_class() for _ in range(k)]

    def ours_fit(k: int, ckpt: Path | None) -> None:
        jobs = [Job(f"net{i}", m, settings) for i, m in enumerate(nets(k))]
        fit(jobs, dataset, seed=seed, device="cpu", checkpoint_dir=ckpt, progress=Progress(quiet=True))

    def bare(k: int, sums: bool) -> None:
        models = nets(k)
        opts = [torch.optim.SGD(m.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay) for m in models]
        totals = [torch.zeros(3, dtype=torch.float64) for _ in models]
        for epoch in range(epochs):
            lr = settings.lr_at(epoch)
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = lr
            for m in models:
                m.train()
            for x, y in batches(dataset, settings.batch, epoch_generator(seed, epoch)):
                for m, opt, t in zip(models, opts, totals, strict=True):
                    out = m(x)
                    loss = F.cross_entropy(out, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if sums:
                        with torch.no_grad():
                            t[0] += loss.detach().double() * len(y)
                            t[1] += (out.argmax(1) == y).sum().double()
                            t[2] += len(y)
            if sums:
                for t in totals:
                    [float(v) for v in t]

    def stream_only() -> None:
        for epoch in range(epochs):
            for _x, _y in batches(dataset, settings.batch, epoch_generator(seed, epoch)):
                pass

    def theirs_fit(k: int, save: bool, where: Path) -> tuple[float, float]:
        torch.manual_seed(seed)
        model = make_peer(peer, net_class, n=k)
        return fit_peer(model, peer, loader_of(dataset, peer.batch), save, where)

    def loader_only(k: int) -> None:
        loader = loader_of(dataset, peer.batch)
        for _ in range(k * epochs):
            for _x, _y in loader:
                pass

    rows = []
    for k in counts:
        what = f"{k} net{'s' if k != 1 else ''} x {epochs} epochs"
        loader_name = f"their DataLoader alone ({k} x {epochs} passes)"
        variants: dict[str, Callable[[], tuple[float, float]]] = {
            "ours fit, checkpoints": lambda k=k: _timed(lambda: ours_fit(k, root / f"ckpt{k}")),
            "ours fit, no checkpoints": lambda k=k: _timed(lambda: ours_fit(k, None)),
            "bare loop + running sums": lambda k=k: _timed(lambda: bare(k, True)),
            "bare loop": lambda k=k: _timed(lambda: bare(k, False)),
            "batch stream alone": lambda: _timed(stream_only),
            "theirs fit, save_model": lambda k=k: theirs_fit(k, True, root / f"te{k}"),
            "theirs fit, no save": lambda k=k: theirs_fit(k, False, root / f"te{k}-nosave"),
            loader_name: lambda k=k: _timed(lambda: loader_only(k)),
        }
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(repeats):  # round-robin, so that a burst of load hits every variant alike
            for name, measure in variants.items():
                runs[name].append(measure())
        # the differences are between the best CPU times: the least disturbed by other processes
        t = {name: min(c for _, c in v) for name, v in runs.items()}
        parts = [
            ("ours: checkpoint writing", t["ours fit, checkpoints"] - t["ours fit, no checkpoints"]),
            ("ours: fit's other work (lr, progress, history, hooks)",
             t["ours fit, no checkpoints"] - t["bare loop + running sums"]),
            ("ours: running loss/accuracy sums", t["bare loop + running sums"] - t["bare loop"]),
            ("ours: SGD steps (bare loop - batch stream)", t["bare loop"] - t["batch stream alone"]),
            ("theirs: saving", t["theirs fit, save_model"] - t["theirs fit, no save"]),
            ("theirs: all but the DataLoader (fit, no save - DataLoader)",
             t["theirs fit, no save"] - t[loader_name]),
        ]
        for name, v in runs.items():
            wall = [w for w, _ in v]
            rows.append([what, name, f"{min(wall):.3f}", f"{statistics.median(wall):.3f}", f"{t[name]:.3f}",
                         f"{t[name] / epochs * 1000:.1f}", "measured"])
        for name, seconds in parts:
            rows.append([what, name, "", "", f"{seconds:.3f}", f"{seconds / epochs * 1000:.1f}",
                         "difference"])
    return rows


def _per_call(fn: Callable[[], Any], calls: int, rounds: int = 5) -> float:
    """Seconds per call of `fn`: the best of `rounds` rounds of `calls` calls each."""
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def micro(net_class: type, dataset: Any, recipe: Recipe, k: int, n_batches: int,
          root: Path) -> list[list[str]]:
    """The per-epoch pieces timed call by call: checkpoint writing (ours, split; theirs), sums, a step.

    Each is the best of 5 rounds of repeated calls, so other processes disturb it less than a whole
    training run; the per-epoch figure multiplies by the calls an epoch makes (k nets, n batches).
    """
    import torch
    import torch.nn.functional as F
    from torchensemble import VotingClassifier
    from torchensemble.utils import io as te_io

    from mncompile.runtime.checkpoint import checkpoint_path, digest, save_checkpoint
    from mncompile.runtime.jobs import EpochRecord

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = net_class()
    opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)
    x, y = dataset.x_train[:recipe.batch], dataset.y_train[:recipe.batch]

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        out = net(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out, loss

    out, loss = step()
    # a checkpoint half-way through a run of the spec's length: its history is part of the meta data
    history = [EpochRecord(e, recipe.lr, 0.1, 0.9, None, 1.0).to_dict() for e in range(1, 31)]
    meta = {"name": "net", "epoch": 30, "identity": {"lr": recipe.lr, "seed": 0},
            "early_stopping": {"best": 0.9, "stale": 0}, "status": "training", "message": None,
            "history": history}
    path = checkpoint_path(root, "net")
    payload = {"format": "peers", "version": 2,
               "model": {n: v.detach().cpu() for n, v in net.state_dict().items()},
               "optimizer": opt.state_dict(), "meta": meta}
    peer = VotingClassifier(estimator=net_class, n_estimators=k, cuda=False)
    peer.estimators_.extend(net_class() for _ in range(k))
    peer._criterion, peer.n_outputs = torch.nn.CrossEntropyLoss(), dataset.classes

    def sums() -> None:
        t = torch.zeros(3, dtype=torch.float64)
        with torch.no_grad():
            t[0] += loss.detach().double() * len(y)
            t[1] += (out.argmax(1) == y).sum().double()
            t[2] += len(y)

    with logging_off():
        pieces = [
            ("ours: save_checkpoint, one net (weights, optimizer, meta; SHA-256; temp file, fsync, rename)",
             _per_call(lambda: save_checkpoint(path, net, opt, meta), 10), k),
            ("  of which the SHA-256 digest", _per_call(lambda: digest(payload), 10), k),
            ("  of which torch.save into memory",
             _per_call(lambda: torch.save(payload, io.BytesIO()), 10), k),
            (f"theirs: io.save, the whole {k}-net ensemble (torch.save of its state_dict)",
             _per_call(lambda: te_io.save(peer, str(root / "te"), peer.logger), 10), 1),
            ("ours: running loss/accuracy sums, one step", _per_call(sums, 200), k * n_batches),
            ("both: one SGD step of one net (forward, backward, update)", _per_call(step, 10), k * n_batches),
        ]
    save, sha, mem = (pieces[i][1] for i in range(3))
    pieces.insert(3, ("  the rest: copying the state_dict, temp file, write, fsync, rename",
                      save - sha - mem, k))
    step_epoch = pieces[-1][1] * pieces[-1][2]
    return [[f"{k} nets, per epoch" if k != 1 else "1 net, per epoch", name, f"{per * 1000:.3f}", str(calls),
             f"{per * calls * 1000:.1f}", f"{per * calls / step_epoch * 100:.1f}%"]
            for name, per, calls in pieces]


@contextlib.contextmanager
def logging_off() -> Iterator[None]:
    """torchensemble logs each save through the root logger: silenced for the measurement."""
    import logging

    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# ------------------------------------------------------------------------------------ main


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value


def _methods(text: str) -> list[str]:
    if text == "none":
        return []
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in PAIRS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {bad[0]!r} (known: {', '.join(PAIRS)}, or none)" if bad else "no method given")
    return list(dict.fromkeys(names))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one message and status 2 (main), not a usage dump
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench/peers.py", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--spec", default=str(ROOT / "examples/mnist1d.mnet"),
                   help="the .mnet file (default examples/mnist1d.mnet)")
    p.add_argument("--member", default="c32", help="the net of the spec every method trains (default c32)")
    p.add_argument("--estimators", type=_positive, default=None, metavar="N",
                   help="ensemble size: voting copies, snapshots, FGE models (default: the spec's net count)")
    p.add_argument("--methods", type=_methods, default=list(PAIRS), metavar="A,B",
                   help="any of voting,snapshot,fge (default all), or none (with --profile)")
    p.add_argument("--epochs", type=_positive, default=None, metavar="N",
                   help="max_epochs, the budget every method splits (default: the spec's)")
    p.add_argument("--repeats", type=_positive, default=3, help="alternating runs per side (default 3)")
    p.add_argument("--threads", type=_positive, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--train-size", type=_positive, default=4000, metavar="N", help="(default 4000)")
    p.add_argument("--test-size", type=_positive, default=1000, metavar="N", help="(default 1000)")
    p.add_argument("--data-seed", type=_seed, default=0, metavar="S", help="MNIST-1D's seed (default 0)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="training seed, both sides (default 0)")
    p.add_argument("--profile", action="store_true", help="also time the pieces of an epoch, ours and theirs")
    p.add_argument("--profile-epochs", type=_positive, default=3, metavar="N",
                   help="epochs of each --profile measurement (default 3; each runs --repeats times)")
    p.add_argument("--out", type=Path, default=None, help="keep every run here (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON here")
    return p


def repeat_command(a: argparse.Namespace) -> str:
    """The command line that repeats this run, every default spelled out."""
    spec = Path(a.spec).resolve()
    shown = spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec
    parts = ["python", "bench/peers.py", "--spec", str(shown), "--member", a.member, "--estimators",
             str(a.estimators), "--methods", ",".join(a.methods) or "none", "--repeats", str(a.repeats),
             "--threads", str(a.threads), "--train-size", str(a.train_size), "--test-size",
             str(a.test_size), "--data-seed", str(a.data_seed), "--seed", str(a.seed)]
    if a.epochs is not None:
        parts += ["--epochs", str(a.epochs)]
    if a.profile:
        parts += ["--profile", "--profile-epochs", str(a.profile_epochs)]
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={omp} " if omp else "") + shlex.join(parts)


def interval(error: float, n: int) -> str:
    """'1.60 [0.99, 2.58]': the error in percent with its 95 % Wilson interval."""
    lo, hi = wilson(round(error * n), n)
    return f"{error * 100:.2f} [{lo * 100:.2f}, {hi * 100:.2f}]"


def _med(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def per_epoch_ratio(ours: Mapping[str, Any], theirs: Mapping[str, Any], key: str, their_key: str = "fit_s"
                    ) -> float:
    """(ours seconds / ours epochs) / (theirs seconds / theirs epochs)."""
    return (float(ours[key]) / ours["epochs"]) / (float(theirs[their_key]) / theirs["epochs"])


def pair_note(kind: str, recipe: Recipe, n_batches: int, their_epochs: int) -> str:
    """What still differs between the two sides of one pair, in words."""
    n = recipe.n
    if kind == "voting":
        return (f"voting: ours trains the {n} nets in lockstep over one shuffled batch stream (one data "
                f"pass per epoch); torchensemble trains them one after another, each over its own "
                f"DataLoader pass ({n} passes per epoch, other shuffles); same SGD steps and per-epoch "
                f"{'cosine' if recipe.cosine else 'constant'} learning rate")
    if kind == "snapshot":
        return (f"snapshot: both run {n} cosine cycles of {recipe.epochs // n} epochs, per iteration from "
                f"lr {recipe.lr:g}, one optimizer throughout, a snapshot at each cycle's end; ours writes "
                "each snapshot to a file, theirs copies it in memory")
    c = recipe.cycle
    t_last = (c // 2 - 1 + (n_batches - 1) / n_batches) / c
    lr_last = recipe.lr1 * (1 - 2 * t_last) + recipe.lr2 * 2 * t_last
    return (f"fge: both pre-train {recipe.epochs} epochs, then cycles of {c} epochs from lr "
            f"{recipe.lr1:g} to {recipe.lr2:g} and back; ours runs {n} full cycles "
            f"({recipe.epochs + n * c} epochs) and collects at lr {recipe.lr2:g}; torchensemble stops when "
            f"it has its {n} models, half-way through the last cycle ({their_epochs} epochs), its "
            f"triangle one iteration behind ours (lr {lr_last:.4g} at collection); its own predict "
            "averages logits, here both are scored by averaged softmax")


def main(argv: Sequence[str] | None = None) -> int:
    """The bench; 2 with one message on a bad option, a bad spec or no torchensemble."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except UsageError as err:
        print(f"bench/peers.py: error: {err}", file=sys.stderr)
        return 2
    except MNError as err:
        print(str(err), file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    if not a.methods and not a.profile:
        raise UsageError("--methods none leaves nothing to do without --profile")
    spec = load(a.spec)
    a.estimators = a.estimators or len(spec.nets)
    copies = copies_spec(spec, a.member, a.estimators)
    import_torchensemble()
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        if a.out is not None:
            return compare(a, copies, Path(a.out))
        with tempfile.TemporaryDirectory(prefix="peers.") as tmp:
            return compare(a, copies, Path(tmp))
    finally:
        # a caller in the same process (the tests) gets its thread count back
        torch.set_num_threads(before)


def compare(a: argparse.Namespace, copies: Ensemble, root: Path) -> int:
    """Compile the copies spec, run every pair `a.repeats` times alternating, print the tables."""
    import torch

    from mncompile import __version__
    from mncompile.runtime.data import load_dataset
    from mncompile.runtime.folder import load_folder

    folder = root / "code" / copies.name
    write_folder(folder, compile_ensemble(copies, source_name=f"{copies.name}.mnet").files, force=True)
    (root / f"{copies.name}.mnet").write_text(format_ensemble(copies), encoding="utf-8")
    models, _plan, _tables = load_folder(folder)
    base = f"{a.member}_1"
    net_class = models.MODELS[base]
    defaults = {"ensemble": copies.name, "data": "mnist1d", "train": copies.config.model_dump()}
    cfg = copies.config
    dataset = load_dataset("mnist1d", tuple(copies.input), copies.classes, seed=a.data_seed,
                           train_size=a.train_size, test_size=a.test_size)
    warm_up(net_class, dataset, cfg.batch)
    has_val = "--val-fraction" in build_parser(defaults)._option_string_actions
    common = ["--quiet", "--device", "cpu", "--data", "mnist1d", "--seed", str(a.seed),
              "--train-size", str(a.train_size), "--test-size", str(a.test_size),
              "--data-seed", str(a.data_seed), "--patience", "0"]
    if has_val:
        common += ["--val-fraction", "0", "--stop", "train-acc"]
    if a.epochs is not None:
        common += ["--max-epochs", str(a.epochs)]
    n_batches = math.ceil(len(dataset.y_train) / cfg.batch)
    print(f"peers: mncompile {__version__} vs torchensemble {package_version('torchensemble')}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s) (OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), {os.cpu_count()} CPUs, CPU training; MNIST-1D "
          f"data-seed {a.data_seed}, {len(dataset.y_train)} train / {len(dataset.y_test)} test, batch "
          f"{cfg.batch} ({n_batches} batches/epoch); net {a.member} of {Path(a.spec).name} x {a.estimators}; "
          f"SGD lr {cfg.lr} momentum {cfg.momentum} weight decay {cfg.weight_decay}, {cfg.schedule}; "
          f"max_epochs {a.epochs or cfg.max_epochs}, fixed epochs on both sides (ours --patience 0"
          f"{', --val-fraction 0 --stop train-acc' if has_val else ''}; torchensemble has no early "
          f"stopping); seed {a.seed}; {a.repeats} alternating repeat(s) per side, ours first, after an "
          "untimed warm-up step (a process's first SGD optimizer imports torch._dynamo)", flush=True)
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "methods": {}}
    timing, errors, notes = [], [], []
    for kind in a.methods:
        method = PAIRS[kind][0]
        argv = ["--method", method, *common] + (["--base", base] if kind != "voting" else [])
        ours_runs: list[dict[str, Any]] = []
        their_runs: list[dict[str, Any]] = []
        recipe: Recipe | None = None
        for r in range(1, a.repeats + 1):
            where = root / "runs" / kind
            ours = run_ours(folder, defaults, method, [*argv, "--out", str(where / f"ours{r}")])
            recipe = recipe_of(kind, ours, a.estimators)
            theirs = run_theirs(recipe, net_class, dataset, a.seed, where / f"theirs{r}")
            ours_runs.append(ours)
            their_runs.append(theirs)
            print(f"{kind} repeat {r}: ours {ours['ckpt_s']:.1f}s for {ours['epochs']} epochs (error "
                  f"{ours['error'] * 100:.2f}%), theirs {theirs['fit_s']:.1f}s for {theirs['epochs']} "
                  f"epochs (error {theirs['error'] * 100:.2f}%)", flush=True)
        assert recipe is not None
        pairs = list(zip(ours_runs, their_runs, strict=True))
        ratio = [per_epoch_ratio(o, t, "ckpt_s") for o, t in pairs]
        ratio_train = [per_epoch_ratio(o, t, "train_s") for o, t in pairs]
        ratio_cpu = [per_epoch_ratio(o, t, "cpu_s", "cpu_s") for o, t in pairs]
        o, t = pairs[0]
        timing.append([kind, f"{method} / {PAIRS[kind][1]}", f"{o['epochs']} / {t['epochs']}",
                       f"{_med(ours_runs, 'train_s'):.1f}", f"{_med(ours_runs, 'ckpt_s'):.1f}",
                       f"{_med(ours_runs, 'wall_s'):.1f}", f"{_med(their_runs, 'fit_s'):.1f}",
                       f"{statistics.median(ratio):.2f}x", f"{statistics.median(ratio_train):.2f}x",
                       f"{statistics.median(ratio_cpu):.2f}x"])
        errors.append([kind, f"{o['members']} / {t['members']}", interval(o["error"], o["n_test"]),
                       interval(t["error"], t["n_test"])])
        notes.append(pair_note(kind, recipe, n_batches, t["epochs"]))
        for side, runs in (("ours", ours_runs), ("theirs", their_runs)):
            if len({x["error"] for x in runs}) > 1:
                notes.append(f"{kind}: {side} errors differ between repeats ({[x['error'] for x in runs]}); "
                             "the first repeat's is shown")
        summary["methods"][kind] = {
            "ours": [{k: v for k, v in x.items() if k != "info"} for x in ours_runs], "theirs": their_runs,
            "ratio_per_epoch": ratio, "ratio_per_epoch_train_only": ratio_train,
            "ratio_per_epoch_cpu": ratio_cpu,
            "recipe": dataclasses.asdict(recipe)}
    if timing:
        print()
        print(render(["method", "ours / torchensemble", "epochs", "ours train s", "ours +ckpt s",
                      "ours execute s", "theirs fit s", "ratio/epoch", "train only", "CPU"], timing))
        print()
        print(render(["method", "members", "ours error % [95% Wilson]", "theirs error % [95% Wilson]"],
                     errors))
        print()
        for line in (
            "times: wall clock, medians of the repeats. ratio/epoch = (ours s / ours epochs) / (theirs fit s "
            "/ theirs epochs), median over the repeats, ours as '+ckpt' (the method's wall time: training, "
            "checkpoints, snapshots); 'train only' takes results.json's total_seconds instead (the epoch "
            "loops without the per-epoch checkpoint writes); 'CPU' compares this process's CPU time of the "
            "method and of fit (less disturbed by other processes on a shared machine); 'execute' adds "
            "loading data, evaluating and writing results",
            "saved: ours, every net's checkpoint (weights, optimizer, history) after every epoch, plus a "
            "file per snapshot; torchensemble (save_model=True), the ensemble's state_dict after every epoch "
            "for Voting, once at the end for Snapshot and FGE",
            "differs by design: initial weights and batch order (ours seeded by (seed, net name) and (seed, "
            "epoch), theirs by torch.manual_seed(seed) and the DataLoader); every ensemble is scored by "
            "mncompile's evaluate (mean softmax, eval mode) on the same test set",
            *notes,
        ):
            print(line)
    if a.profile:
        rec = Recipe("voting", a.estimators, cfg.batch, cfg.lr, cfg.momentum, cfg.weight_decay,
                     cfg.schedule == "cosine", a.profile_epochs)
        print()
        print(f"profile: {a.member} nets from scratch at the spec's lr {cfg.lr} ({cfg.schedule}), "
              f"{a.profile_epochs} epochs per line; ours through mncompile.runtime.train.fit, theirs "
              f"through VotingClassifier.fit; {a.repeats} round-robin runs each, wall clock (best, median) "
              "and this process's CPU time (best); 'difference' rows subtract two best CPU times", flush=True)
        rows = profile(net_class, dataset, rec, a.profile_epochs, a.seed, root / "profile",
                       sorted({a.estimators, 1}, reverse=True), a.repeats)
        print(render(["workload", "what", "best wall s", "median wall s", "best CPU s", "CPU ms/epoch",
                      "kind"], rows))
        print()
        print("per call (best of 5 rounds of repeated calls, wall clock), times the calls an epoch makes; "
              "share: of the epoch's SGD steps", flush=True)
        pieces = [r for k in sorted({a.estimators, 1}, reverse=True)
                  for r in micro(net_class, dataset, rec, k, n_batches, root / "micro" / str(k))]
        print(render(["workload", "what", "ms per call", "calls/epoch", "ms/epoch", "share"], pieces))
        summary["profile"] = {"runs": rows, "per_call": pieces}
    print(f"\nrepeat: {repeat_command(a)}")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
