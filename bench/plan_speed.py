"""How fast is clustering? Plans a 100-member VGG-16-variant ensemble (the paper's V100).

Run:  python bench/plan_speed.py [--members 100] [--restarts 8] [--seed 0]

Prints, for g = 1, 8, m/2 and m, the wall time of one `plan_ensemble` call (fresh caches each time,
best of 3), then the time of the full sweep g = 1..m through one `Planner` (what
`mncompile plan SPEC --clusters sweep` does), with the total edit distance and the estimated cost
ratio. Targets on a 2-core machine: any single g <= 2 s; the full sweep <= 60 s.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

from mncompile.api import loads
from mncompile.cost import estimate
from mncompile.passes.cluster import Planner, plan_ensemble
from mncompile.table import render
from mncompile.zoo import vgg16_variants

SINGLE_TARGET_S = 2.0
SWEEP_TARGET_S = 60.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    m = args.members
    e = loads(vgg16_variants(m))
    print(f"plan speed: {m} VGG-16 variants, restarts {args.restarts}, seed {args.seed}; "
          f"python {platform.python_version()}, {platform.machine()}")
    rows = []
    ok = True
    for g in sorted({1, min(8, m), max(1, m // 2), m}):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            plan = plan_ensemble(e, g, seed=args.seed, restarts=args.restarts)
            times.append(time.perf_counter() - t)
        best = min(times)
        ok &= best <= SINGLE_TARGET_S
        rows.append([g, plan.total_distance, f"{estimate(plan).ratio:.3f}", f"{best:.3f}",
                     f"<= {SINGLE_TARGET_S:g}"])
    print()
    print(render(["g", "total distance", "est. cost ratio", "seconds", "target"], rows))
    t = time.perf_counter()
    plans = list(Planner(e, seed=args.seed, restarts=args.restarts).sweep())
    sweep_s = time.perf_counter() - t
    ok &= sweep_s <= SWEEP_TARGET_S
    print()
    print(f"full sweep g = 1..{m}: {sweep_s:.2f} s (target <= {SWEEP_TARGET_S:g} s); "
          f"total distance from {plans[0].total_distance} (g=1) to {plans[-1].total_distance} (g={m})")
    print(f"{'all targets met' if ok else 'TARGET MISSED'}")
    print(f"repeat: python bench/plan_speed.py --members {m} --restarts {args.restarts} "
          f"--seed {args.seed}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
