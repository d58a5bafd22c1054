"""How long `mncompile` takes on n VGG-16 variants (the paper's V25, V100, and larger) at one g.

Run from the repository root::

    python bench/compile_speed.py               # V100, g = 8
    python bench/compile_speed.py 2000 8        # 2000 variants, g = 8
    python bench/compile_speed.py 25 4 --repeats 3

It times each stage of the compile (parse and check, then each pass of
`mncompile.compiler.PIPELINE`, then rendering every file), writing the folder, and the total, in
wall-clock and CPU seconds (CPU seconds move less on a shared machine), and says where it ran.
The target is a total of at most `--target` seconds (default 10: 2000 nets at g = 8 on a 2-core
machine; V100 takes well under 1 s). With `--repeats R` it compiles R times and reports the run
with the smallest total. Exit status 1 when over the target.

Variants past the 39th grow (more filters, kernel 7 and up), so a few thousand of them exceed
the default parameter limit by far (2000 variants: 81G parameters in the largest): the
benchmark lifts the limit (`max_params=None`, what `--max-params none` does). It measures how
the compiler scales, not a spec anyone would train.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from mncompile.api import loads
from mncompile.compiler import PIPELINE, Compilation, compile_ensemble
from mncompile.emit import emit_files
from mncompile.quiet_gc import paused_gc
from mncompile.table import render
from mncompile.writer import write_folder
from mncompile.zoo import vgg16_variants

T = TypeVar("T")


def machine() -> str:
    """The machine in one line: platform, CPU model, CPUs usable, load, Python."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.system()} {platform.machine()}, {model}, {usable} CPUs usable "
            f"({os.cpu_count()} in all){load}; Python {platform.python_version()}")


class Stopwatch:
    """Wall-clock and CPU seconds of each stage, in order."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def time(self, name: str, fn: Callable[[], T]) -> T:
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        self.rows.append((name, time.perf_counter() - t, time.process_time() - c))
        return out

    @property
    def total(self) -> float:
        return sum(r[1] for r in self.rows)


def compile_once(n: int, g: int, text: str) -> tuple[Stopwatch, dict[str, str], Compilation]:
    """One compile of `text`, stage by stage, and the folder written to a temporary directory."""
    w = Stopwatch()
    e = w.time("parse + check", lambda: loads(text, source=f"v{n}.mnet", max_params=None))
    # the passes after check_spec (which loads ran): clusters and MotherNets, tables, share plans;
    # the garbage collector paused as compile_ensemble pauses it
    c = Compilation(e, clusters=g, seed=0, max_params=None)
    with paused_gc():
        for p in PIPELINE[1:]:
            c = w.time(p.__name__, partial(p, c))
        assert c.plan is not None and c.tables is not None and c.shares is not None
        plan, tables, shares = c.plan, c.tables, c.shares
        files = w.time("emit every file", lambda: emit_files(e, plan, tables, shares,
                                                             options={"clusters": g, "seed": 0}))
    with tempfile.TemporaryDirectory() as tmp:
        w.time("write the folder", lambda: write_folder(Path(tmp) / f"v{n}", files))
    return w, files, c


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("n", nargs="?", type=int, default=100, help="number of nets (default 100)")
    p.add_argument("g", nargs="?", type=int, default=8, help="number of MotherNets (default 8)")
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="compile R times (default 1)")
    p.add_argument("--target", type=float, default=10.0, metavar="S",
                   help="the most seconds the total may take (default 10)")
    args = p.parse_args(argv)
    n, g = args.n, args.g
    text = vgg16_variants(n)
    print(f"machine: {machine()}")
    runs = [compile_once(n, g, text) for _ in range(max(1, args.repeats))]
    w, files, c = min(runs, key=lambda r: r[0].total)
    assert c.plan is not None
    # the library call the CLI makes, end to end, once more: the same files (caches warm)
    t = time.perf_counter()
    out = compile_ensemble(c.ensemble, clusters=g, seed=0, max_params=None)
    warm = time.perf_counter() - t
    assert out.files == files
    rows: list[list[object]] = [[name, f"{wall:.3f}", f"{cpu:.3f}"] for name, wall, cpu in w.rows]
    rows.append(["total", f"{w.total:.3f}", f"{sum(r[2] for r in w.rows):.3f}"])
    rows.append(["(compile_ensemble again, warm)", f"{warm:.3f}", ""])
    size = sum(len(s.encode()) for s in files.values())
    print(f"threads: {threading.active_count()} (the compiler runs in one)")
    print(f"V{n} at g = {g}: {len(c.ensemble.nets)} nets, {len(c.plan.clusters)} MotherNets, "
          f"{len(files)} files, {size / 1024:.0f} KiB"
          + (f"; best of {len(runs)} runs: " + ", ".join(f"{r[0].total:.2f}" for r in runs)
             if len(runs) > 1 else ""))
    print(render(["stage", "seconds", "CPU seconds"], rows))
    verdict = "within" if w.total <= args.target else "OVER"
    print(f"\n{n} nets, g = {g}: {w.total:.2f} s, {verdict} the {args.target:g} s target")
    return 0 if w.total <= args.target else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
