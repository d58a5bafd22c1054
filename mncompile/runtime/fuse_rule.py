"""`--fuse auto|on|off`: whether a run trains its lockstep nets as fused groups (runtime/fused.py).

A fixed rule, never a timing taken at run time, so that results and resumes are reproducible.
`auto` is on for CUDA, where a step of small nets waits on kernel launches. On the CPU, which is
compute-bound, it is on where fused groups measured no slower: runtime/fused.py's `WASTE` fuses
there only plain and residual nets of 1-D inputs (0.93-1.21x unfused, median 1.02x; the others
0.65-0.99x), and `auto` is off for a run with no two such nets in one phase (bench/fused.py;
docs/training.md, 'Fused training'). `on` and `auto` follow the same device rule per group. A resume keeps the
choice its run recorded.

>>> choose_fuse("auto", "cuda:0")
(True, 'auto: on for CUDA')
>>> choose_fuse("on", "cpu")[0], choose_fuse("off", "cuda")[0]
(True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FUSE_CHOICES = ("auto", "on", "off")
CPU_RULE = "on the CPU only plain and residual nets of 1-D inputs fuse, the others were measured slower fused"


def choose_fuse(
    option: str, device: Any, phases: Sequence[Sequence[Any]] | None = None
) -> tuple[bool, str]:
    """Whether to fuse on `device` (a torch.device or its name) for `option`, and why.

    `phases`, where given, are the descriptions of the nets that a run trains together in plain
    lockstep, phase by phase (its method's `lockstep`): `auto` is off on a device where no two nets
    of one phase would fuse (`fused.fuses_on`).
    """
    import torch

    if option not in FUSE_CHOICES:
        raise ValueError(f"--fuse is one of {', '.join(FUSE_CHOICES)}, got {option!r}")
    if option != "auto":
        return option == "on", f"--fuse {option}"
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        return True, "auto: on for CUDA"
    if dev.type != "cpu":
        return False, f"auto: off for {dev.type.upper()} (not measured there)"
    if phases is not None:
        from mncompile.runtime.fused import fuses_on

        if not any(fuses_on(dev, descs) for descs in phases):
            return False, f"auto: off, no two nets that train together in this run fuse ({CPU_RULE})"
    return True, f"auto: on ({CPU_RULE})"


def add_fuse_argument(g: Any) -> None:
    """--fuse (an argument parser or group)."""
    g.add_argument("--fuse", choices=FUSE_CHOICES, default="auto",
                   help="train the nets of a lockstep phase that share a family as fused groups: one "
                   "grouped forward, backward and SGD step per batch for all (same results to float32 "
                   "rounding); on the CPU only plain and residual nets of 1-D inputs fuse (measured, "
                   "docs/training.md); auto is on where two nets that train together would fuse; a "
                   "resume keeps its run's choice (default auto)")
