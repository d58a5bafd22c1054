"""How far a fused run lands from the unfused one, against how far a second thread moves it.

Fused and unfused steps agree to float32 rounding (tests/test_fused.py: 1e-5 per step), not bit
for bit, and SGD carries such differences on. So does a change of thread count, which reorders
the sums of the convolutions. This runs one spec three ways on the same data and seed, with
`mncompile run`'s pipeline: unfused at 1 thread (`--fuse off --threads 1`), fused at 1 thread,
and unfused at 2 threads. It prints each member's training loss per epoch and test accuracy, and
the ensemble's test error with its 95 % Wilson interval.

    python bench/fused_rounding.py                                   # v5-1d.mnet, MNIST-1D
    python bench/fused_rounding.py --spec examples/r10-1d.mnet --epochs-scale 0.1
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devruns  # noqa: E402  (bench/devruns.py)

RUNS = {"unfused, 1 thread": ["--fuse", "off", "--threads", "1"],
        "fused, 1 thread": ["--fuse", "on", "--threads", "1"],
        "unfused, 2 threads": ["--fuse", "off", "--threads", "2"]}


def main(argv: list[str] | None = None) -> int:
    import torch

    from mncompile.runtime.metrics import wilson

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default="examples/v5-1d.mnet")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--epochs-scale", type=float, default=0.2)
    args = p.parse_args(argv)
    print(f"bench/fused_rounding.py: {args.spec}, CPU, torch {torch.__version__}, {args.train_size} training "
          f"and {args.test_size} test examples of the spec's data, --epochs-scale {args.epochs_scale:g}, "
          "seed 0", flush=True)
    with tempfile.TemporaryDirectory(prefix="mncompile-rounding-") as tmp:
        root = Path(tmp)
        _, folder, defaults = devruns.compile_spec(root, args.spec)
        results, history = {}, {}
        for n, (tag, extra) in enumerate(RUNS.items()):
            out = root / f"run{n}"
            results[tag] = devruns.run(folder, defaults, [
                "--out", str(out), "--force", "--quiet", "--train-size", str(args.train_size),
                "--test-size", str(args.test_size), "--epochs-scale", str(args.epochs_scale), "--seed", "0",
                *extra], quiet_errors=False)
            with open(out / "history.csv", encoding="utf-8", newline="") as f:
                history[tag] = list(csv.DictReader(f))
    first = next(iter(RUNS))
    for name in results[first]["models"]:
        print(f"\n{name}: training loss per epoch; test accuracy")
        for tag in RUNS:
            losses = " ".join(f"{float(r['train_loss']):.6f}" for r in history[tag] if r["model"] == name)
            acc = results[tag]["members"].get(name, {}).get("accuracy")
            print(f"  {tag:<20} {losses}" + ("" if acc is None else f"; {acc:.4f}"))
    print("\n| run | ensemble error | 95 % Wilson interval |\n|---|---|---|")
    for tag in RUNS:
        e = results[tag]["ensemble"]
        low, high = wilson(round(e["error"] * e["test_examples"]), e["test_examples"])
        print(f"| {tag} | {e['error'] * 100:.2f} % | {low * 100:.2f}-{high * 100:.2f} % |")
    print(f"\nrepeat: python bench/fused_rounding.py --spec {args.spec} --train-size {args.train_size} "
          f"--test-size {args.test_size} --epochs-scale {args.epochs_scale:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
