"""How long hatching takes, against one training epoch of the MotherNet it hatches from.

Hatches every member of an ensemble (default: examples/v5.mnet, one MotherNet per architecture
class as `plan_ensemble` makes by default) from its MotherNet through the hatching tables, and
times a few SGD steps of that MotherNet on CIFAR-10-sized random data (batch 256) to estimate one
epoch of 50,000 images. The target: hatching the whole ensemble costs under 1% of one epoch.

    python bench/hatch_speed.py                       # v5 on the CPU
    python bench/hatch_speed.py --steps 5 --threads 2 --device cpu
    python bench/hatch_speed.py --spec examples/d5.mnet

Prints the per-member hatching times, the epoch estimate and their ratio.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mncompile.api import load  # noqa: E402
from mncompile.emit import load_models, models_source  # noqa: E402
from mncompile.passes.cluster import plan_ensemble  # noqa: E402
from mncompile.passes.hatch_plan import plan_hatching  # noqa: E402
from mncompile.runtime.hatching import hatch  # noqa: E402
from mncompile.shapes import infer_net  # noqa: E402
from mncompile.table import human, render  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(model: nn.Module, input_shape: tuple[int, ...], classes: int, batch: int,
                  images: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds per SGD step (median of `steps`, after one warm-up) and the epoch estimate."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch,) + input_shape, generator=gen).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    times = []
    for i in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return step, step * math.ceil(images / batch)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "examples" / "v5.mnet"))
    ap.add_argument("--steps", type=int, default=3, help="timed SGD steps (after one warm-up)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=50_000, help="images per epoch")
    ap.add_argument("--repeats", type=int, default=3, help="hatching repeats; the best is kept")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    e = load(args.spec)
    t0 = time.perf_counter()
    plan = plan_ensemble(e)
    tables = {(c.index, m): plan_hatching(c.mother, e.net(m), e.input, e.classes, seed=0)
              for c in plan.clusters for m in c.members}
    compile_s = time.perf_counter() - t0
    models = load_models(models_source(e, [c.mother for c in plan.clusters] + list(e.nets))).MODELS

    rows = []
    total = 0.0
    epoch_total = 0.0
    epochs: list[tuple[str, str, str, str]] = []
    for c in plan.clusters:
        torch.manual_seed(0)
        mother = models[c.mother.name]().to(device)
        state = mother.state_dict()
        for name in c.members:
            member = models[name]().to(device)
            table = tables[(c.index, name)]
            hatch(state, table)  # warm-up: first calls pay torch's lazy initialisation
            bare, best = math.inf, math.inf
            for _ in range(args.repeats):
                sync(device)
                t = time.perf_counter()
                hatch(state, table)
                sync(device)
                t1 = time.perf_counter()
                member.load_state_dict(hatch(state, table, noise=0.01, seed=1))
                sync(device)
                bare, best = min(bare, t1 - t), min(best, time.perf_counter() - t1)
            total += best
            params = infer_net(e.net(name), e.input, e.classes).params
            rows.append((name, c.mother.name, human(params), "yes" if table.exact else "no",
                         f"{bare * 1e3:.1f}", f"{best * 1e3:.1f}"))
            del member
        step, epoch = epoch_seconds(mother, tuple(e.input), e.classes, args.batch, args.images,
                                    args.steps, device)
        epoch_total += epoch
        epochs.append((c.mother.name, human(infer_net(c.mother, e.input, e.classes).params),
                       f"{step:.2f}", f"{epoch:.1f}"))
    print(f"{Path(args.spec).name}: {len(e.nets)} members, {len(plan.clusters)} MotherNet(s), "
          f"device {device}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"planning all hatch tables (compile time): {compile_s * 1e3:.1f} ms\n")
    print(render(["member", "MotherNet", "params", "exact", "hatch ms", "hatch+noise+load ms"], rows))
    print()
    print(render(["MotherNet", "params", "s/step", "s/epoch"], epochs))
    ratio = total / epoch_total
    print(f"\nhatching every member (with noise 0.01 and load_state_dict): {total:.3f} s")
    print(f"one epoch of every MotherNet ({args.images} images, batch {args.batch}, "
          f"{args.steps} timed steps scaled): {epoch_total:.1f} s")
    print(f"ratio: {ratio * 100:.3f}% of one MotherNet epoch (target < 1%): "
          f"{'met' if ratio < 0.01 else 'NOT met'}")
    spec = Path(args.spec).resolve()
    shown = spec.relative_to(ROOT) if spec.is_relative_to(ROOT) else spec
    print(f"repeat: python bench/hatch_speed.py --spec {shown} --steps {args.steps} "
          f"--threads {torch.get_num_threads()} --device {args.device}")
    return 0 if ratio < 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
