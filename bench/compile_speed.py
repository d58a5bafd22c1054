"""How long `mncompile` takes on the paper's V100: 100 VGG-16 variants at g = 8.

Run from the repository root::

    python bench/compile_speed.py            # V100, g = 8
    python bench/compile_speed.py 25 4       # V25, g = 4

It times the whole compile (parse and check, clustering and MotherNets, every generated file's
text) and, separately, writing the folder; the target is at most 5 s for V100 at g = 8.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from mncompile.api import loads
from mncompile.compiler import PIPELINE, Compilation, compile_ensemble, run_pipeline
from mncompile.emit import emit_files
from mncompile.table import render
from mncompile.writer import write_folder
from mncompile.zoo import vgg16_variants

TARGET_S = 5.0


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 100
    g = int(argv[1]) if len(argv) > 1 else 8
    text = vgg16_variants(n)
    rows = []
    t0 = time.perf_counter()
    e = loads(text, source=f"v{n}.mnet")
    t1 = time.perf_counter()
    # the passes after check_spec (which loads ran): clusters and MotherNets, tables, share plans
    c = run_pipeline(Compilation(e, clusters=g, seed=0), PIPELINE[1:])
    assert c.plan is not None and c.tables is not None and c.shares is not None
    plan = c.plan
    t2 = time.perf_counter()
    files = emit_files(e, plan, c.tables, c.shares, options={"clusters": g, "seed": 0})
    t3 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_folder(Path(tmp) / f"v{n}", files)
    t4 = time.perf_counter()
    # the library call the CLI makes, end to end, for comparison
    out = compile_ensemble(e, clusters=g, seed=0)
    t5 = time.perf_counter()
    assert out.files == files
    rows.append(["parse + check", f"{t1 - t0:.3f}"])
    rows.append(["cluster + MotherNets, hatching tables, share plans", f"{t2 - t1:.3f}"])
    rows.append(["emit every file (models.py, plan.json, ...)", f"{t3 - t2:.3f}"])
    rows.append(["write the folder", f"{t4 - t3:.3f}"])
    total = t4 - t0
    rows.append(["total", f"{total:.3f}"])
    rows.append(["(compile_ensemble again, warm)", f"{t5 - t4:.3f}"])
    size = sum(len(s.encode()) for s in files.values())
    print(f"V{n} at g = {g}: {len(e.nets)} members, {len(plan.clusters)} MotherNets, "
          f"{len(files)} files, {size / 1024:.0f} KiB")
    print(render(["step", "seconds"], rows))
    verdict = "within" if total <= TARGET_S else "OVER"
    print(f"\n{verdict} the {TARGET_S:.0f} s target")
    return 0 if total <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
