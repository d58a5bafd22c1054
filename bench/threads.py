"""How fast does one training step run at 1 thread against more? The measurement behind `--threads auto`.

For each spec's largest member (forward multiply-accumulates per example), times SGD steps
(forward, backward, step) on random data at each thread count, alternating the counts over
`--repeats` rounds, and prints the median milliseconds per step and the ratio to one thread. Run
it once on a quiet machine and once beside other work (`--busy N` starts N single-thread
processes that spin on matrix products for the length of the measurement):

    python bench/threads.py                                   # quiet: mnist1d, v5-1d, v5 (3x32x32)
    python bench/threads.py --busy 3                          # beside three busy processes
    python bench/threads.py --specs examples/v5-1d.mnet --threads 1 2 --batch 128

The step size (G multiply-accumulates = per-example MACs x batch) is printed beside each net:
`runtime/threads.py` trains at one thread up to `ONE_THREAD_MACS`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPECS = ["examples/mnist1d.mnet", "examples/v5-1d.mnet", "examples/v5.mnet"]
#: steps of at least this many multiply-accumulates are timed a fifth as often (seconds each)
BIG_STEP = 5e9


def _spin(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _largest_member(spec: str) -> tuple[str, object, tuple[int, ...], int, int]:
    """(name, class, input shape, classes, MACs per example) of the spec's largest member."""
    from mncompile.api import load
    from mncompile.compiler import compile_ensemble
    from mncompile.runtime.folder import load_folder
    from mncompile.writer import write_folder

    e = load(str(ROOT / spec))
    with tempfile.TemporaryDirectory(prefix="mncompile-threads-") as tmp:
        write_folder(Path(tmp) / "gen", compile_ensemble(e, clusters=1).files)
        models, plan, _ = load_folder(Path(tmp) / "gen")
    name = max(plan.member_names, key=lambda m: plan.macs[m])
    return name, models.MODELS[name], tuple(e.input), e.classes, plan.macs[name]


def _time_steps(cls: object, shape: tuple[int, ...], classes: int, batch: int, steps: int) -> float:
    import torch

    torch.manual_seed(0)
    net = cls().train()  # type: ignore[operator]
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, *shape), torch.randint(0, classes, (batch,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    p.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed steps per round (default 10)")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--busy", type=int, default=0, help="busy single-thread processes beside it")
    a = p.parse_args(argv)
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(a.busy)]
    for s in spinners:
        s.start()
    try:
        print(f"threads bench: torch {torch.__version__}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.2f}, {a.busy} busy process(es) beside it; batch {a.batch}, median of "
              f"{a.steps} steps ({max(2, a.steps // 5)} at {BIG_STEP / 1e9:g} G per step and above) x "
              f"{a.repeats} alternating rounds", flush=True)
        rows = []
        for spec in a.specs:
            name, cls, shape, classes, macs = _largest_member(spec)
            steps = a.steps if macs * a.batch < BIG_STEP else max(2, a.steps // 5)
            ms: dict[int, list[float]] = {t: [] for t in a.threads}
            for _ in range(a.repeats):
                for t in a.threads:
                    torch.set_num_threads(t)
                    ms[t].append(_time_steps(cls, shape, classes, a.batch, steps) * 1000)
            med = {t: statistics.median(v) for t, v in ms.items()}
            cells = [f"{med[t]:.1f} ms ({med[t] / med[a.threads[0]]:.2f}x)" for t in a.threads]
            rows.append([Path(spec).name, name, f"{macs * a.batch / 1e9:.3g}", *cells])
            print("  " + ", ".join(rows[-1]), flush=True)
    finally:
        stop.set()
        for s in spinners:
            s.join(timeout=5)
    from mncompile.table import render

    print(render(["spec", "largest member", "G MACs per step", *(f"{t} thread(s)" for t in a.threads)], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
