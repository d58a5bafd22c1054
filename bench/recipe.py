"""Which hatched-member recipe diversifies the ensemble? One source of diversity at a time, on validation.

For each spec and seed, trains `--method mothernets` with the default recipe (`base`: hatched
members at twice the MotherNet's lr; `spec` is the spec's hatched_lr), then each
variant from the same trained MotherNet (its checkpoint copied, the run resumed: the MotherNet
phase is bit-identical, only the hatched members' training differs). The variants change one
thing each: the batch order, the hatched learning rate (0.05 is the MotherNet's lr: a warm
restart to it, then cosine decay) or its factor to the MotherNet's, the noise's scale and mode,
a bootstrap sample per member (bagging's), the hatched stopping rule.

Everything is judged on the **validation split** of development data (MNIST-1D with
--data-seed 1, never the data-seed 0 sets that the README reports): the ensemble's validation
error, its best member's, and the ensemble gain between them. The development test error is
printed beside them for the record.

    python bench/recipe.py                                  # v5-1d, 8000 / 8000, seeds 0 1
    python bench/recipe.py --specs examples/mnist1d.mnet --variants base order lr05 --seeds 0
    OMP_NUM_THREADS=1 python bench/recipe.py --out /tmp/recipe   # keep the runs
    python bench/recipe.py --method shared-mothernets --variants base noise05 noise10

With `--method shared-mothernets` the variants change the Shared-MotherNet's joint training
(its `base` is that method's defaults: the spec's hatched_lr).

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

from mncompile.table import render

#: each variant's options beyond the base run's (the spec's settings)
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "order": ["--batch-order", "member"],
    "lr05": ["--hatched-lr", "0.05"],
    "lr10": ["--hatched-lr", "0.1"],
    "noise05": ["--noise", "0.05"],
    "noise10": ["--noise", "0.1"],
    "noise20": ["--noise", "0.2"],
    "symmetric05": ["--noise-mode", "symmetric", "--noise", "0.05"],
    "valstop": ["--hatched-stop", "val-loss", "--hatched-patience", "3"],
    "order+lr05": ["--batch-order", "member", "--hatched-lr", "0.05"],
    "spec": ["--hatched-lr-factor", "spec"],
    "factor3": ["--hatched-lr-factor", "3"],
    "factor4": ["--hatched-lr-factor", "4"],
    "bootstrap": ["--batch-order", "bootstrap"],
    "valstop5": ["--hatched-stop", "val-loss", "--hatched-patience", "5"],
}
#: the phases that train hatched members: separate ones, or a Shared-MotherNet's joint model
HATCHED_PHASES = ("members", "shared")


def validation_scores(out: Path, x_val: Any, y_val: Any) -> tuple[float, float, float, float]:
    """The run's (ensemble error, best member error, ensemble NLL, mean member NLL) on validation.

    From its ensemble.pt. The NLLs are continuous where the errors of a small split are coarse:
    the ensemble's NLL below the members' mean is what averaging gains in likelihood.
    """
    import torch

    from mncompile.runtime.ensemble import load_ensemble

    ens = load_ensemble(out)
    probs = torch.softmax(ens.logits(x_val).float(), dim=2).double()  # [N, K, C]
    ensemble_err = float((probs.mean(1).argmax(1) != y_val).double().mean())
    member_errs = (probs.argmax(2) != y_val[:, None]).double().mean(0)
    right = probs.gather(2, y_val[:, None, None].expand(-1, probs.shape[1], 1)).squeeze(2)  # [N, K]
    ensemble_nll = float(-right.mean(1).clamp_min(1e-12).log().mean())
    member_nll = float(-right.clamp_min(1e-12).log().mean())
    return ensemble_err, float(member_errs.min()), ensemble_nll, member_nll


def main(argv: list[str] | None = None) -> int:
    import torch

    from mncompile.runtime.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="+", default=[str(ROOT / "examples/v5-1d.mnet")])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--method", choices=("mothernets", "shared-mothernets"), default="mothernets",
                   help="whose hatched members the variants change (default mothernets)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--train-size", type=int, default=8000)
    p.add_argument("--test-size", type=int, default=8000)
    p.add_argument("--data-seed", type=int, default=1)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    a = p.parse_args(argv)
    if "base" not in a.variants:
        a.variants.insert(0, "base")
    print(f"recipe bench: {a.method}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"MNIST-1D data-seed {a.data_seed}, {a.train_size} train / {a.test_size} test, validation "
          f"{a.val_fraction}; seeds {a.seeds}; epochs x{a.epochs_scale}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.out) if a.out else Path(tmp)
        for spec_path in a.specs:
            e, folder, defaults = compile_spec(root, spec_path)
            data = load_dataset("mnist1d", tuple(e.input), e.classes, seed=a.data_seed,
                                train_size=a.train_size, test_size=a.test_size, val_fraction=a.val_fraction)
            assert data.x_val is not None and data.y_val is not None
            results: dict[str, list[dict[str, float]]] = {v: [] for v in a.variants}
            for seed in a.seeds:
                base: Path | None = None
                for variant in a.variants:
                    out = root / "runs" / e.name / variant / f"seed{seed}"
                    start = from_mothernets(base, out, a.method)
                    argv_run = ["--data", "mnist1d", "--data-seed", str(a.data_seed), "--train-size",
                                str(a.train_size), "--test-size", str(a.test_size), "--val-fraction",
                                str(a.val_fraction), "--epochs-scale", str(a.epochs_scale), "--method",
                                a.method, "--seed", str(seed), "--out", str(out), "--quiet", *start,
                                *VARIANTS[variant]]
                    doc = run(folder, defaults, argv_run)
                    base = base or out
                    val_err, val_best, val_nll, member_nll = validation_scores(out, data.x_val, data.y_val)
                    members_s = sum(p["seconds"] for p in doc["phases"] if p["name"] in HATCHED_PHASES)
                    epochs = [m["epochs"] for m in doc["models"].values() if m["phase"] in HATCHED_PHASES]
                    r = {"val_err": val_err * 100, "val_best": val_best * 100, "val_nll": val_nll,
                         "member_nll": member_nll,
                         "val_gain": (val_best - val_err) * 100, "test_err": doc["ensemble"]["error"] * 100,
                         "test_gain": doc["ensemble"]["gain"] * 100,
                         "members_s": members_s, "epochs": statistics.mean(epochs) if epochs else 0.0,
                         "diverged": float(len(doc["info"].get("diverged_members", {})))}
                    results[variant].append(r)
                    print(f"  {e.name} {variant} seed {seed}: val error {r['val_err']:.2f}% (best member "
                          f"{r['val_best']:.2f}%, gain {r['val_gain']:+.2f} pt; NLL {val_nll:.4f}, members' "
                          f"{member_nll:.4f}); test error "
                          f"{r['test_err']:.2f}% "
                          f"(gain {r['test_gain']:+.2f}); members {members_s:.1f}s, {r['epochs']:.1f} epochs "
                          "each", flush=True)
            for variant, runs in results.items():
                def col(key: str, runs: list[dict[str, float]] = runs, digits: int = 2) -> str:
                    return mean_sd([r[key] for r in runs], digits)

                rows.append([e.name, variant, col("val_err"), col("val_best"), col("val_gain"),
                             col("val_nll", digits=4), col("member_nll", digits=4),
                             col("test_err"), col("test_gain"),
                             f"{statistics.mean(r['members_s'] for r in runs):.1f}",
                             f"{statistics.mean(r['epochs'] for r in runs):.1f}",
                             str(int(sum(r["diverged"] for r in runs)))])
    print()
    print(f"validation: {a.val_fraction} of each class of {a.train_size} (data-seed {a.data_seed}); "
          f"test: {a.test_size}")
    print(render(["spec", "variant", "val error %", "best member val %", "val gain pt", "val NLL",
                  "members' val NLL", "test error %",
                  "test gain pt", "members s", "epochs/member", "diverged"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
