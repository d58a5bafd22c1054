"""Steady-state SGD steps of a spec's members, fused against unfused, without the epoch's pack.

bench/fused.py times whole epochs through `fit`, so short epochs carry the group's build, pack
and unpack. This times single steps of an already packed group (the device's own padding
bound, `runtime/fused.py` WASTE, unless `--waste` says otherwise) against the members' own
steps, alternating, after one warm-up step each:

    python bench/fused_steady.py                                  # v5.mnet, batch 128, 1 thread
    python bench/fused_steady.py --spec examples/v5-1d.mnet --waste 1 --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.nn.functional as F
    from fused import spec_members  # bench/fused.py

    from mncompile.runtime.fused import FusedGroup, member_losses, waste_for
    from mncompile.runtime.nets import build_net

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spec", default="examples/v5.mnet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--waste",
        type=float,
        default=None,
        help="padding bound (default: the CPU's for the rank, at least 0)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    descs, shape, classes = spec_members(args.spec)
    rule = waste_for(torch.device("cpu"), len(shape) - 1, descs[0].family)
    waste = args.waste if args.waste is not None else max(0.0, rule)
    torch.manual_seed(0)
    nets = [build_net(d) for d in descs]
    opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for n in nets]
    group = FusedGroup(descs, waste=waste)
    group.pack(nets, opts)
    x, y = torch.randn(args.batch, *shape), torch.randint(0, classes, (args.batch,))
    unused = torch.zeros(len(descs))

    def fused() -> None:
        loss = member_losses(group(x), y)
        group.zero_grad(set_to_none=True)
        loss.sum().backward()
        group.sgd_step(unused, unused, unused, (0.01, 0.9, 5e-4))

    def unfused() -> None:
        for net, opt in zip(nets, opts, strict=True):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    times: dict[str, list[float]] = {"fused": [], "unfused": []}
    fused()
    unfused()
    for _ in range(args.steps):
        for name, step in (("fused", fused), ("unfused", unfused)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    m = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"bench/fused_steady.py: CPU, torch {torch.__version__}, {args.threads} thread(s), batch "
        f"{args.batch}, padding bound {waste:g}, median of {args.steps} alternating steps after one warm-up "
        "each"
    )
    print(
        f"{Path(args.spec).name}, {len(descs)} members: fused {m['fused']:.3f} s/step, unfused "
        f"{m['unfused']:.3f} s/step, fused / unfused throughput {m['unfused'] / m['fused']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
