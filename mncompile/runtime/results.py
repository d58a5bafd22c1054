"""The run's record: `OUT/results.json`, `OUT/history.csv`, and a table for the terminal.

The schema is documented in docs/results-schema.md; `SCHEMA_VERSION` changes whenever a field
changes meaning or goes away. Both files are written atomically, with sorted keys and no NaN
(non-finite numbers become null), so they diff cleanly and parse anywhere.

>>> from mncompile.runtime.jobs import EpochRecord, ModelResult
>>> m = ModelResult("a", "max_epochs", "reached max_epochs 1", [EpochRecord(1, 0.1, 0.5, 0.8, None, 36.0)])
>>> r = build_results("fd", [PhaseRecord("members", 36.0, {"a": m})])
>>> r["total_seconds"], r["cost_usd"]["M1"]["usd"]
(36.0, 0.009)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mncompile.diagnostics import MNError
from mncompile.formats.settings import RATE_MACHINES, RATES_USD_PER_HOUR
from mncompile.runtime.checkpoint import atomic_write_text
from mncompile.runtime.jobs import ModelResult

SCHEMA_VERSION = 1
HISTORY_COLUMNS = ("phase", "model", "epoch", "lr", "train_loss", "train_acc", "test_acc", "seconds",
                   "val_loss", "val_acc", "val_seconds")


@dataclass
class PhaseRecord:
    """One phase of a run: its name ('mothernets', 'hatching', 'members', ...), wall seconds, models.

    `seconds` is the phase's wall time as the caller measured it (for a lockstep group,
    `train.group_seconds`); the models' own seconds are reported separately.
    """

    name: str
    seconds: float
    models: Mapping[str, ModelResult] = field(default_factory=dict)


def cost_usd(seconds: float) -> dict[str, dict[str, float]]:
    """What `seconds` of one GPU cost at each of the paper's hourly rates."""
    return {m: {"usd_per_hour": rate, "usd": seconds * rate / 3600} for m, rate in RATES_USD_PER_HOUR.items()}


def _model_entry(phase: str, r: ModelResult) -> dict[str, Any]:
    last = r.history[-1] if r.history else None
    return {
        "phase": phase,
        "status": r.status,
        "message": r.message,
        "epochs": r.epochs,
        "seconds": r.seconds,
        "final_train_loss": last.train_loss if last else None,
        "final_train_acc": last.train_acc if last else None,
        "best_train_acc": r.best_train_acc,
        "final_test_acc": last.test_acc if last else None,
        "final_val_loss": last.val_loss if last else None,
        "final_val_acc": last.val_acc if last else None,
        "best_val_loss": min((h.val_loss for h in r.history
                              if h.val_loss is not None and math.isfinite(h.val_loss)), default=None),
        "val_seconds": r.val_seconds,
    }


def build_results(
    method: str,
    phases: Sequence[PhaseRecord],
    metrics: Mapping[str, Any] | None = None,
    *,
    info: Mapping[str, Any] | None = None,
    total_seconds: float | None = None,
) -> dict[str, Any]:
    """The results.json document.

    `metrics` is `metrics.ensemble_metrics(...)`'s dict: its "members" go to the top level
    "members", the rest to "ensemble". `info` is free-form context (ensemble, dataset, seed,
    device, g, ...). `total_seconds` defaults to the sum of the phases' seconds.
    """
    models: dict[str, Any] = {}
    for p in phases:
        for name, r in p.models.items():
            if name in models:
                raise ValueError(f"model '{name}' appears in phases {models[name]['phase']} and {p.name}")
            models[name] = _model_entry(p.name, r)
    total = sum(p.seconds for p in phases) if total_seconds is None else total_seconds
    metrics = dict(metrics or {})
    members = metrics.pop("members", {})
    return _clean(
        {
            "schema_version": SCHEMA_VERSION,
            "method": method,
            "info": dict(info or {}),
            "phases": [{"name": p.name, "seconds": p.seconds, "models": list(p.models),
                        "val_seconds": sum(r.val_seconds for r in p.models.values())} for p in phases],
            "models": models,
            "members": members,
            "ensemble": metrics,
            "total_seconds": total,
            # validation passes are not training: their time is reported beside it
            "validation_seconds": sum(r.val_seconds for p in phases for r in p.models.values()),
            "cost_usd": cost_usd(total),
        }
    )


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_results(out_dir: str | os.PathLike[str], results: Mapping[str, Any]) -> Path:
    """Write `OUT/results.json` atomically; returns its path."""
    path = Path(out_dir) / "results.json"
    atomic_write_text(path, json.dumps(_clean(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results.json, checking that this version of mncompile understands it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MNError(f"cannot read results file {path}: {e}") from e
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise MNError(f"{path} has results schema_version {found}, this mncompile reads {SCHEMA_VERSION}")
    return data


def history_rows(phases: Sequence[PhaseRecord]) -> list[dict[str, Any]]:
    """One row per model per epoch, in phase order, then model order, then epoch."""
    rows = []
    for p in phases:
        for name, r in p.models.items():
            for h in r.history:
                rows.append({"phase": p.name, "model": name, **h.to_dict()})
    return rows


def write_history(out_dir: str | os.PathLike[str], phases: Sequence[PhaseRecord]) -> Path:
    """Write `OUT/history.csv` atomically; an empty test_acc or val_loss means it was not measured."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history_rows(phases):
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in HISTORY_COLUMNS})
    path = Path(out_dir) / "history.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def format_table(results: Mapping[str, Any]) -> str:
    """A plain-text summary of a results.json document for the terminal."""
    out = [f"method {results['method']}"]
    rows = []
    for name, m in results["models"].items():
        member = results["members"].get(name, {})
        rows.append(
            [
                name,
                m["phase"],
                m["status"],
                str(m["epochs"]),
                f"{m['seconds']:.1f}",
                _pct(m["final_train_acc"]),
                _pct(member.get("accuracy", m.get("final_test_acc"))),
                _num(member.get("nll")),
            ]
        )
    if rows:
        out += _grid(["model", "phase", "status", "epochs", "seconds", "train %", "test %", "test nll"], rows)
    ens = results.get("ensemble") or {}
    if "accuracy" in ens:
        out.append("")
        out.append(
            f"ensemble of {ens.get('size')}: accuracy {_pct(ens['accuracy'])}% (averaging), "
            f"{_pct(ens.get('accuracy_vote'))}% (vote), oracle {_pct(ens.get('oracle_accuracy'))}%"
        )
        if ens.get("error_interval"):
            lo, hi = ens["error_interval"]
            out.append(f"  error {_pct(ens.get('error'))}%, 95% Wilson interval {_pct(lo)}-{_pct(hi)}% over "
                       f"{ens.get('test_examples')} test examples")
        if ens.get("gain") is not None:
            out.append(f"  ensemble gain {ens['gain'] * 100:+.2f} pt: the best member's error "
                       f"{_pct(ens.get('best_member_error'))}% minus the ensemble's")
        out.append(
            f"  nll {_num(ens.get('nll'))}  brier {_num(ens.get('brier'))}  ece {_num(ens.get('ece'))}  "
            f"disagreement {_num(ens.get('disagreement'))}"
        )
    out.append("")
    phases = ", ".join(f"{p['name']} {p['seconds']:.1f}s" for p in results["phases"])
    cost = results["cost_usd"]
    val = results.get("validation_seconds") or 0.0
    val_note = f"; validation passes {val:.1f}s besides" if val else ""
    out.append(
        f"time {results['total_seconds']:.1f}s ({phases}){val_note}; cost at the paper's cloud rates: "
        + ", ".join(f"${c['usd']:.4f} on {m} ({RATE_MACHINES.get(m, m)}, ${c['usd_per_hour']:.2f}/h)"
                    for m, c in cost.items())
    )
    return "\n".join(out)
