"""g for a time budget: the training time of MotherNets at each g, estimated from a probe of every
net's step time on this device and from the epoch counts of earlier runs of the same spec.

The local engine trains a phase's nets in lockstep, one shared pass per epoch, so a phase costs
about the sum over its nets of (epochs x batches per epoch x seconds per step). At g the first
phase trains g MotherNets (a member that is a cluster of its own trains there as itself, from
scratch), the second the hatched members, so

    estimate(g) = batches x (sum over MotherNets of E_mother x t_mother
                             + sum over singletons i of E_scratch(i) x t_i
                             + sum over hatched members i of E_hatched(i) x t_i)

with t the probed seconds per training step (forward, backward, SGD step) at the spec's batch
size. The epoch counts come from earlier runs (results.json) of the same ensemble: E_mother the
mean of their MotherNets', E_hatched(i) member i's as a hatched member, E_scratch(i) member i's
trained from scratch (full data, or a singleton); where no run says, the spec's caps
(max_epochs, hatched_max_epochs). Validation passes and checkpoint writes are not in it
(results.json's training time leaves them out too).
"""

from __future__ import annotations

import json
import math
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.table import duration

#: training examples of the built-in datasets' default splits, before the validation split
DEFAULT_TRAIN = {"mnist1d": 4000, "digits": 1437, "cifar10": 50000, "cifar100": 50000, "svhn": 73257,
                 "synthetic": 512}
PROBE_WARMUP = 2


def parse_budget(text: str, rate: float) -> float:
    """Seconds from '45m', '2h', '90s', '300' (seconds), or '$2' / '2usd' at `rate` USD per hour."""
    t = text.strip().lower()
    m = re.fullmatch(r"\$?\s*([0-9]*\.?[0-9]+)\s*(usd|\$)?", t) if ("$" in t or "usd" in t) else None
    if m:
        if rate <= 0:
            raise MNError(f"--budget {text}: a budget in USD needs --rate above 0")
        seconds = float(m.group(1)) / rate * 3600
    else:
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|hr)?", t)
        if not m:
            raise MNError(f"--budget {text}: expected a time (90s, 45m, 2h, or seconds) or an amount ($2)")
        unit = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}.get(m.group(2) or "s", 1)
        seconds = float(m.group(1)) * unit
    if not math.isfinite(seconds) or seconds <= 0:
        raise MNError(f"--budget {text}: must be above 0")
    return seconds


@dataclass
class Earlier:
    """What earlier runs of the ensemble say: epoch counts, training sizes, errors by g."""

    runs: list[dict[str, Any]] = field(default_factory=list)

    def mother_epochs(self) -> float | None:
        xs = [m["epochs"] for d in self.runs for name, m in d["models"].items()
              if m.get("phase") == "mothernets" and name not in d.get("members", [])]
        return statistics.mean(xs) if xs else None

    def hatched_epochs(self, member: str) -> float | None:
        xs = [d["models"][member]["epochs"] for d in self.runs if d["method"] == "mothernets"
              and member in d["models"] and d["models"][member].get("phase") == "members"]
        return statistics.mean(xs) if xs else None

    def scratch_epochs(self, member: str) -> float | None:
        xs = [d["models"][member]["epochs"] for d in self.runs if member in d["models"]
              and (d["method"] == "full-data" or d["models"][member].get("phase") == "mothernets")]
        return statistics.mean(xs) if xs else None

    def train_size(self) -> int | None:
        sizes = [d["info"].get("train_size") for d in self.runs if d["info"].get("train_size")]
        return int(statistics.median(sizes)) if sizes else None

    def errors(self, g: int) -> list[float]:
        return [d["ensemble"]["error"] for d in self.runs
                if d["method"] == "mothernets" and d["info"].get("g") == g]


def find_runs(e: Ensemble, places: Sequence[str | Path]) -> Earlier:
    """Every results.json under `places` (run folders or bench folders) of ensemble `e`'s members."""
    found = Earlier()
    members = {n.name for n in e.nets}
    for place in places:
        root = Path(place)
        paths = [root] if root.is_file() else sorted(root.glob("**/results.json")) if root.is_dir() else []
        for path in paths:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            info = doc.get("info") or {}
            if not isinstance(doc.get("models"), dict) or info.get("ensemble") != e.name:
                continue
            if not members >= set(doc.get("members") or []) or "method" not in doc:
                continue
            found.runs.append(doc)
    return found


def probe(e: Ensemble, g: int, batch: int, steps: int, device: str = "auto") -> dict[str, float]:
    """Seconds per training step of every net a run at g trains: its MotherNets and members."""
    import torch

    from mncompile.compiler import compile_ensemble
    from mncompile.runtime.folder import load_folder
    from mncompile.runtime.train import resolve_device
    from mncompile.writer import write_folder

    dev = resolve_device(device)
    out = compile_ensemble(e, clusters=g)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mncompile-probe-") as tmp:
        write_folder(Path(tmp) / "gen", out.files)
        models, _, _ = load_folder(Path(tmp) / "gen")
        x = torch.randn((batch, *e.input), device=dev)
        y = torch.randint(0, e.classes, (batch,), device=dev)
        for name, cls in models.MODELS.items():
            net = cls().to(dev).train()
            opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
            seconds = []
            for i in range(PROBE_WARMUP + steps):
                start = time.perf_counter()
                loss = torch.nn.functional.cross_entropy(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i >= PROBE_WARMUP:
                    seconds.append(time.perf_counter() - start)
            times[name] = statistics.median(seconds)
    return times


@dataclass
class Estimate:
    g: int
    seconds: float
    mothers: int
    sources: set[str]


def estimate(e: Ensemble, g: int, times: dict[str, float], earlier: Earlier, batches: int,
             epochs_scale: float = 1.0) -> Estimate:
    """The training seconds of MotherNets at g (module doc)."""
    from mncompile.passes.cluster import Planner

    plan = Planner(e).plan(g)
    cfg = e.config
    cap_m = max(1, math.ceil(cfg.max_epochs * epochs_scale - 1e-9))
    cap_h = max(0, math.ceil(cfg.hatched_max_epochs * epochs_scale - 1e-9))
    sources: set[str] = set()

    def pick(value: float | None, cap: float) -> float:
        sources.add("earlier runs" if value is not None else "the spec's caps")
        return value if value is not None else cap

    total = 0.0
    mothers = 0
    for c in plan.clusters:
        if len(c.members) == 1:  # a cluster of its own: the member trains from scratch
            m = c.members[0]
            total += pick(earlier.scratch_epochs(m) or earlier.mother_epochs(), cap_m) * times[m]
            continue
        mothers += 1
        total += pick(earlier.mother_epochs(), cap_m) * times[c.mother.name]
        for m in c.members:
            total += pick(earlier.hatched_epochs(m), cap_h) * times[m]
    return Estimate(g, total * batches, mothers, sources)


def add_budget_arguments(p: Any, with_runs: bool = True) -> None:
    """--budget, --rate, --probe, --runs (a parser or group)."""
    from mncompile.formats.settings import RATES_USD_PER_HOUR

    default_rate = max(RATES_USD_PER_HOUR.values())
    p.add_argument("--budget", metavar="TIME|$USD",
                   help="the training time to fit in: 90s, 45m, 2h, seconds, or an amount ($2) at --rate; "
                   "estimates each g from a probe of every net's step time and earlier runs' epochs")
    p.add_argument("--rate", type=float, default=default_rate, metavar="USD/H",
                   help=f"USD per hour for a --budget in USD (default {default_rate}, the paper's V100 rate)")
    p.add_argument("--probe", type=int, default=5, metavar="N",
                   help="timed training steps per net for --budget (after 2 untimed; default 5)")
    if with_runs:
        p.add_argument("--runs", action="append", default=None, metavar="DIR",
                       help="earlier runs (run or bench folders) whose epoch counts --budget uses "
                       "(default: runs/ENSEMBLE and bench-out/ENSEMBLE)")
    p.add_argument("--budget-train-size", type=int, default=None, metavar="N", dest="budget_train_size",
                   help="training examples per epoch for --budget (default: the earlier runs', else the "
                   "dataset's default split less a tenth for validation)")


def choose_g(e: Ensemble, budget_text: str, *, rate: float, steps: int, runs: Sequence[str] | None,
             train_size: int | None, device: str = "auto", epochs_scale: float = 1.0,
             data: str | None = None, threads: str | int = "auto",
             log: Any = print) -> tuple[int, dict[str, Any]]:
    """The largest g expected to train within the budget, and the record of the estimate (the
    table printed through `log`); MNError when even g = 1 does not fit, naming what it needs. The
    probe runs at the thread count the run will train at (`--threads`, runtime/threads.py)."""
    from mncompile.cost import net_cost
    from mncompile.passes.cluster import Planner
    from mncompile.runtime.threads import choose_threads, cpu_threads
    from mncompile.runtime.train import resolve_device

    budget = parse_budget(budget_text, rate)
    device = resolve_device(device).type
    if steps < 1:
        raise MNError(f"--probe {steps}: at least 1 step per net")
    places = list(runs) if runs else [Path("runs") / e.name, Path("bench-out") / e.name]
    earlier = find_runs(e, places)
    n = train_size or earlier.train_size()
    if n is None:
        name = data or e.data or "mnist1d"
        if name not in DEFAULT_TRAIN:
            raise MNError(f"--budget: no earlier run says how many training examples {name} has",
                          hint="give --budget-train-size N")
        n = DEFAULT_TRAIN[name] - int(DEFAULT_TRAIN[name] * 0.1 + 0.5)
    batch = int(e.config.batch)
    batches = max(1, -(-n // batch))
    count, _ = choose_threads(threads, device, lambda: max(net_cost(net, e).macs for net in e.nets), batch)
    planner = Planner(e)
    gs = list(planner.g_range)
    where = f" in {', '.join(map(str, places))}" if earlier.runs else " (none: the spec's caps)"
    log(f"budget {budget_text} = {duration(budget)}; {n} training examples, batch {batch} "
        f"({batches} batches per epoch); probe: {steps} steps per net on {device}, torch at "
        f"{count} thread(s); epochs from {len(earlier.runs)} earlier run(s){where}")
    rows = []
    estimates: dict[int, Estimate] = {}
    for g in gs:
        with cpu_threads(count):
            times = probe(e, g, batch, steps, device)
        est = estimate(e, g, times, earlier, batches, epochs_scale)
        estimates[g] = est
        errs = earlier.errors(g)
        rows.append([g, est.mothers, duration(est.seconds), " and ".join(sorted(est.sources)),
                     f"{statistics.mean(errs) * 100:.2f} % ({len(errs)})" if errs else "-",
                     "yes" if est.seconds <= budget else "no"])
    from mncompile.table import render

    log(render(["g", "MotherNets", "est. time", "epochs from", "measured error (runs)", "fits"], rows))
    fitting = [g for g in gs if estimates[g].seconds <= budget]
    if not fitting:
        raise MNError(f"--budget {budget_text}: even g = {gs[0]} needs about "
                      f"{duration(estimates[gs[0]].seconds)}",
                      hint=f"give a budget of at least {duration(estimates[gs[0]].seconds)}")
    g = max(fitting)
    log(f"the largest g expected to fit: g = {g} ({duration(estimates[g].seconds)})")
    record = {"budget_seconds": budget, "g": g, "estimate_seconds": estimates[g].seconds,
              "epochs_from": sorted(estimates[g].sources), "earlier_runs": len(earlier.runs),
              "train_examples": n, "probe_steps": steps, "threads": count,
              "estimates": {str(k): v.seconds for k, v in estimates.items()}}
    return g, record
