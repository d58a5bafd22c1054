"""The accuracy / training-time frontier of `mncompile bench`: aggregation, tables and plots.

Input: one `results.json` per (method, g, seed) run (and, for diversity, each run's Y: every
member's test-set probability of the correct class, [K, N]). Output, in the bench folder:

- `frontier.csv` / `frontier.md`: per (method, g): seeds, ensemble error mean and std, oracle
  accuracy, mean member error, training time and its cloud cost at the paper's two rates, and
  whether the point is on the Pareto front (no other point is both faster and more accurate);
- `frontier.png`: ensemble test error against training time, the Pareto front drawn (Figure 4);
- `breakdown.png`: training time per phase, and per member where members were trained one at a
  time (Figure 5); models trained in lockstep share their epochs' wall time, so a lockstep phase
  is one segment, never split by a guess;
- `diversity.csv` and a table in `frontier.md` when there are two seeds or more: member variance,
  pairwise covariance and ensemble variance of Y over the trainings (Figure 8, Section 3.4).

Plots use matplotlib's Agg backend. Only the diversity table imports torch.

>>> pareto_front([(1.0, 0.3), (2.0, 0.2), (3.0, 0.25), (0.5, 0.5)])
[3, 0, 1]
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mncompile.formats.settings import RATES_USD_PER_HOUR

RATES = tuple(RATES_USD_PER_HOUR.items())
CSV_COLUMNS = ("method", "g", "seeds", "error_mean", "error_std", "oracle_accuracy", "member_error",
               "seconds_mean", "seconds_std", "usd_m1", "usd_m2", "pareto")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (time, error) that no other point dominates, by increasing time.

    A point dominates another when it is no slower and no less accurate, and better in one of
    the two. Of exact duplicates the first is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    best = math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


@dataclass
class Run:
    """One finished bench run: its label, seed and results.json document (and Y, if kept)."""

    method: str
    g: int | None
    seed: int
    doc: dict[str, Any]
    y: Any = None  # numpy [K, N] or None

    @property
    def label(self) -> str:
        return label(self.method, self.g)


def label(method: str, g: int | None) -> str:
    """How a (method, g) point is named in tables and plots."""
    return method if g is None else f"{method} g={g}"


@dataclass
class Row:
    """One (method, g) point, aggregated over its seeds."""

    method: str
    g: int | None
    runs: list[Run] = field(default_factory=list)
    pareto: bool = False

    @property
    def label(self) -> str:
        return label(self.method, self.g)

    def _values(self, get: Any) -> list[float]:
        return [float(v) for v in (get(r.doc) for r in self.runs) if v is not None]

    @property
    def errors(self) -> list[float]:
        return self._values(lambda d: d["ensemble"].get("error"))

    @property
    def seconds(self) -> list[float]:
        return self._values(lambda d: d["total_seconds"])

    @property
    def oracle(self) -> float:
        return _mean(self._values(lambda d: d["ensemble"].get("oracle_accuracy")))

    @property
    def member_error(self) -> float:
        def mean_member(d: Mapping[str, Any]) -> float | None:
            accs = [m["accuracy"] for m in d["members"].values() if m.get("accuracy") is not None]
            return 1 - sum(accs) / len(accs) if accs else None

        return _mean(self._values(mean_member))

    def summary(self) -> dict[str, Any]:
        secs = _mean(self.seconds)
        return {
            "method": self.method, "g": "" if self.g is None else self.g, "seeds": len(self.runs),
            "error_mean": _mean(self.errors), "error_std": _std(self.errors),
            "oracle_accuracy": self.oracle, "member_error": self.member_error,
            "seconds_mean": secs, "seconds_std": _std(self.seconds),
            "usd_m1": secs * RATES[0][1] / 3600, "usd_m2": secs * RATES[1][1] / 3600,
            "pareto": self.pareto,
        }


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _std(xs: Sequence[float]) -> float:
    # the sample standard deviation; one seed has no spread to report
    return statistics.stdev(xs) if len(xs) >= 2 else math.nan


def aggregate(runs: Sequence[Run]) -> list[Row]:
    """Runs grouped by (method, g) in first-seen order, with the Pareto flags set."""
    rows: dict[tuple[str, int | None], Row] = {}
    for r in runs:
        rows.setdefault((r.method, r.g), Row(r.method, r.g)).runs.append(r)
    out = list(rows.values())
    scored = [row for row in out if row.errors and row.seconds]
    for i in pareto_front([(_mean(r.seconds), _mean(r.errors)) for r in scored]):
        scored[i].pareto = True
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def frontier_csv(rows: Sequence[Row]) -> str:
    """frontier.csv: one line per (method, g); fractions in [0, 1], seconds, US dollars."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _fmt(v, 6) for k, v in row.summary().items()})
    return buf.getvalue()


def _pct(x: float, std: float | None = None) -> str:
    if math.isnan(x):
        return "-"
    return f"{x * 100:.2f}" + ("" if std is None or math.isnan(std) else f" ± {std * 100:.2f}")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def diversity_table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per (method, g) with two or more seeds whose Y agree in shape: the Section 3.4 moments.

    Y of R trainings, [R, K, N], goes to `metrics.diversity_over_trainings` (spread over the
    trainings, divided by R - 1, averaged over examples). Runs with a non-finite Y (a diverged
    member) are left out.
    """
    import numpy as np
    import torch

    from mncompile.runtime.metrics import diversity_over_trainings

    out = []
    for row in aggregate(runs):
        ys = [np.asarray(r.y, dtype=np.float64) for r in row.runs if r.y is not None]
        ys = [y for y in ys if np.isfinite(y).all()]
        if len(ys) < 2 or len({y.shape for y in ys}) != 1:
            continue
        d = diversity_over_trainings(torch.as_tensor(np.stack(ys)))
        out.append({"method": row.method, "g": "" if row.g is None else row.g, "seeds": len(ys),
                    "members": ys[0].shape[0], **d})
    return out


def frontier_markdown(rows: Sequence[Row], diversity: Sequence[Mapping[str, Any]] | None, *,
                      title: str, notes: Sequence[str] = ()) -> str:
    """frontier.md: the frontier table, the diversity table (if any) and how they were made."""
    lines = [f"# {title}", ""]
    lines += list(notes) + ([""] if notes else [])
    body = []
    for row in rows:
        s = row.summary()
        body.append([row.label, str(s["seeds"]), _pct(s["error_mean"], s["error_std"]),
                     _pct(s["oracle_accuracy"]), _pct(s["member_error"]), _fmt(s["seconds_mean"], 4),
                     f"{s['usd_m1']:.4f}", f"{s['usd_m2']:.4f}", "yes" if row.pareto else ""])
    lines += _md_table(["method", "seeds", "ensemble error %", "oracle accuracy %", "mean member error %",
                        "training s", *(f"USD at {rate:.2f}/h" for _, rate in RATES), "Pareto"], body)
    if diversity:
        lines += ["", "## Diversity over trainings (Section 3.4, Figure 8)", "",
                  "Y = each member's test probability of the correct class; moments over the seeds' "
                  "trainings (divided by R - 1), averaged over test examples.", ""]
        lines += _md_table(
            ["method", "seeds", "members", "member variance", "member covariance", "ensemble variance"],
            [[label(d["method"], d["g"] or None), str(d["seeds"]), str(d["members"]),
              _fmt(d["member_variance"]), _fmt(d["member_covariance"]), _fmt(d["ensemble_variance"])]
             for d in diversity])
    return "\n".join(lines) + "\n"


def diversity_csv(diversity: Sequence[Mapping[str, Any]]) -> str:
    cols = ("method", "g", "seeds", "members", "member_variance", "member_covariance", "ensemble_variance")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for d in diversity:
        w.writerow({k: _fmt(d[k], 6) if d[k] is not None else "" for k in cols})
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_frontier(rows: Sequence[Row], path: Path, *, title: str, single_best: float | None = None) -> None:
    """Ensemble test error (%) against training time (s), error bars over seeds, Pareto front drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    pts = [(row, _mean(row.seconds), _mean(row.errors)) for row in rows if row.errors and row.seconds]
    markers = "osD^vP*Xh<>p"
    methods = list(dict.fromkeys(row.method for row, _, _ in pts))
    for row, x, y in pts:
        k = methods.index(row.method)
        std = _std(row.errors)
        ax.errorbar(x, y * 100, yerr=None if math.isnan(std) else std * 100, fmt=markers[k % len(markers)],
                    color=f"C{k % 10}", markersize=7, capsize=3,
                    label=row.method if row is next(r for r, _, _ in pts if r.method == row.method) else None)
        ax.annotate(row.label if row.g is not None else row.method, (x, y * 100), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    front = sorted(((x, y) for row, x, y in pts if row.pareto))
    if front:
        ax.plot([x for x, _ in front], [y * 100 for _, y in front], "o", markersize=13,
                markerfacecolor="none", markeredgecolor="black", linewidth=0)
        ax.step([x for x, _ in front], [y * 100 for _, y in front], where="post", color="black",
                linestyle="--", linewidth=1, label="Pareto front")
    if single_best is not None:
        ax.axhline(single_best * 100, color="grey", linewidth=1, linestyle=":",
                   label="best single member (full-data)")
    ax.set_xlabel("training time (s, wall clock)")
    ax.set_ylabel("ensemble test error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def time_segments(doc: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """(phase, part, seconds) of one run: per model where a phase's models were trained one at a time.

    A phase of several models whose own seconds add up to the phase's (within 2%) was trained
    one model after another, so its time splits by model; otherwise they shared epochs (lockstep)
    and the phase is one segment.
    """
    out = []
    for p in doc["phases"]:
        names = p["models"]
        own = [float(doc["models"][n]["seconds"]) for n in names]
        if len(names) > 1 and math.isclose(sum(own), p["seconds"], rel_tol=0.02):
            out += [(p["name"], n, s) for n, s in zip(names, own, strict=True)]
        else:
            part = names[0] if len(names) == 1 else (f"{len(names)} in lockstep" if names else "")
            out.append((p["name"], part, float(p["seconds"])))
    return out


def plot_breakdown(rows: Sequence[Row], path: Path, *, title: str) -> None:
    """Stacked bars of training time per phase (and member), one bar per (method, g): Figure 5.

    Each segment is the mean over the seeds of that phase's (or model's) seconds.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 5))
    phase_colors: dict[str, str] = {}
    bars: list[dict[tuple[str, str], list[float]]] = []
    for row in rows:
        seg: dict[tuple[str, str], list[float]] = {}
        for r in row.runs:
            for phase, part, s in time_segments(r.doc):
                seg.setdefault((phase, part), []).append(s)
        bars.append(seg)
    # a segment is labelled only when it is tall enough on the shared axis to hold its label
    tallest = max((sum(_mean(v) for v in seg.values()) for seg in bars), default=0.0)
    for x, seg in enumerate(bars):
        bottom = 0.0
        for k, ((phase, part), secs) in enumerate(seg.items()):
            color = phase_colors.setdefault(phase, f"C{len(phase_colors) % 10}")
            h = _mean(secs)
            ax.bar(x, h, bottom=bottom, color=color, edgecolor="white", linewidth=0.8,
                   alpha=1.0 if k % 2 == 0 else 0.75)
            if part and tallest > 0 and h / tallest > 0.05:
                ax.text(x, bottom + h / 2, part, ha="center", va="center", fontsize=7, color="white")
            bottom += h
    for phase, color in phase_colors.items():
        ax.bar(0, 0, color=color, label=phase)
    ax.set_xticks(range(len(rows)), [row.label for row in rows], rotation=30, ha="right")
    ax.set_ylabel("training time (s, wall clock)")
    ax.set_title(title)
    ax.legend(fontsize=8, title="phase")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def single_best_error(runs: Sequence[Run]) -> float | None:
    """The best member's test error among full-data runs (mean over seeds per member), or None."""
    per: dict[str, list[float]] = {}
    for r in runs:
        if r.method == "full-data":
            for name, m in r.doc["members"].items():
                if m.get("accuracy") is not None:
                    per.setdefault(name, []).append(1 - m["accuracy"])
    return min(_mean(v) for v in per.values()) if per else None


def write_frontier(out: Path, runs: Sequence[Run], *, title: str, notes: Sequence[str] = ()) -> list[Path]:
    """Every file of the module docstring into `out`; returns their paths."""
    from mncompile.runtime.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    div = diversity_table(runs) if any(len(r.runs) >= 2 for r in rows) else []
    paths = [out / "frontier.csv", out / "frontier.md", out / "frontier.png", out / "breakdown.png"]
    atomic_write_text(paths[0], frontier_csv(rows))
    atomic_write_text(paths[1], frontier_markdown(rows, div, title=title, notes=notes))
    plot_frontier(rows, paths[2], title=title, single_best=single_best_error(runs))
    plot_breakdown(rows, paths[3], title=f"{title}: where the time goes")
    if div:
        paths.append(out / "diversity.csv")
        atomic_write_text(paths[-1], diversity_csv(div))
    return paths
