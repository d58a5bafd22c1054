"""Whole runs, fused against unfused: seconds per epoch per net, peak GPU memory, and the results.

The run half of the GPU check of fused training (bench/gpu_check.sh). Each spec is compiled and
trained with `mncompile run`'s pipeline twice, `--fuse on` and `--fuse off`, on the same data and
seed; the table gives each phase's seconds per net-epoch (its wall time over the epochs its nets
trained, added up), the fused / unfused throughput of that phase, the peak memory torch allocated
on the GPU, and the ensemble's test error, which fused and unfused runs should share to float32
rounding. A short fused run (one epoch a phase) comes first and is not timed: it generates the
data and warms kernels and the allocator for both.

    python bench/gpu_runs.py --device cuda                                  # mnist1d.mnet and v5.mnet
    python bench/gpu_runs.py --device cpu --specs examples/mnist1d.mnet --train-size 512 --test-size 256
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devruns  # noqa: E402  (bench/devruns.py)

ROOT = devruns.ROOT
OFFLINE = ("mnist1d", "digits")  # a spec's data made here; other specs train on synthetic data of their shape


def one_run(
    spec: str, fuse: str, args: argparse.Namespace, root: Path
) -> tuple[dict[str, Any], float, float]:
    """The results of one run of `spec` with `--fuse fuse`, its wall seconds and peak GPU GiB."""
    import torch

    _, folder, defaults = devruns.compile_spec(root, spec)
    argv = [
        "--out",
        str(root / f"run-{fuse}"),
        "--force",
        "--quiet",
        "--device",
        args.device,
        "--fuse",
        fuse,
        "--data",
        defaults["data"] if defaults["data"] in OFFLINE else "synthetic",
        "--train-size",
        str(args.train_size),
        "--test-size",
        str(args.test_size),
        "--epochs-scale",
        str(args.epochs_scale),
        "--seed",
        "0",
    ]
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    results = devruns.run(folder, defaults, argv, quiet_errors=False)
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return results, wall, peak


def per_net_epoch(results: dict[str, Any]) -> dict[str, tuple[float, int, int]]:
    """Per training phase: seconds per net-epoch, its nets and their epochs added up."""
    out = {}
    for phase in results["phases"]:
        names = phase["models"]
        if not names:
            continue
        epochs = sum(int(results["models"][m]["epochs"]) for m in names)
        out[phase["name"]] = (phase["seconds"] / max(1, epochs), len(names), epochs)
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--specs", nargs="*", default=["examples/mnist1d.mnet", "examples/v5.mnet"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument(
        "--epochs-scale", type=float, default=0.1, help="the spec's epoch caps times this (default 0.1)"
    )
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu_runs.py: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"bench/gpu_runs.py: device {args.device} ({card}), torch {torch.__version__}, "
        f"{args.train_size} training and {args.test_size} test "
        f"examples, --epochs-scale {args.epochs_scale:g}, seed 0",
        flush=True,
    )
    print(
        "| spec | phase | nets | fused s per net-epoch | unfused s per net-epoch | fused / unfused "
        "throughput | peak GiB fused / unfused | ensemble error fused / unfused |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.specs:
        with tempfile.TemporaryDirectory(prefix="mncompile-gpu-runs-") as tmp:
            # a warm-up run (one epoch a phase, fused) first: the data cache, kernels and allocator
            # warmed for both, so that neither timed run pays for them
            one_run(spec, "on", argparse.Namespace(**{**vars(args), "epochs_scale": 1e-3}), Path(tmp))
            runs = {f: one_run(spec, f, args, Path(tmp)) for f in ("on", "off")}
        on, off = (per_net_epoch(runs[f][0]) for f in ("on", "off"))
        err = [1 - runs[f][0]["ensemble"]["accuracy"] for f in ("on", "off")]
        for phase, (s_on, nets, _) in on.items():
            s_off = off[phase][0]
            print(
                f"| {Path(spec).name} | {phase} | {nets} | {s_on:.4f} | {s_off:.4f} | {s_off / s_on:.2f}x | "
                f"{runs['on'][2]:.2f} / {runs['off'][2]:.2f} | {err[0]:.4f} / {err[1]:.4f} |",
                flush=True,
            )
        print(
            f"  {Path(spec).name}: whole runs {runs['on'][1]:.1f} s fused, {runs['off'][1]:.1f} s unfused; "
            f"info.fuse {runs['on'][0]['info'].get('fuse')} / {runs['off'][0]['info'].get('fuse')}; "
            f"training threads {runs['on'][0]['info'].get('threads')} / "
            f"{runs['off'][0]['info'].get('threads')}; "
            "the one-net MotherNet phase is the same work in both: its ratio is the noise",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
