"""How close `plan --budget`'s estimate comes to the training time runs measured.

For each spec and each g where a bench folder holds finished runs (mothernets at g; full-data
for g = m), the estimate from a fresh probe and those runs' epoch counts, beside the runs' mean
training time (results.json total_seconds), and the estimate from the spec's caps alone:

    OMP_NUM_THREADS=1 python bench/budget.py examples/mnist1d.mnet=bench-out/mnist1d-16k \\
        examples/v5-1d.mnet=bench-out/v5-1d-16k

Times are wall clock on this machine: probe and runs must see the same load and thread count.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mncompile.api import load  # noqa: E402
from mncompile.budget import Earlier, estimate, find_runs, probe  # noqa: E402
from mncompile.passes.cluster import Planner  # noqa: E402


def main(argv: list[str]) -> int:
    print(f"budget bench: torch {torch.__version__} at {torch.get_num_threads()} thread(s); "
          "probe: 5 timed steps per net")
    print(f"{'spec':<14} {'g':>2} {'runs':>4} {'measured s':>10} {'estimate s':>10} {'error':>7} "
          f"{'caps s':>8} {'caps error':>10}")
    for pair in argv:
        spec, _, folder = pair.partition("=")
        e = load(spec)
        earlier = find_runs(e, [Path(folder) / "runs"])
        n = earlier.train_size()
        if not n:
            raise SystemExit(f"no runs of {spec} in {folder}")
        batches = -(-n // e.config.batch)
        m = len(e.nets)
        for g in Planner(e).g_range:
            method = "full-data" if g == m else "mothernets"
            done = [d["total_seconds"] for d in earlier.runs if d["method"] == method
                    and (g == m or d["info"].get("g") == g)]
            if not done:
                continue
            times = probe(e, g, e.config.batch, 5)
            est = estimate(e, g, times, earlier, batches).seconds
            caps = estimate(e, g, times, Earlier(), batches).seconds
            real = statistics.mean(done)
            print(f"{Path(spec).name:<14} {g:>2} {len(done):>4} {real:>10.0f} {est:>10.0f} "
                  f"{(est / real - 1) * 100:>+6.0f}% {caps:>8.0f} {(caps / real - 1) * 100:>+9.0f}%",
                  flush=True)
    print("repeat: OMP_NUM_THREADS=1 python bench/budget.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
