"""A run's `--out` folder: one run at a time, never a finished run overwritten unasked, no debris.

- `RunFolder(out, ...)` is held for the whole run. It takes an exclusive lock on `OUT/.lock`
  (`fcntl.flock`; the file records the holder's pid): a second run on the same folder gets an
  MNError naming the other run's pid. The operating system releases the lock when its process
  dies, so the lock of a killed run is taken over safely.
- A fresh run into a folder that holds finished results (`results.json`) is refused unless it
  resumes or is forced; the message says what is there: ensemble, method, g, seed, date. A
  forced run removes the old results first, so that they are never taken for its own.
- When a fresh run fails with a user error before it has results (every model diverged, say),
  `discard()` removes what it wrote: its method's checkpoints, and the folder if the run made it.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "run"
>>> with RunFolder(out, method="full-data") as folder:
...     (out / "ckpt").is_dir(), (out / ".lock").read_text().split()[0] == "pid"
(False, True)
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import IO

from mncompile.diagnostics import MNError

LOCK = ".lock"
#: what a finished run leaves in OUT besides its checkpoints
RESULTS = ("results.json", "history.csv", "ensemble.pt", "learning_curves.png")


def default_out(ensemble: str, method: str) -> Path:
    """Where a run goes without --out: one folder per ensemble and method."""
    return Path("runs") / ensemble / method


def finished_run(out: Path) -> str | None:
    """What the finished run in `out` was, in words, or None when there is none."""
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8")).get("info") or {}
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        info = {}
    when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    parts = [f"{k} {info[k]}" for k in ("ensemble", "method", "g", "seed") if info.get(k) is not None]
    return ", ".join([*parts, f"written {when}"])


class RunFolder:
    """The `--out` folder of one run, locked while the run holds it; see the module notes."""

    def __init__(self, out: Path, *, method: str, resume: bool = False, force: bool = False) -> None:
        self.out, self.method, self.resume, self.force = Path(out), method, resume, force
        self.created = False
        self._lock: IO[str] | None = None

    def __enter__(self) -> RunFolder:
        out = self.out
        if out.exists() and not out.is_dir():
            raise MNError(f"--out '{out}' exists and is not a folder", hint="choose another --out")
        self.created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MNError(f"cannot create --out '{out}': {err.strerror or err}",
                          hint="choose a folder you can write to") from None
        try:
            self._take_lock()
            if not self.resume and self.force:
                for name in RESULTS:  # a forced run must not leave the old run's results beside it
                    (out / name).unlink(missing_ok=True)
            if not self.resume and not self.force:
                what = finished_run(out)
                if what is not None:
                    raise MNError(f"--out '{out}' already holds a finished run ({what})",
                                  hint="pass --resume to continue it (a finished run is evaluated again), "
                                  "--force to replace it, or choose another --out")
        except BaseException:
            self._release()
            if self.created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        return self

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs are not locked there
            return
        path = self.out / LOCK
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "pid unknown"
            f.close()
            raise MNError(f"--out '{self.out}' is in use by another run ({holder})",
                          hint="wait for that run to finish, or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        self._lock = f

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def discard(self) -> None:
        """Remove what this fresh run wrote (its checkpoints; the folder if the run made it)."""
        if self.resume:
            return  # a resumed run's checkpoints are the user's earlier work
        if self.created:
            shutil.rmtree(self.out, ignore_errors=True)
            return
        shutil.rmtree(self.out / "ckpt" / self.method, ignore_errors=True)
        ckpt = self.out / "ckpt"
        if ckpt.is_dir() and not any(ckpt.iterdir()):
            ckpt.rmdir()

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release()
