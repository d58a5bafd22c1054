"""The runtime's results pin: every method on a small slice of MNIST-1D, at one CPU thread.

`digest(out)` keeps what a run computed (results.json's metrics, statuses, hatch and method
records; history.csv's columns) and drops wall times. `tests/test_runtime_pin.py` compares a
fresh run of every method with `tests/data/runtime_pin.json`, value for value. A change that
moves results on purpose rewrites the pin in the same commit and says what moved:

    python -m tests.runtime_pin          # rewrites tests/data/runtime_pin.json
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "mnist1d.mnet"
PIN = Path(__file__).resolve().parent / "data" / "runtime_pin.json"
#: the landed results of the paper's setting (before the validation split and the recipe options),
#: which `--recipe paper` must reproduce: the pin as it was at commit a43a4d1
PAPER_PIN = Path(__file__).resolve().parent / "data" / "paper_pin.json"
METHODS = ("mothernets", "shared-mothernets", "full-data", "bagging", "distill", "snapshot", "fge", "treenet")
#: `--fuse off`: the pin is of the unfused path, bit for bit (fused groups agree with it to float32
#: rounding: tests/test_fused.py)
OPTIONS = ["--train-size", "600", "--test-size", "300", "--epochs-scale", "0.1", "--quiet", "--fuse", "off"]
#: wall times and versions: the only fields allowed to differ between two runs
VOLATILE = frozenset({"seconds", "total_seconds", "cost_usd", "val_seconds", "validation_seconds"})
METHOD_INFO = ("hatch", "shared", "snapshot", "fge", "treenet", "distill", "bagging")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def digest(out: Path) -> dict[str, Any]:
    """What a run in `out` computed, wall times left out."""
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    info = doc.get("info", {})
    with open(out / "history.csv", encoding="utf-8", newline="") as f:
        history = [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(f)]
    return {
        "phases": [{"name": p["name"], "models": p["models"]} for p in doc["phases"]],
        "models": _strip(doc["models"]),
        "members": _strip(doc["members"]),
        "ensemble": _strip(doc["ensemble"]),
        "info": _strip({k: info[k] for k in METHOD_INFO if k in info}),
        "history": history,
    }


def run_all(work: Path, extra: list[str] | None = None) -> dict[str, Any]:
    """Train every method of `METHODS` under `work` at one thread, with `extra` options; their digests."""
    import torch

    from mncompile.cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Any] = {}
        for method in METHODS:
            run_dir = work / method
            argv = ["run", str(SPEC), "-o", str(work / "generated"), "--force", "--method", method,
                    "--out", str(run_dir), *OPTIONS, *(extra or [])]
            if main(argv) != 0:
                raise RuntimeError(f"method {method} failed")
            out[method] = digest(run_dir)
        return out
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pins = run_all(Path(tmp))
    PIN.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {PIN}", file=sys.stderr)
