"""Simulated training time on 1..8 GPUs: MotherNets, snapshot ensembles, full data (Figures C, D).

A *simulation from a cost model*, not a measurement: the paper's Appendix D experiment (V5 and
D5 on 1 to 8 GPUs) replayed through the placement policy the Ray engine uses
(`mncompile.runtime.placement.place`) and its event-driven simulator, for three methods:

- MotherNets (g = one MotherNet per architecture class, 1 for V5 and D5): every MotherNet first,
  data-parallel over the GPUs `place` gives it; then every hatched member, placed by `place`.
- Snapshot ensembles: one network (the member whose parameter count is nearest the mean, as
  `--method snapshot` picks it), m cycles one after the other, each data-parallel on every GPU.
- Full data: every member from scratch, placed by `place`.

The cost model. One epoch of a net on one GPU takes 6 x forward MACs x `--images` /
(`--tflops` x 1e12) seconds (forward 2 FLOPs per MAC, backward about twice the forward), or the
seconds measured with `--epoch-seconds NET=S` (nets not given are scaled from the measured ones
by MACs). Every net runs to its epoch cap (the spec's max_epochs for MotherNets and full data,
hatched_max_epochs for hatched members; snapshot: max_epochs split into m cycles, as
docs/baselines.md): early stopping, hatching, data loading and evaluation are left out. On d GPUs
a net takes t / (d x eff(d)) with eff(d) = 1 / (1 + alpha (d - 1)): each extra GPU adds a
fraction alpha of communication (the overhead that, the paper says after Keuper & Pfreundt 2016,
makes snapshot ensembles scale poorly). Networks are queued largest first, so the extra GPUs of
an uneven split go to the largest ones. Absolute hours scale with 1 / --tflops and --images;
speedups and ratios between methods depend only on MACs, epochs and alpha.

    python bench/schedule_sim.py                                   # V5 and D5, 1..8 GPUs, alpha 0.1
    python bench/schedule_sim.py --alpha 0 --alpha 0.25 --gpus 1 2 4 8 --plot /tmp/sched.png
    python bench/schedule_sim.py --spec examples/v5.mnet --epoch-seconds vgg16=41.5
    python bench/schedule_sim.py --snapshot-cycle-epochs 60 --hatched-epochs 10   # paper-like budgets
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mncompile.api import load  # noqa: E402
from mncompile.cost import net_cost  # noqa: E402
from mncompile.diagnostics import MNError  # noqa: E402
from mncompile.ir import Ensemble  # noqa: E402
from mncompile.passes.cluster import plan_ensemble  # noqa: E402
from mncompile.runtime.placement import DEFAULT_ALPHA, Job, Schedule, simulate  # noqa: E402
from mncompile.table import render  # noqa: E402

METHODS = ("mothernets", "snapshot", "full-data")
LABELS = {"mothernets": "MN", "snapshot": "SE", "full-data": "FD"}
DEFAULT_SPECS = ("examples/v5.mnet", "examples/d5.mnet")
#: effective training throughput of one GPU, TFLOP/s: a K80 die (the paper's cluster) at 35-55 %
#: of its 2.8-4.4 TFLOP/s fp32 peak; only the absolute hours depend on it
DEFAULT_TFLOPS = 1.5
#: CIFAR-10's training set
DEFAULT_IMAGES = 50_000
#: training FLOPs per forward MAC: 2 for the forward pass, about 4 for the backward pass
FLOPS_PER_MAC = 6


@dataclass
class Workload:
    """One spec's jobs per method (times on one GPU, seconds), and what they are made of."""

    ensemble: str
    path: str
    g: int
    jobs: dict[str, list[Job]]
    #: one line per method: which nets, how many epochs
    notes: dict[str, str] = field(default_factory=dict)
    #: seconds of one epoch on one GPU, per net (members and MotherNets)
    epoch_seconds: dict[str, float] = field(default_factory=dict)
    measured: tuple[str, ...] = ()


def parse_gpus(tokens: Sequence[str]) -> list[int]:
    """GPU counts from '1..8' ranges and plain numbers, sorted, without repeats.

    >>> parse_gpus(["1..4", "8", "2"])
    [1, 2, 3, 4, 8]
    """
    out: set[int] = set()
    for tok in tokens:
        try:
            if ".." in tok:
                lo, hi = (int(x) for x in tok.split("..", 1))
                if lo > hi:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(tok))
        except ValueError:
            raise MNError(f"--gpus takes counts and ranges such as 1..8, got {tok!r}") from None
    if not out or min(out) < 1:
        raise MNError(f"--gpus needs counts of at least 1, got {' '.join(tokens)!r}")
    return sorted(out)


def parse_measured(items: Sequence[str]) -> dict[str, float]:
    """`NET=SECONDS` (or `ENSEMBLE.NET=SECONDS`) pairs from --epoch-seconds.

    >>> parse_measured(["vgg16=41.5", "d5.densenet40_k12=12"])
    {'vgg16': 41.5, 'd5.densenet40_k12': 12.0}
    """
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name or not seconds > 0 or seconds == float("inf"):
            raise MNError(f"--epoch-seconds takes NET=SECONDS with SECONDS > 0, got {item!r}",
                          hint="e.g. --epoch-seconds vgg16=41.5 (seconds of one epoch on one GPU)")
        out[name] = seconds
    return out


def mean_sized(e: Ensemble) -> str:
    """The snapshot base: params nearest the members' mean, first in spec order (as baselines.py)."""
    params = {n.name: net_cost(n, e).params for n in e.nets}
    mean = sum(params.values()) / len(params)
    order = [n.name for n in e.nets]
    return min(order, key=lambda m: (abs(params[m] - mean), order.index(m)))


def workload(path: str, *, tflops: float = DEFAULT_TFLOPS, images: int = DEFAULT_IMAGES,
             measured: dict[str, float] | None = None, max_epochs: int | None = None,
             hatched_epochs: int | None = None, cycle_epochs: int | None = None) -> Workload:
    """The three methods' jobs for the spec at `path` (see the module notes for the model)."""
    e = load(path)
    plan = plan_ensemble(e)
    cfg = e.config
    epochs = max_epochs or cfg.max_epochs
    hatched = hatched_epochs or cfg.hatched_max_epochs
    nets = {n.name: n for n in e.nets} | {c.mother.name: c.mother for c in plan.clusters}
    macs = {name: net_cost(n, e).macs for name, n in nets.items()}
    given: dict[str, float] = {}
    for key, seconds in (measured or {}).items():
        ens, _, net = key.rpartition(".")
        if net in nets and ens in ("", e.name):
            given[net] = seconds
    if given:  # the measured nets fix the throughput, in MACs per second
        per_second = sum(macs[n] for n in given) / sum(given.values())
    else:
        per_second = tflops * 1e12 / (FLOPS_PER_MAC * images)
    per_epoch = {n: given.get(n, macs[n] / per_second) for n in nets}

    def largest_first(names: list[str]) -> list[str]:
        order = list(names)
        return sorted(order, key=lambda n: (-per_epoch[n], order.index(n)))

    members = [n.name for n in e.nets]
    mn: list[Job] = []
    mothers = [c for c in plan.clusters if len(c.members) > 1]
    singles = [c.members[0] for c in plan.clusters if len(c.members) == 1]
    by_mother = {c.mother.name: c for c in mothers}
    # a cluster of one needs no hatching: its MotherNet is the member, trained once in full
    for name in largest_first([c.mother.name for c in mothers] + singles):
        mn.append(Job(f"MN:{name}" if name in by_mother else name, per_epoch[name] * epochs))
    hatched_members = [(m, c.mother.name) for c in mothers for m in c.members]
    mother_of = dict(hatched_members)
    for m in largest_first([m for m, _ in hatched_members]):
        mn.append(Job(m, per_epoch[m] * hatched, after=(f"MN:{mother_of[m]}",)))

    base = mean_sized(e)
    k = len(members)
    cycle = cycle_epochs or max(1, epochs // k)
    se = [Job(f"{base}@{i + 1}", per_epoch[base] * cycle, after=(f"{base}@{i}",) if i else ())
          for i in range(k)]
    fd = [Job(m, per_epoch[m] * epochs) for m in largest_first(members)]

    notes = {
        "mothernets": (f"{len(mothers)} MotherNet(s) x {epochs} epochs"
                       + (f" + {len(singles)} unhatched net(s) x {epochs}" if singles else "")
                       + f", then {len(hatched_members)} hatched members x {hatched} epochs"),
        "snapshot": f"{base}, {k} cycles x {cycle} epochs, one after the other",
        "full-data": f"{k} members x {epochs} epochs, independent",
    }
    return Workload(e.name, path, plan.g, {"mothernets": mn, "snapshot": se, "full-data": fd},
                    notes, per_epoch, tuple(sorted(given)))


def run_all(work: Workload, gpus: Sequence[int], alpha: float) -> dict[str, dict[int, Schedule]]:
    """Every method simulated on every GPU count (and on 1 GPU, the speedups' reference)."""
    counts = sorted(set(gpus) | {1})
    return {m: {d: simulate(work.jobs[m], devices=d, alpha=alpha) for d in counts} for m in METHODS}


def table_rows(results: dict[str, dict[int, Schedule]], gpus: Sequence[int]) -> list[list[str]]:
    """GPUs, then hours and speedup per method, then SE / MN and FD / MN (above 1: MN faster)."""
    rows = []
    for d in gpus:
        row = [str(d)]
        for m in METHODS:
            s = results[m][d].makespan
            row += [f"{s / 3600:.2f}", f"{results[m][1].makespan / s:.2f}x"]
        mn = results["mothernets"][d].makespan
        row += [f"{results['snapshot'][d].makespan / mn:.2f}", f"{results['full-data'][d].makespan / mn:.2f}"]
        rows.append(row)
    return rows


HEADERS = ["GPUs", "MN h", "MN speedup", "SE h", "SE speedup", "FD h", "FD speedup", "SE/MN", "FD/MN"]


def plot(path: Path, everything: list[tuple[Workload, float, dict[str, dict[int, Schedule]]]],
         gpus: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(dict.fromkeys(w.ensemble for w, _, _ in everything))
    fig, axes = plt.subplots(1, len(specs), figsize=(5.2 * len(specs), 4), squeeze=False)
    styles = ["-", "--", ":", "-."]
    alphas = list(dict.fromkeys(a for _, a, _ in everything))
    colours = {"mothernets": "tab:red", "snapshot": "tab:blue", "full-data": "tab:gray"}
    for w, alpha, res in everything:
        ax = axes[0][specs.index(w.ensemble)]
        for m in METHODS:
            ax.plot(gpus, [res[m][d].makespan / 3600 for d in gpus], marker="o", markersize=3,
                    color=colours[m], linestyle=styles[alphas.index(alpha) % len(styles)],
                    label=f"{LABELS[m]}{f' g={w.g}' if m == 'mothernets' else ''}, alpha {alpha:g}")
        ax.set_title(f"{w.ensemble}: simulated (cost model)")
        ax.set_xlabel("GPUs")
        ax.set_ylabel("training time, hours")
        ax.set_xticks(list(gpus))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", action="append", default=None, metavar="PATH",
                   help=f"a .mnet file; repeatable (default: {' '.join(DEFAULT_SPECS)})")
    p.add_argument("--gpus", nargs="+", default=["1..8"], metavar="N",
                   help="GPU counts: numbers and ranges such as 1..8 (default 1..8)")
    p.add_argument("--alpha", action="append", type=float, default=None,
                   help=f"communication overhead per extra GPU; repeatable (default {DEFAULT_ALPHA})")
    p.add_argument("--tflops", type=float, default=DEFAULT_TFLOPS,
                   help=f"effective training TFLOP/s of one GPU (default {DEFAULT_TFLOPS}: a K80 die)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="training images per epoch")
    p.add_argument("--epoch-seconds", action="append", default=[], metavar="NET=S",
                   help="measured seconds of one epoch of NET (or ENSEMBLE.NET) on one GPU; "
                   "repeatable; other nets are scaled from these by MACs")
    p.add_argument("--max-epochs", type=int, default=None, help="override the spec's max_epochs")
    p.add_argument("--hatched-epochs", type=int, default=None,
                   help="override the spec's hatched_max_epochs")
    p.add_argument("--snapshot-cycle-epochs", type=int, default=None,
                   help="epochs per snapshot cycle (default: max_epochs // members; the paper: 60)")
    p.add_argument("--plot", type=Path, default=None, metavar="PNG", help="also draw the curves")
    p.add_argument("--json", type=Path, default=None, help="also write every makespan as JSON")
    args = p.parse_args(argv)
    try:
        return _run(args)
    except MNError as err:
        if err.source is None:
            err.source = "schedule_sim.py"
        print(err, file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    gpus = parse_gpus(args.gpus)
    alphas = args.alpha or [DEFAULT_ALPHA]
    for a in alphas:
        if not 0 <= a < float("inf"):
            raise MNError(f"--alpha must be a number >= 0, got {a}")
    for opt in ("tflops", "images", "max_epochs", "hatched_epochs", "snapshot_cycle_epochs"):
        v = getattr(args, opt)
        if v is not None and not v > 0:
            raise MNError(f"--{opt.replace('_', '-')} must be > 0, got {v}")
    measured = parse_measured(args.epoch_seconds)
    specs = args.spec or [str(ROOT / s) for s in DEFAULT_SPECS]
    works = [workload(s, tflops=args.tflops, images=args.images, measured=measured,
                      max_epochs=args.max_epochs, hatched_epochs=args.hatched_epochs,
                      cycle_epochs=args.snapshot_cycle_epochs) for s in specs]
    known = {n for w in works for n in w.epoch_seconds} | {f"{w.ensemble}.{n}" for w in works
                                                           for n in w.epoch_seconds}
    unknown = sorted(set(measured) - known)
    if unknown:
        raise MNError(f"--epoch-seconds names no net of these specs: {', '.join(unknown)}",
                      hint="use a member's name or a MotherNet's (mncompile plan SPEC shows them)")

    print("SIMULATED training time from a cost model (not a measurement); see bench/schedule_sim.py")
    print(f"  one epoch on one GPU: 6 x forward MACs x {args.images} images / {args.tflops:g} TFLOP/s, "
          "or measured (--epoch-seconds) with the other nets scaled by MACs")
    print("  d GPUs: t / (d eff(d)), eff(d) = 1 / (1 + alpha (d - 1)); placement: Appendix D "
          "(mncompile.runtime.placement.place), largest network first, no preemption")
    print("  every net runs to its epoch cap; hatching, data loading, evaluation left out")
    everything = []
    summary: dict[str, Any] = {"simulation": True, "gpus": gpus, "specs": {}}
    for w in works:
        print(f"\n{w.ensemble} ({_shown(w.path)}):")
        if w.measured:
            print(f"  epoch times measured for {', '.join(w.measured)}; the other nets scaled by MACs")
        for m in METHODS:
            label = f"{LABELS[m]}{f' g={w.g}' if m == 'mothernets' else ''}"
            one = sum(j.seconds for j in w.jobs[m]) / 3600
            print(f"  {label:7s} {w.notes[m]}; {one:.2f} h on 1 GPU")
        summary["specs"][w.ensemble] = {"notes": w.notes, "epoch_seconds": w.epoch_seconds, "alpha": {}}
        for alpha in alphas:
            res = run_all(w, gpus, alpha)
            everything.append((w, alpha, res))
            print(f"\n  alpha {alpha:g} (8-GPU efficiency {1 / (1 + alpha * 7):.0%}); "
                  "SE/MN, FD/MN above 1: MotherNets faster")
            print("  " + render(HEADERS, table_rows(res, gpus)).replace("\n", "\n  "))
            summary["specs"][w.ensemble]["alpha"][str(alpha)] = {
                m: {str(d): res[m][d].makespan for d in res[m]} for m in METHODS}
    if args.plot:
        plot(args.plot, everything, gpus)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(f"\nrepeat: python bench/schedule_sim.py {shlex.join(_explicit(args, specs, alphas))}")
    return 0


def _shown(path: str) -> str:
    """A spec's path relative to the repository when it lies inside it."""
    full = Path(path).resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else path


def _explicit(args: argparse.Namespace, specs: list[str], alphas: list[float]) -> list[str]:
    """Every option spelled out, so the command repeats this run even if a default changes."""
    out: list[str] = []
    for s in specs:
        out += ["--spec", _shown(s)]
    out += ["--gpus", *args.gpus]
    for a in alphas:
        out += ["--alpha", f"{a:g}"]
    out += ["--tflops", f"{args.tflops:g}", "--images", str(args.images)]
    for item in args.epoch_seconds:
        out += ["--epoch-seconds", item]
    for opt in ("max_epochs", "hatched_epochs", "snapshot_cycle_epochs"):
        if getattr(args, opt) is not None:
            out += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    if args.plot:
        out += ["--plot", str(args.plot)]
    if args.json:
        out += ["--json", str(args.json)]
    return out


if __name__ == "__main__":
    sys.exit(main())
