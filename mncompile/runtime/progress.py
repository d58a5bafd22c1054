"""Progress reporting for training: a tqdm bar on a terminal, one plain line per epoch in logs.

On a terminal each phase (a lockstep group, or one model trained alone) gets one bar counting
mini-batches up to `max_epochs`, with the latest loss and accuracy and tqdm's ETA. Early stopping
can end a phase sooner, so the ETA is an upper bound. When the stream is not a terminal (a log
file, a CI job) bars would be unreadable, so every finished epoch prints one line instead.
`quiet=True` prints nothing.

>>> import io
>>> out = io.StringIO()
>>> p = Progress(stream=out)
>>> p.begin("members", ["a"], max_epochs=2, batches_per_epoch=3)
>>> p.epoch("a", 1, 2, lr=0.1, loss=0.5, acc=0.75, test_acc=None, seconds=0.25)
>>> p.end()
>>> out.getvalue()
'[members] a epoch 1/2  lr 0.1  loss 0.5000  acc 75.00%  0.2s\\n'
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Sequence
from typing import Any, TextIO


class Progress:
    """Reports one training phase at a time; see the module docstring."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, bars: bool | None = None) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.bars = bool(isatty and isatty()) if bars is None else bars
        if bars is None and self.bars and shutil.get_terminal_size((0, 0)).columns < 20:
            # a terminal that reports no width (some pseudo-terminals) would get empty bars
            self.bars = False
        self._bar: Any = None
        self._phase = ""
        self._latest: dict[str, str] = {}

    def begin(
        self,
        phase: str,
        names: Sequence[str],
        max_epochs: int,
        batches_per_epoch: int,
        done_epochs: int = 0,
    ) -> None:
        """Start a phase training `names` for at most `max_epochs` (`done_epochs` already done)."""
        self.end()
        self._phase = phase
        self._latest = {}
        if self.quiet or not self.bars:
            return
        from tqdm import tqdm

        label = phase if len(names) != 1 or names[0] == phase else f"{phase} {names[0]}"
        self._bar = tqdm(
            total=max_epochs * batches_per_epoch,
            initial=done_epochs * batches_per_epoch,
            desc=label,
            unit="batch",
            file=self.stream,
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, batches: int = 1) -> None:
        """Count `batches` mini-batches done (bars only; cheap, no device sync)."""
        if self._bar is not None:
            self._bar.update(batches)

    def epoch(
        self,
        name: str,
        epoch: int,
        max_epochs: int,
        *,
        lr: float,
        loss: float,
        acc: float,
        test_acc: float | None,
        seconds: float,
        val_acc: float | None = None,
    ) -> None:
        """Report model `name`'s finished epoch (1-based)."""
        if self.quiet:
            return
        test = f"  test {test_acc * 100:.2f}%" if test_acc is not None else ""
        test += f"  val {val_acc * 100:.2f}%" if val_acc is not None else ""
        if self._bar is not None:
            self._latest[name] = f"{acc * 100:.1f}%"
            if len(self._latest) == 1:
                self._bar.set_postfix_str(f"ep {epoch} loss {_num(loss)} acc {acc * 100:.2f}%{test}")
            else:
                self._bar.set_postfix_str(
                    f"ep {epoch} " + " ".join(f"{k} {v}" for k, v in self._latest.items())
                )
            return
        self._line(
            f"[{self._phase}] {name} epoch {epoch}/{max_epochs}  lr {lr:.4g}  loss {_num(loss)}  "
            f"acc {acc * 100:.2f}%{test}  {seconds:.1f}s"
        )

    def note(self, text: str) -> None:
        """A one-off message (a model stopped, diverged, resumed) that does not break the bar."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(f"[{self._phase}] {text}", file=self.stream)
        else:
            self._line(f"[{self._phase}] {text}")

    def end(self) -> None:
        """Close the phase's bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _num(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else str(x)
