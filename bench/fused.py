"""Fused lockstep groups against unfused lockstep and sequential training: steps per second.

Times one epoch of a spec's members on random data of its input shape through the one epoch
loop (`runtime.train.fit`), three ways:

- **fused**: `fit(..., fuse=True)`, one grouped forward, backward and SGD step per batch
  (runtime/fused.py);
- **unfused**: `fit(..., fuse=False)`, the shared scan: one batch, each member's own step;
- **sequential**: each member alone over its own pass (`train_sequential`).

Modes alternate over `--repeats` rounds and the median epoch is reported, with the fused /
unfused throughput ratio. The scaling mode (`--members 5,25,100`) times one epoch of K members of
a V25/V100-style ensemble (VGG-16 variants, each changing one layer's filters or kernel,
`mncompile.zoo.vgg16_variant`), at the 1-D scale on the CPU (input 1 x 64, widths divided by
`--width-div`) and on 3 x 32 x 32 on CUDA, against one member trained alone.

    python bench/fused.py                                  # mnist1d, v5-1d, v5 (3x32x32) at 1 and 2 threads
    python bench/fused.py --specs examples/mnist1d.mnet --threads 1 --repeats 5
    python bench/fused.py --members 5,25,100 --threads 1   # scaling with ensemble size
    python bench/fused.py --device cuda                    # on a GPU (bf16 autocast, channels_last)
    python bench/fused.py --waste inf                      # pad every member to the largest (HFTA-style)
    python bench/fused.py --order member                   # each member its own batches (stacked)

It prints the device, torch version and thread count of every figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_SPECS = ["examples/mnist1d.mnet", "examples/v5-1d.mnet", "examples/v5.mnet"]
MODES = ("fused", "unfused", "sequential")


def spec_members(spec: str) -> tuple[list[Any], tuple[int, ...], int]:
    """The member descriptions of a spec (as plan.json describes them), its input shape and classes."""
    from mncompile.api import load
    from mncompile.compiler import compile_ensemble
    from mncompile.formats.ensemble_file import describe_net
    from mncompile.runtime.folder import load_folder
    from mncompile.writer import write_folder

    e = load(str(ROOT / spec))
    with tempfile.TemporaryDirectory(prefix="mncompile-fused-") as tmp:
        write_folder(Path(tmp) / "gen", compile_ensemble(e, clusters=1).files)
        _, plan, _ = load_folder(Path(tmp) / "gen")
    descs = [describe_net(plan.nets[m], plan.input, plan.classes) for m in plan.member_names]
    return descs, tuple(plan.input), plan.classes


def vgg_members(k: int, shape: tuple[int, ...], width_div: int) -> list[Any]:
    """K VGG-16 variants (the paper's V25/V100 recipe) for `shape`, widths divided by `width_div`."""
    from mncompile.formats.ensemble_file import NetDescription
    from mncompile.zoo import vgg16_variant

    out = []
    for i in range(k):
        blocks = tuple(tuple((kern, max(1, f // width_div)) for kern, f in b) for b in vgg16_variant(i))
        out.append(NetDescription("plain", shape, 10, None, blocks, (max(1, 512 // width_div),)))
    return out


def time_epoch(mode: str, descs: Sequence[Any], data: Any, batch: int, device: str,
               order: str = "shared", epochs: int = 1) -> float:
    """Seconds per epoch of `epochs` training epochs of `descs` in `mode` (fresh nets, plain SGD; a
    fused group is built once for them all, as in a run's phase)."""
    import torch

    from mncompile.runtime.jobs import Job, TrainSettings
    from mncompile.runtime.nets import build_net
    from mncompile.runtime.progress import Progress
    from mncompile.runtime.train import fit

    torch.manual_seed(0)
    nets = [build_net(d, f"m{i}") for i, d in enumerate(descs)]
    settings = TrainSettings(batch=batch, lr=0.01, momentum=0.9, weight_decay=5e-4, max_epochs=epochs,
                             patience=0, order=order)
    jobs = [Job(f"m{i}", n, settings) for i, n in enumerate(nets)]
    quiet = Progress(quiet=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    if mode == "sequential":
        for job in jobs:
            fit([job], data, seed=0, device=device, progress=quiet)
    else:
        fit(jobs, data, seed=0, device=device, progress=quiet, fuse=mode == "fused")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / epochs


def measure(descs: Sequence[Any], shape: tuple[int, ...], classes: int, args: argparse.Namespace,
            modes: Sequence[str]) -> dict[str, float]:
    """Median epoch seconds per mode over the rounds (modes alternating), after one warm-up epoch each."""
    from mncompile.runtime.data import load_dataset

    data = load_dataset("synthetic", shape, classes, seed=0, train_size=args.train_size, test_size=8)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for m in modes:
        time_epoch(m, descs, data, args.batch, args.device, args.order)
    for _ in range(args.repeats):
        for m in modes:
            times[m].append(time_epoch(m, descs, data, args.batch, args.device, args.order, args.epochs))
    return {m: statistics.median(v) for m, v in times.items()}


def _peak() -> str:
    import torch

    if not torch.cuda.is_available():
        return ""
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f", peak GPU memory {peak:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="*", default=DEFAULT_SPECS)
    p.add_argument("--threads", nargs="*", type=int, default=[1, 2], help="CPU thread counts (default 1 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--train-size", type=int, default=2048, help="examples per epoch (default 2048)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per mode (default 3)")
    p.add_argument("--epochs", type=int, default=1,
                   help="epochs per timed round, one fused group built for them all as in a run's phase "
                   "(default 1: the build, pack and unpack of a group count in full)")
    p.add_argument("--members", default=None, metavar="K,K,...",
                   help="scaling mode: one epoch of K VGG-16 variants against one member alone")
    p.add_argument("--width-div", type=int, default=8,
                   help="scaling mode on the CPU: VGG-16 widths divided by this (default 8)")
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    p.add_argument("--order", choices=("shared", "member"), default="shared",
                   help="batches: one shared batch per step (default), or each member's own "
                   "(stacked when fused)")
    p.add_argument("--waste", type=float, default=None,
                   help="the padding a fused layer position may add on this device, for every input rank and "
                   "family (runtime/fused.py WASTE: 1 = equal shapes only, inf = every member padded to the "
                   "largest; default the device's, which keeps some groups unfused on the CPU)")
    args = p.parse_args(argv)
    from mncompile.runtime import fused

    kind = args.device.split(":")[0]
    if args.waste is not None:  # every bound of the device: groups it keeps unfused fuse too
        for key in [k for k in fused.WASTE if k.split("-")[0] == kind] or [kind]:
            fused.WASTE[key] = args.waste
    waste = ", ".join(f"{k} {v:g}" for k, v in fused.WASTE.items() if k.startswith(kind))
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench/fused.py: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name() if cuda else "CPU"
    counts = [torch.get_num_threads()] if cuda else args.threads
    print(f"bench/fused.py: device {args.device} ({card}), torch {torch.__version__}, batch {args.batch}, "
          f"{args.train_size} examples per epoch, median of {args.repeats} rounds of {args.epochs} "
          f"epoch(s) per mode, batches {args.order}, fused padding bounds {waste}", flush=True)
    for threads in counts:
        torch.set_num_threads(threads)
        print(f"\n## {threads} CPU thread(s)", flush=True)
        if args.members:
            shape = (3, 32, 32) if cuda else (1, 64)
            div = 1 if cuda else args.width_div
            one = measure(vgg_members(1, shape, div), shape, 10, args, ["unfused"])["unfused"]
            print(f"VGG-16 variants on {'x'.join(map(str, shape))}, widths / {div}: one member alone "
                  f"{one:.3f} s per epoch{_peak()}", flush=True)
            print("| K | fused s | unfused s | fused / one | unfused / one | fused speed-up |")
            print("|---|---|---|---|---|---|")
            for k in (int(v) for v in args.members.split(",")):
                t = measure(vgg_members(k, shape, div), shape, 10, args, ["fused", "unfused"])
                print(f"| {k} | {t['fused']:.3f} | {t['unfused']:.3f} | {t['fused'] / one:.2f}x | "
                      f"{t['unfused'] / one:.2f}x | {t['unfused'] / t['fused']:.2f}x |{_peak()}", flush=True)
            continue
        print("| spec | members | input | " + " | ".join(f"{m} s/epoch" for m in args.modes)
              + " | fused / unfused throughput |")
        print("|---|---|---|" + "---|" * len(args.modes) + "---|")
        for spec in args.specs:
            descs, shape, classes = spec_members(spec)
            if not fused.fuses_on(torch.device(args.device), descs):
                print(f"| {Path(spec).name} | {len(descs)} | {'x'.join(map(str, shape))} | "
                      + " | ".join("-" for _ in args.modes) + " | not fused on this device (runtime/fused.py "
                      "WASTE; --waste 1 times it fused) |", flush=True)
                continue
            t = measure(descs, shape, classes, args, args.modes)
            ratio = (f"{t['unfused'] / t['fused']:.2f}x" if "fused" in t and "unfused" in t else "-")
            print(f"| {Path(spec).name} | {len(descs)} | {'x'.join(map(str, shape))} | "
                  + " | ".join(f"{t[m]:.3f}" for m in args.modes) + f" | {ratio} |{_peak()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
