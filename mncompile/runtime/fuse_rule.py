"""`--fuse auto|on|off`: whether a run trains its lockstep nets as fused groups (runtime/fused.py).

A fixed rule, never a timing taken at run time, so that results and resumes are reproducible:
`auto` is on for CUDA, where a step of small nets waits on kernel launches, and off for the CPU,
where it is compute-bound and fusing measured no faster (bench/fused.py; docs/training.md,
'Fused training'). A resume keeps the choice its run recorded.

>>> choose_fuse("auto", "cpu")
(False, 'auto: off for the CPU (fused steps measured no faster there)')
>>> choose_fuse("auto", "cuda:0")[0], choose_fuse("on", "cpu")[0]
(True, True)
"""

from __future__ import annotations

from typing import Any

FUSE_CHOICES = ("auto", "on", "off")


def choose_fuse(option: str, device: Any) -> tuple[bool, str]:
    """Whether to fuse on `device` (a torch.device or its name) for `option`, and why."""
    if option not in FUSE_CHOICES:
        raise ValueError(f"--fuse is one of {', '.join(FUSE_CHOICES)}, got {option!r}")
    if option != "auto":
        return option == "on", f"--fuse {option}"
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return True, "auto: on for CUDA"
    return False, f"auto: off for the {kind.upper()} (fused steps measured no faster there)"


def add_fuse_argument(g: Any) -> None:
    """--fuse (an argument parser or group)."""
    g.add_argument("--fuse", choices=FUSE_CHOICES, default="auto",
                   help="train the nets of a lockstep phase that share a family as fused groups: one "
                   "grouped forward, backward and SGD step per batch for all (same results to float32 "
                   "rounding); auto is on for CUDA, off for the CPU (measured, docs/training.md); a resume "
                   "keeps its run's choice (default auto)")
