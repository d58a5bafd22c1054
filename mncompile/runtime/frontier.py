"""The accuracy / training-time frontier of `mncompile bench`: aggregation and tables.

Input: one `results.json` per (method, g, seed) run (and, for diversity, each run's Y: every
member's test-set probability of the correct class, [K, N]; for learning curves, its
history.csv rows). Output, in the bench folder (the plots are drawn by `runtime/figures.py`):

- `frontier.csv` / `frontier.md`: per (method, g): seeds, ensemble error as mean and std over
  the seeds and its 95 % Wilson interval over the test examples, oracle accuracy, mean member
  error, NLL, Brier, ECE, training time (validation passes apart) and its cloud cost at the
  paper's two rates, and whether the point is on the Pareto front (`interval_front`);
- `frontier.md` also holds Table 3 (oracle accuracy), the calibration table and, with two seeds
  or more, the diversity table (Figure 8, Section 3.4), which `diversity.csv` repeats;
- `frontier.png` (Figure 4), `breakdown.png` (Figure 5), `diversity.png` (Figure 8) and
  `learning_curves.png`: see `runtime/figures.py`.

The Wilson interval of a point is that of its mean error over its N test examples: the sampling
error of one test set of that size, which the spread over seeds (training noise) does not show.

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
CSV_COLUMNS = ("method", "g", "seeds", "error_mean", "error_std", "error_low", "error_high", "test_examples",
               "oracle_accuracy", "member_error", "best_member_error", "gain", "gain_std", "nll", "brier",
               "ece", "seconds_mean", "seconds_std", "val_seconds_mean", "usd_m1", "usd_m2", "pareto")
#: the bins of the expected calibration error (runtime/metrics.py)
ECE_BINS = 15


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
    history: list[dict[str, str]] | None = None  # history.csv's rows, for the learning curves

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
    def mean_error(self) -> float:
        return _mean(self.errors)

    @property
    def error_std(self) -> float:
        return _std(self.errors)

    @property
    def mean_seconds(self) -> float:
        return _mean(self.seconds)

    @property
    def oracle(self) -> float:
        return _mean(self._values(lambda d: d["ensemble"].get("oracle_accuracy")))

    def ensemble_mean(self, key: str) -> float:
        """The mean over seeds of an `ensemble` metric (nll, brier, ece, ...)."""
        return _mean(self._values(lambda d: d["ensemble"].get(key)))

    def ensemble_std(self, key: str) -> float:
        return _std(self._values(lambda d: d["ensemble"].get(key)))

    @property
    def val_seconds(self) -> float:
        return _mean(self._values(lambda d: d.get("validation_seconds", 0.0)))

    @property
    def test_examples(self) -> int | None:
        ns = {int(n) for n in (r.doc["ensemble"].get("test_examples") for r in self.runs) if n}
        return ns.pop() if len(ns) == 1 else None

    @property
    def interval(self) -> tuple[float, float]:
        """The 95 % Wilson interval of the mean error over the test examples; (nan, nan) unknown."""
        n, err = self.test_examples, _mean(self.errors)
        if n is None or math.isnan(err):
            return math.nan, math.nan
        from mncompile.runtime.metrics import wilson

        return wilson(round(err * n), n)

    @property
    def member_error(self) -> float:
        def mean_member(d: Mapping[str, Any]) -> float | None:
            accs = [m["accuracy"] for m in d["members"].values() if m.get("accuracy") is not None]
            return 1 - sum(accs) / len(accs) if accs else None

        return _mean(self._values(mean_member))

    @property
    def gains(self) -> list[float]:
        """Per seed: the best member's error minus the ensemble's (what averaging the members bought)."""
        def gain(d: Mapping[str, Any]) -> float | None:
            accs = [m["accuracy"] for m in d["members"].values() if m.get("accuracy") is not None]
            err = d["ensemble"].get("error")
            return (1 - max(accs)) - err if accs and err is not None else None

        return self._values(gain)

    @property
    def best_member_error(self) -> float:
        return _mean(self._values(lambda d: 1 - max((m["accuracy"] for m in d["members"].values()
                                                     if m.get("accuracy") is not None), default=math.nan)))

    def summary(self) -> dict[str, Any]:
        secs = _mean(self.seconds)
        lo, hi = self.interval
        return {
            "method": self.method, "g": "" if self.g is None else self.g, "seeds": len(self.runs),
            "error_mean": _mean(self.errors), "error_std": _std(self.errors),
            "error_low": lo, "error_high": hi, "test_examples": self.test_examples or "",
            "oracle_accuracy": self.oracle, "member_error": self.member_error,
            "best_member_error": self.best_member_error, "gain": _mean(self.gains),
            "gain_std": _std(self.gains),
            "nll": self.ensemble_mean("nll"), "brier": self.ensemble_mean("brier"),
            "ece": self.ensemble_mean("ece"),
            "seconds_mean": secs, "seconds_std": _std(self.seconds), "val_seconds_mean": self.val_seconds,
            "usd_m1": secs * RATES[0][1] / 3600, "usd_m2": secs * RATES[1][1] / 3600,
            "pareto": self.pareto,
        }


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def _std(xs: Sequence[float]) -> float:
    # the sample standard deviation; one seed has no spread to report
    return statistics.stdev(xs) if len(xs) >= 2 else math.nan


def dominates(b: Row, a: Row) -> bool:
    """Whether `b` beats `a` beyond doubt: faster on mean training time over the seeds, and more
    accurate with the two 95 % error intervals apart (b's upper end below a's lower end).

    Without intervals (no test-example count) the mean errors are compared.
    """
    if not (_mean(b.seconds) < _mean(a.seconds)):
        return False
    (a_lo, _), (_, b_hi) = a.interval, b.interval
    if math.isnan(a_lo) or math.isnan(b_hi):
        return _mean(b.errors) < _mean(a.errors)
    return b_hi < a_lo


def interval_front(rows: Sequence[Row]) -> list[int]:
    """Indices of the rows that no other row `dominates`: the Pareto column, interval-aware.

    A point stays on the front unless another is both faster and more accurate by more than the
    test set's sampling error, so a point within the interval of a faster one is not struck off
    by a difference the test set cannot resolve.
    """
    return [i for i, a in enumerate(rows) if not any(dominates(b, a) for j, b in enumerate(rows) if j != i)]


def aggregate(runs: Sequence[Run]) -> list[Row]:
    """Runs grouped by (method, g) in first-seen order, with the Pareto flags set (`interval_front`)."""
    rows: dict[tuple[str, int | None], Row] = {}
    for r in runs:
        rows.setdefault((r.method, r.g), Row(r.method, r.g)).runs.append(r)
    out = list(rows.values())
    scored = [row for row in out if row.errors and row.seconds]
    for i in interval_front(scored):
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


def _interval(row: Row) -> str:
    lo, hi = row.interval
    return "-" if math.isnan(lo) else f"{lo * 100:.2f}-{hi * 100:.2f}"


def _secs(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.1f}" + ("" if math.isnan(std) else f" ± {std:.1f}")


def frontier_markdown(rows: Sequence[Row], diversity: Sequence[Mapping[str, Any]] | None, *,
                      title: str, notes: Sequence[str] = ()) -> str:
    """frontier.md: the frontier, Table 3, calibration, diversity (if any) and how they were made."""
    lines = [f"# {title}", ""]
    lines += list(notes) + ([""] if notes else [])
    ns = sorted({row.test_examples for row in rows if row.test_examples})
    n_text = f"{ns[0]:,}" if len(ns) == 1 else "the"
    lines += [f"Errors are mean ± std over the seeds; the 95 % interval is the Wilson score interval of "
              f"the mean error over {n_text} test examples. A point is on the Pareto front unless another "
              "is faster (mean training time) and more accurate with the two intervals apart. The "
              "ensemble gain is the best member's error minus the ensemble's, in points. Training "
              "time leaves out validation passes, listed beside it (on the local engine; with "
              "--engine ray a phase's wall time holds them).", ""]
    body = []
    for row in rows:
        s = row.summary()
        body.append([row.label, str(s["seeds"]), _pct(s["error_mean"], s["error_std"]), _interval(row),
                     _pct(s["member_error"]), _pct(s["gain"], s["gain_std"]),
                     _secs(s["seconds_mean"], s["seconds_std"]),
                     "-" if not s["val_seconds_mean"] else f"{s['val_seconds_mean']:.1f}",
                     f"{s['usd_m1']:.4f}", f"{s['usd_m2']:.4f}", "yes" if row.pareto else ""])
    lines += _md_table(["method", "seeds", "ensemble error %", "95% interval %", "mean member error %",
                        "ensemble gain pt", "training s", "validation s",
                        *(f"USD at {rate:.2f}/h" for _, rate in RATES),
                        "Pareto"], body)
    lines += ["", "## Oracle accuracy (Table 3)", "",
              "An example counts as right when any member gets it right: the accuracy a perfect "
              "selector of members would reach. Mean ± std over the seeds.", ""]
    lines += _md_table(["method", "oracle accuracy %", "ensemble accuracy %", "mean member accuracy %"],
                       [[row.label, _pct(row.oracle, _std(row._values(
                           lambda d: d["ensemble"].get("oracle_accuracy")))),
                         _pct(1 - _mean(row.errors), _std(row.errors)), _pct(1 - row.member_error)]
                        for row in rows])
    lines += ["", "## Calibration", "",
              "Of the averaged ensemble on the test set, mean ± std over the seeds. NLL: mean -log p(label); "
              f"Brier: mean sum over classes of (p - onehot)^2; ECE: {ECE_BINS} equal-width confidence bins "
              "over (0, 1].", ""]
    lines += _md_table(["method", "NLL", "Brier", "ECE"],
                       [[row.label, *(_num(row.ensemble_mean(k), row.ensemble_std(k))
                                      for k in ("nll", "brier", "ece"))] for row in rows])
    if diversity:
        lines += ["", "## Diversity over trainings (Section 3.4, Figure 8)", "",
                  "Y = each member's test probability of the correct class; moments over the seeds' "
                  "trainings (divided by R - 1), averaged over test examples.", ""]
        lines += _md_table(
            ["method", "seeds", "members", "member variance", "member covariance", "ensemble variance"],
            [[label(d["method"], d["g"] or None), str(d["seeds"]), str(d["members"]),
              *("-" if d[k] is None else _fmt(d[k])
                for k in ("member_variance", "member_covariance", "ensemble_variance"))]
             for d in diversity])
    return "\n".join(lines) + "\n"


def _num(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}")


def diversity_csv(diversity: Sequence[Mapping[str, Any]]) -> str:
    cols = ("method", "g", "seeds", "members", "member_variance", "member_covariance", "ensemble_variance")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for d in diversity:
        w.writerow({k: _fmt(d[k], 6) if d[k] is not None else "" for k in cols})
    return buf.getvalue()


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


def segments(row: Row) -> dict[tuple[str, str], float]:
    """(phase, part) -> mean seconds over the row's seeds (`time_segments` of each run)."""
    seg: dict[tuple[str, str], list[float]] = {}
    for r in row.runs:
        for phase, part, s in time_segments(r.doc):
            seg.setdefault((phase, part), []).append(s)
    return {k: _mean(v) for k, v in seg.items()}


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
    from mncompile.runtime import figures
    from mncompile.runtime.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(runs)
    div = diversity_table(runs) if any(len(r.runs) >= 2 for r in rows) else []
    paths = [out / "frontier.csv", out / "frontier.md", out / "frontier.png", out / "breakdown.png"]
    atomic_write_text(paths[0], frontier_csv(rows))
    atomic_write_text(paths[1], frontier_markdown(rows, div, title=title, notes=notes))
    scored = [row for row in rows if row.errors and row.seconds]
    means = pareto_front([(r.mean_seconds, r.mean_error) for r in scored])
    figures.plot_frontier(rows, paths[2], title=title, single_best=single_best_error(runs),
                          staircase=[scored[i] for i in means])
    figures.plot_breakdown([row.label for row in rows], [segments(row) for row in rows], paths[3],
                           title=f"{title}: where the training time goes")
    if div:
        paths += [out / "diversity.csv", out / "diversity.png"]
        atomic_write_text(paths[-2], diversity_csv(div))
        figures.plot_diversity([label(d["method"], d["g"] or None) for d in div], div, paths[-1],
                               title=f"{title}: diversity over trainings")
    if any(r.history for r in runs):
        paths.append(out / "learning_curves.png")
        figures.plot_learning_curves(rows, paths[-1], title=f"{title}: learning curves")
    return paths
