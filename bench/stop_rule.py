"""Which early-stopping rule and validation share should be the default? Measured on development data.

Trains each spec's ensemble with each method under three settings, over several seeds:

- `paper`:     --val-fraction 0   --stop train-acc  (the paper's rule, every example trained on)
- `hold-out`:  --val-fraction F   --stop train-acc  (what holding out alone costs)
- `val-loss`:  --val-fraction F   --stop val-loss   (stop when the validation loss stalls)

The data is MNIST-1D generated with --data-seed 1 (default here): *development* data, drawn apart
from the data-seed 0 sets that the README and the bench report on, so that choosing the default
never looks at a reported test set. Prints, per (spec, method, setting), the ensemble error on the
development test set as mean +- std over seeds with the mean 95 % Wilson half-width, the training
seconds (validation passes excluded) and the validation seconds beside them.

    python bench/stop_rule.py            # mnist1d.mnet, mothernets + full-data, 3 seeds
    python bench/stop_rule.py --specs examples/v5-1d.mnet --train-size 8000 --seeds 0 1
    OMP_NUM_THREADS=1 python bench/stop_rule.py --out /tmp/stop_rule   # keep the runs

Times are wall clock at the thread count torch reports in the header: compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from devruns import ROOT, compile_spec, run

from mncompile.table import render


def settings_of(fraction: float) -> dict[str, list[str]]:
    return {
        "paper": ["--val-fraction", "0", "--stop", "train-acc"],
        "hold-out": ["--val-fraction", str(fraction), "--stop", "train-acc"],
        "val-loss": ["--val-fraction", str(fraction), "--stop", "val-loss"],
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="+", default=[str(ROOT / "examples/mnist1d.mnet")])
    p.add_argument("--methods", nargs="+", default=["mothernets", "full-data"])
    p.add_argument("--settings", nargs="+", default=["paper", "hold-out", "val-loss"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--test-size", type=int, default=8000)
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    a = p.parse_args(argv)
    table = settings_of(a.val_fraction)
    print(f"stop-rule bench: torch {torch.__version__}, {torch.get_num_threads()} thread(s); MNIST-1D "
          f"data-seed {a.data_seed}, {a.train_size} train / {a.test_size} test; val fraction "
          f"{a.val_fraction}; seeds {a.seeds}; epochs x{a.epochs_scale}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.out) if a.out else Path(tmp)
        rows = []
        for spec_path in a.specs:
            e, folder, defaults = compile_spec(root, spec_path)
            for method in a.methods:
                for setting in a.settings:
                    docs = []
                    for seed in a.seeds:
                        out = root / "runs" / e.name / method / setting / f"seed{seed}"
                        argv_run = ["--data", "mnist1d", "--data-seed", str(a.data_seed), "--train-size",
                                    str(a.train_size), "--test-size", str(a.test_size), "--epochs-scale",
                                    str(a.epochs_scale), "--method", method, "--seed", str(seed), "--out",
                                    str(out), "--quiet", "--force", *table[setting]]
                        doc = run(folder, defaults, argv_run, quiet_errors=False)
                        docs.append(doc)
                        print(f"  {e.name} {method} {setting} seed {seed}: error "
                              f"{doc['ensemble']['error'] * 100:.2f}%, {doc['total_seconds']:.1f}s training "
                              f"+ {doc.get('validation_seconds', 0):.1f}s validation", flush=True)
                    errs = [d["ensemble"]["error"] * 100 for d in docs]
                    half = statistics.mean((d["ensemble"]["error_interval"][1]
                                            - d["ensemble"]["error_interval"][0]) * 50 for d in docs)
                    secs = [d["total_seconds"] for d in docs]
                    vals = [d.get("validation_seconds", 0.0) for d in docs]
                    epochs = [sum(m["epochs"] for m in d["models"].values()) for d in docs]
                    sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
                    rows.append([e.name, method, setting, f"{statistics.mean(errs):.2f} +- {sd:.2f}",
                                 f"+-{half:.2f}", f"{statistics.mean(secs):.1f}",
                                 f"{statistics.mean(vals):.1f}",
                                 f"{statistics.mean(epochs):.0f}"])
    print()
    print(render(["spec", "method", "setting", "error % (mean +- std)", "95% CI", "train s", "val s",
                  "epochs"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
