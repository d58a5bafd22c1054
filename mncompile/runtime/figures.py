"""The plots of `mncompile bench` (and the learning curves of one run), with matplotlib's Agg backend.

- `plot_frontier`: ensemble test error against training time, one marker per (method, g), the
  95 % Wilson interval as a bar and the spread over seeds as caps, the front of the means as a
  staircase and the points of the Pareto column ringed (the paper's Figure 4);
- `plot_breakdown`: training time per phase (and per member where members trained one at a
  time) as stacked horizontal bars (Figure 5);
- `plot_diversity`: member variance, member covariance and ensemble variance over trainings
  (Figure 8);
- `plot_learning_curves`: validation accuracy (training accuracy without a validation split)
  per epoch per model; a hatched member's curve starts where its MotherNet's ended.

Every label sits in a legend or on an axis, never on top of the data, and figures are saved with
a tight bounding box, so no label overlaps another or is cut off at an edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mncompile.runtime.frontier import Row

MARKERS = "osD^vP*Xh<>p8"


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        from mncompile.diagnostics import MNError

        raise MNError("the plots need matplotlib, which is not installed",
                      hint='pip install "mncompile[plots]"') from e

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def plot_frontier(rows: Sequence[Row], path: Path, *, title: str, single_best: float | None = None,
                  staircase: Sequence[Row] = ()) -> None:
    """Figure 4: ensemble test error (%) against mean training time (s), the fronts drawn.

    `staircase` holds the rows on the front of the means (`frontier.pareto_front`); the rows
    flagged `pareto` (the interval-aware column) are ringed.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    pts = [(row, row.mean_seconds, row.mean_error) for row in rows if row.errors and row.seconds]
    for k, (row, x, y) in enumerate(pts):
        color, marker = f"C{k % 10}", MARKERS[k % len(MARKERS)]
        lo, hi = row.interval
        if not math.isnan(lo):
            ax.errorbar(x, y * 100, yerr=[[max(0.0, y - lo) * 100], [max(0.0, hi - y) * 100]], fmt="none",
                        ecolor=color, elinewidth=5, alpha=0.25)
        std = row.error_std
        ax.errorbar(x, y * 100, yerr=None if math.isnan(std) else std * 100, fmt=marker, color=color,
                    markersize=7, capsize=4, label=row.label)
    # the front of the means, as a staircase; the points no other beats beyond the intervals
    # (the Pareto column) are ringed: with overlapping intervals that set need not be a staircase
    strict = sorted((x, y) for row, x, y in pts if any(row is r for r in staircase))
    if strict:
        # the front holds to the right of its last point: nothing slower beats it there
        strict.append((max(x for _, x, _ in pts), strict[-1][1]))
        ax.step([x for x, _ in strict], [y * 100 for _, y in strict], where="post", color="black",
                linestyle="--", linewidth=1, label="front of the means")
    ringed = [(x, y) for row, x, y in pts if row.pareto]
    if ringed:
        ax.plot([x for x, _ in ringed], [y * 100 for _, y in ringed], "o", markersize=14,
                markerfacecolor="none", markeredgecolor="black", linewidth=0,
                label="not beaten beyond the intervals")
    if single_best is not None:
        ax.axhline(single_best * 100, color="grey", linewidth=1, linestyle=":",
                   label="best single member (full-data)")
    xs = [x for _, x, _ in pts]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
        ax.set_xscale("log")
    ax.set_xlabel("training time (s, wall clock, mean over seeds; validation passes excluded "
                  "on the local engine)")
    ax.set_ylabel("ensemble test error (%)")
    ax.set_title(title + "\nbars: 95 % Wilson interval over the test set; caps: std over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save(fig, path)


def plot_breakdown(labels: Sequence[str], bars: Sequence[Mapping[tuple[str, str], float]],
                   path: Path, *, title: str) -> None:
    """Figure 5: stacked horizontal bars of training time per phase (and member), one per (method, g).

    `bars[i]` maps (phase, part) to that segment's mean seconds over the seeds of point
    `labels[i]`; a segment is named inside only when its name fits in it.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.8))
    phase_colors: dict[str, str] = {}
    texts = []
    for y, seg in enumerate(bars):
        left = 0.0
        for k, ((phase, part), w) in enumerate(seg.items()):
            color = phase_colors.setdefault(phase, f"C{len(phase_colors) % 10}")
            ax.barh(y, w, left=left, color=color, edgecolor="white", linewidth=0.8,
                    alpha=1.0 if k % 2 == 0 else 0.75, height=0.7)
            if part:
                texts.append((ax.text(left + w / 2, y, part, ha="center", va="center", fontsize=7,
                                      color="white"), left, w))
            left += w
    ax.set_yticks(range(len(labels)), list(labels))
    ax.invert_yaxis()
    ax.set_xlabel("training time (s, wall clock, mean over seeds)")
    ax.set_title(title, fontsize=10)
    for phase, color in phase_colors.items():
        ax.barh(0, 0, color=color, label=phase)
    ax.legend(fontsize=8, title="phase", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    # a name that does not fit inside its segment is dropped (the legend and y labels still say it)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for text, left, w in texts:
        box = text.get_window_extent(renderer)
        x0, x1 = ax.transData.transform([(left, 0), (left + w, 0)])[:, 0]
        if box.width > (x1 - x0) * 0.95:
            text.remove()
    _save(fig, path)


def plot_diversity(labels: Sequence[str], diversity: Sequence[Mapping[str, Any]], path: Path, *,
                   title: str) -> None:
    """Figure 8: member variance, member covariance and ensemble variance of Y, per (method, g)."""
    plt = _pyplot()
    keys = (("member_variance", "member variance"), ("member_covariance", "member covariance"),
            ("ensemble_variance", "ensemble variance"))
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(diversity) + 1.8))
    h = 0.8 / len(keys)
    for k, (key, name) in enumerate(keys):
        ys = [i + (k - 1) * h for i in range(len(diversity))]
        # one member has no covariance: its bar is left out (None)
        ax.barh(ys, [math.nan if d[key] is None else float(d[key]) for d in diversity], height=h,
                color=f"C{k}", label=name)
    ax.set_yticks(range(len(diversity)), list(labels))
    ax.invert_yaxis()
    ax.set_xlabel("moment of Y (probability of the correct class) over the seeds' trainings")
    ax.set_title(title + "\nlower covariance: members err differently, averaging helps more", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def curves(history: Sequence[Mapping[str, str]]) -> tuple[dict[str, tuple[list[int], list[float]]], bool]:
    """Per model, (epochs, accuracies) from history.csv rows, and whether they are validation accuracies.

    Epochs count from the run's start: a model of a later phase starts after the longest model
    of the phases before it (a hatched member after its MotherNet).
    """
    def given(value: Any) -> bool:
        return value is not None and value != ""

    val = any(given(r.get("val_acc")) for r in history)
    key = "val_acc" if val else "train_acc"
    phases: dict[str, int] = {}
    for r in history:
        phases[r["phase"]] = max(phases.get(r["phase"], 0), int(r["epoch"]))
    offsets, total = {}, 0
    for phase, n in phases.items():
        offsets[phase], total = total, total + n
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in history:
        if not given(r.get(key)):
            continue
        xs, ys = out.setdefault(r["model"], ([], []))
        xs.append(offsets[r["phase"]] + int(r["epoch"]))
        ys.append(float(r[key]) * 100)
    return out, val


def plot_learning_curves(rows: Sequence[Row], path: Path, *, title: str) -> None:
    """Accuracy per epoch per model: one panel per (method, g), its first seed; one color per model."""
    plt = _pyplot()
    panels = [(row, next(r for r in row.runs if r.history))
              for row in rows if any(r.history for r in row.runs)]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows + 0.8), squeeze=False,
                             sharey=True)
    colors: dict[str, str] = {}
    styles: dict[str, str] = {}
    any_val = False
    for ax, (row, run) in zip(axes.flat, panels, strict=False):
        per_model, val = curves(run.history or [])
        any_val |= val
        for model, (xs, ys) in per_model.items():
            color = colors.setdefault(model, f"C{len(colors) % 10}")
            # past ten models the colours repeat, so the style tells them apart, the same everywhere
            style = styles.setdefault(model, ("-", "--", ":", "-.")[(len(styles) // 10) % 4])
            # a marker on every epoch: a member fine-tuned for one epoch is one point, not nothing
            ax.plot(xs, ys, style, marker=".", markersize=4, color=color, linewidth=1.2, label=model)
        ax.set_title(f"{row.label} (seed {run.seed})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(_locator()(integer=True))
        ax.set_xlabel("epoch (from the run's start)", fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    what = "validation" if any_val else "training (no validation split)"
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{what} accuracy (%)", fontsize=8)
    handles, labels = [], []
    for ax in axes.flat:
        for hnd, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(hnd)
                labels.append(lab)
    fig.suptitle(title, fontsize=10)
    # the legend gets its own band below the panels, as tall as its rows: never over the data
    ncol = min(8, max(1, len(labels)))
    legend_rows = math.ceil(len(labels) / ncol)
    band = 0.22 * legend_rows + 0.2
    fig.set_figheight(fig.get_figheight() + band)
    bottom = band / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    _save(fig, path)


def plot_run_curves(history: Sequence[Mapping[str, str]], path: Path, *, title: str) -> None:
    """One run's learning curves (`mncompile run`, train.py): accuracy per epoch per model."""
    plt = _pyplot()
    per_model, val = curves(history)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (model, (xs, ys)) in enumerate(per_model.items()):
        ax.plot(xs, ys, "-" if k < 10 else "--", marker=".", markersize=4, color=f"C{k % 10}",
                linewidth=1.2, label=model)
    ax.xaxis.set_major_locator(_locator()(integer=True))
    ax.set_xlabel("epoch (from the run's start; a hatched member continues its MotherNet)")
    ax.set_ylabel(("validation" if val else "training (no validation split)") + " accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if per_model:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.text(0.5, 0.5, "no epochs were trained", ha="center", va="center", transform=ax.transAxes)
    _save(fig, path)
