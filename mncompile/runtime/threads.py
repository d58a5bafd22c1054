"""How many CPU threads torch trains with: `--threads auto|N`.

On a CPU, torch's default is one thread per core. For the small nets this project trains on
CPUs that breaks down beside any other busy process: the threads wait on each other. Measured
on a 2-core machine (docs/training.md, "CPU threads"; `python bench/threads.py`): beside four
other training processes, two threads were 1.14-2.9x slower than one for every net up to
12.7 G multiply-accumulates per step; on the quiet machine they were 1.16-2.1x faster.

`auto` (the default) is a fixed rule, never a timing taken at run time, so that a run and its
resume train at the same count: on a CPU, one thread when the largest net's step (forward
multiply-accumulates per example x batch) is at most `ONE_THREAD_MACS` (where one thread's
worst case, on a quiet machine, is milder than two threads' on a busy one), torch's default
above it; on CUDA, or when the environment sets OMP_NUM_THREADS, torch's count as it is. A
number sets it outright. The count is set for the run only (put back afterwards) and recorded
in results.json (`info.threads`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: the largest step, in forward multiply-accumulates (per example x batch), that trains at one
#: thread under `auto`: measured (docs/training.md, "CPU threads")
ONE_THREAD_MACS = 2_000_000_000
#: the most threads `--threads N` takes
MAX_THREADS = 1024


def threads_arg(text: str) -> str | int:
    """argparse type of --threads: 'auto' or a positive count."""
    import argparse

    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number of threads, got '{text}'") from None
    if not 1 <= n <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"the number of threads must be from 1 to {MAX_THREADS}, got {n}")
    return n


def add_threads_argument(g: Any) -> None:
    """--threads (an argument parser or group)."""
    g.add_argument("--threads", type=threads_arg, default="auto", metavar="auto|N",
                   help="CPU threads torch trains with: auto (one for nets whose step is at most "
                   f"{ONE_THREAD_MACS / 1e9:g} G multiply-accumulates, torch's default above, or as "
                   "OMP_NUM_THREADS says; measured, docs/training.md) or N (default auto)")


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of one example through `model`'s convolutions and
    linear layers (counted with hooks on an eval-mode pass, so any module works)."""
    import torch
    from torch import nn

    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            total += output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output[0].numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def choose_threads(option: str | int | None, device: torch.device | str,
                   largest_macs: Callable[[], int], batch: int) -> tuple[int, str]:
    """The thread count of a run and why: (count, reason). `largest_macs()` gives the forward
    multiply-accumulates per example of the run's largest net; it is called only when the rule
    needs it."""
    import torch

    if option not in (None, "auto"):
        return int(option), "--threads"
    current = torch.get_num_threads()
    kind = device if isinstance(device, str) else device.type
    if kind != "cpu":
        return current, f"torch's default ({kind})"
    if os.environ.get("OMP_NUM_THREADS"):
        return current, "OMP_NUM_THREADS"
    step = largest_macs() * batch
    limit = f"{ONE_THREAD_MACS / 1e9:g} G"
    what = f"auto: the largest net's step is {step / 1e9:.3g} G multiply-accumulates"
    if step <= ONE_THREAD_MACS:
        return 1, f"{what}, at most {limit}"
    return current, f"{what}, above {limit}"


def largest_net_macs(builders: Iterable[Callable[[], nn.Module]], input_shape: tuple[int, ...]) -> int:
    """The most forward multiply-accumulates per example among the nets `builders` make (0 for
    none). Each is built on the meta device (no memory, no initialisation) where it can be."""
    import torch

    most = 0
    for build in builders:
        try:
            with torch.device("meta"):
                most = max(most, forward_macs(build(), input_shape))
        except (NotImplementedError, RuntimeError):
            most = max(most, forward_macs(build(), input_shape))
    return most


@contextlib.contextmanager
def cpu_threads(count: int) -> Iterator[int]:
    """Train at `count` threads inside the block; torch's count before it is put back after."""
    import torch

    if count < 1:
        raise MNError(f"the number of threads must be positive, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)
