"""Which joint objective should Shared-MotherNets train on? `--shared-loss` measured on development data.

For each spec and seed, trains `--method shared-mothernets` once with `--shared-loss sum`, then
with each other objective from the same trained MotherNet (its checkpoint copied, the run
resumed: the MotherNet phase is bit-identical, only the joint phase differs). The data is
MNIST-1D generated with --data-seed 1: *development* data, apart from the data-seed 0 sets that
the README and the bench report on. The choice is made on the validation split (the shared
model's final validation loss and accuracy, the heads' mean); the development test error is
printed beside it for the record, with its 95 % Wilson half-width.

    python bench/shared_loss.py                                    # v5-1d, 8000 / 8000, seeds 0 1
    python bench/shared_loss.py --specs examples/mnist1d.mnet examples/d5-1d.mnet --seeds 0
    OMP_NUM_THREADS=1 python bench/shared_loss.py --out /tmp/shared_loss   # keep the runs

Times are wall clock at the thread count torch reports in the header: compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from devruns import ROOT, compile_spec, from_mothernets, mean_sd, run

from mncompile.runtime.methods.shared_mothernets import SHARED_LOSSES
from mncompile.table import render

METHOD = "shared-mothernets"


def shared_models(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The results.json records of the run's Shared-MotherNets (phase `shared`)."""
    return [m for m in doc["models"].values() if m["phase"] == "shared"]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    models = shared_models(doc)
    shared_seconds = sum(p["seconds"] for p in doc["phases"] if p["name"] == "shared")
    return {
        "diverged": sum(m["status"] == "diverged" for m in models),
        "val_loss": statistics.mean(m["final_val_loss"] for m in models),
        "val_err": statistics.mean(1 - m["final_val_acc"] for m in models) * 100,
        "epochs": statistics.mean(m["epochs"] for m in models),
        "test_err": doc["ensemble"]["error"] * 100,
        "half": (doc["ensemble"]["error_interval"][1] - doc["ensemble"]["error_interval"][0]) * 50,
        "gain": (doc["ensemble"].get("gain") or 0.0) * 100,
        "shared_s": shared_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="+", default=[str(ROOT / "examples/v5-1d.mnet")])
    p.add_argument("--losses", nargs="+", default=["sum", "mean", "scaled"], choices=SHARED_LOSSES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--test-size", type=int, default=8000)
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="more `mncompile run` options for every run (last on the line)")
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    a = p.parse_args(argv)
    print(f"shared-loss bench: torch {torch.__version__}, {torch.get_num_threads()} thread(s); MNIST-1D "
          f"data-seed {a.data_seed}, {a.train_size} train / {a.test_size} test; seeds {a.seeds}; "
          f"epochs x{a.epochs_scale}; extra {a.extra}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.out) if a.out else Path(tmp)
        for spec_path in a.specs:
            e, folder, defaults = compile_spec(root, spec_path)
            results: dict[str, list[dict[str, Any]]] = {loss: [] for loss in a.losses}
            for seed in a.seeds:
                first: Path | None = None
                for loss in a.losses:
                    out = root / "runs" / e.name / loss / f"seed{seed}"
                    start = from_mothernets(first, out, METHOD)
                    argv_run = ["--data", "mnist1d", "--data-seed", str(a.data_seed), "--train-size",
                                str(a.train_size), "--test-size", str(a.test_size), "--epochs-scale",
                                str(a.epochs_scale), "--method", METHOD, "--shared-loss", loss, "--seed",
                                str(seed), "--out", str(out), "--quiet",
                                *start, *a.extra]
                    doc = run(folder, defaults, argv_run)
                    first = first or out
                    s = summary(doc)
                    results[loss].append(s)
                    print(f"  {e.name} {loss} seed {seed}: val loss {s['val_loss']:.4f}, val error "
                          f"{s['val_err']:.2f}%, diverged {s['diverged']}, test error {s['test_err']:.2f}% "
                          f"(+-{s['half']:.2f}), gain {s['gain']:+.2f} pt, shared phase "
                          f"{s['shared_s']:.1f}s, {s['epochs']:.0f} epochs", flush=True)
            for loss, runs in results.items():
                def col(key: str, runs: list[dict[str, Any]] = runs, digits: int = 2) -> str:
                    return mean_sd([r[key] for r in runs], digits)

                rows.append([e.name, loss, str(sum(r["diverged"] for r in runs)),
                             col("val_loss", digits=4), col("val_err"), col("test_err"),
                             f"+-{statistics.mean(r['half'] for r in runs):.2f}", col("gain"),
                             f"{statistics.mean(r['shared_s'] for r in runs):.1f}"])
    print()
    print(render(["spec", "shared loss", "diverged", "val loss (heads' mean)", "val error %",
                  "test error %", "95% CI", "gain pt", "shared phase s"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
