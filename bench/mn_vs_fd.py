"""MotherNets (g = 1) against training every member from scratch (full data), same settings.

For each spec and seed, compiles the spec with one MotherNet per architecture class (g = 1 for
the examples here), then trains the ensemble twice through the generated pipeline: `--method
mothernets` and `--method full-data` (every member from scratch with the MotherNet settings, in
lockstep over one shared batch stream, exactly as the MotherNet phase trains). Reports the
training wall time (results.json's total_seconds: training phases plus hatching; data loading
and evaluation excluded), the ensemble test error (averaging), and the ratios, as the median
over the seeds. The target: MotherNets at least 3x faster, ensemble error within 1 point.

    python bench/mn_vs_fd.py                                  # mnist1d.mnet and mlp.mnet, seeds 0 1 2
    python bench/mn_vs_fd.py --specs examples/mlp.mnet --seeds 0 --epochs-scale 0.2   # quick
    python bench/mn_vs_fd.py --device cuda --out /tmp/mn_vs_fd

Each run's results.json stays under --out (default: a temporary folder) for inspection.
Timings are wall-clock and depend on the machine's load: compare numbers from one invocation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mncompile.api import load  # noqa: E402
from mncompile.compiler import compile_ensemble  # noqa: E402
from mncompile.runtime.pipeline import build_parser, execute  # noqa: E402
from mncompile.table import render  # noqa: E402
from mncompile.writer import write_folder  # noqa: E402

METHODS = ("mothernets", "full-data")


def run_one(folder: Path, defaults: dict[str, Any], method: str, seed: int, out: Path,
            extra: list[str]) -> dict[str, Any]:
    """Train one ensemble through the generated folder's pipeline; its results.json."""
    argv = ["--method", method, "--seed", str(seed), "--out", str(out), "--quiet", *extra]
    args = build_parser(defaults).parse_args(argv)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return execute(folder, defaults, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="+", default=[str(ROOT / "examples/mnist1d.mnet"),
                                                  str(ROOT / "examples/mlp.mnet")])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs-scale", type=float, default=1.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="keep every run's results here")
    p.add_argument("--json", type=Path, default=None, help="also write the summary as JSON here")
    p.add_argument("--mn-options", default="", metavar="OPTS",
                   help="extra train.py options for the MotherNets runs only, e.g. "
                   "'--hatched-max-epochs 8' (settings full-data does not use); reported with the table")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = args.out or Path(tempfile.mkdtemp(prefix="mn_vs_fd."))
    extra = ["--device", args.device, "--epochs-scale", str(args.epochs_scale)]
    summary: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "specs": {}}
    rows = []
    for spec in args.specs:
        e = load(spec)
        out = compile_ensemble(e, clusters=None, seed=0, source_name=Path(spec).name)
        folder = root / "generated" / e.name
        write_folder(folder, out.files)
        defaults = {"ensemble": e.name, "data": e.data, "train": e.config.model_dump()}
        per: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        for seed in args.seeds:
            for method in METHODS:
                start = time.perf_counter()
                run_out = root / "runs" / e.name / f"{method}-{seed}"
                mine = [*extra, *shlex.split(args.mn_options)] if method == "mothernets" else extra
                doc = run_one(folder, defaults, method, seed, run_out, mine)
                wall = time.perf_counter() - start
                rec = {"seconds": doc["total_seconds"], "error": doc["ensemble"]["error"],
                       "epochs": sum(m["epochs"] for m in doc["models"].values()), "wall": wall}
                per[method].append(rec)
                print(f"{e.name} seed {seed} {method:10s}: train {rec['seconds']:7.1f}s  "
                      f"error {rec['error'] * 100:5.2f}%  epochs {rec['epochs']:4d}  (wall {wall:.0f}s)",
                      flush=True)
        med = {m: {k: statistics.median(r[k] for r in per[m]) for k in ("seconds", "error")} for m in METHODS}
        speedup = med["full-data"]["seconds"] / med["mothernets"]["seconds"]
        gap = (med["mothernets"]["error"] - med["full-data"]["error"]) * 100
        summary["specs"][e.name] = {"runs": per, "median": med, "speedup": speedup, "error_gap_points": gap}
        rows.append([e.name, f"{med['mothernets']['seconds']:.1f}", f"{med['full-data']['seconds']:.1f}",
                     f"{speedup:.2f}x", f"{med['mothernets']['error'] * 100:.2f}",
                     f"{med['full-data']['error'] * 100:.2f}", f"{gap:+.2f}",
                     "yes" if speedup >= 3 and gap <= 1 else "no"])
    print()
    print(f"median of seeds {args.seeds}, epochs scale {args.epochs_scale}, device {args.device}"
          + (f", MotherNets also with {args.mn_options!r}" if args.mn_options else ""))
    print(render(["ensemble", "MN s", "FD s", "speedup", "MN err %", "FD err %", "gap pts", "target met"],
                 rows))
    mn = f" --mn-options {shlex.quote(args.mn_options)}" if args.mn_options else ""
    threads = f" --threads {args.threads}" if args.threads else ""
    print(f"\nrepeat: python bench/mn_vs_fd.py --seeds {' '.join(map(str, args.seeds))} "
          f"--epochs-scale {args.epochs_scale} --device {args.device}{threads}{mn}; runs kept in {root}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
