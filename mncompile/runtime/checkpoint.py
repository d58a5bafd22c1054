"""Atomic, self-checking training checkpoints that load with `torch.load(weights_only=True)`.

One file per model, `<dir>/<name>.pt`, rewritten after every epoch: the model's `state_dict`, the
optimizer's, and `meta`, a dict of plain Python values (epoch, seed, settings, early-stopping
state, history), and `checksum`, a SHA-256 over all of them. It is written to a temporary file
of its own (a unique name: two writers never share one) and moved over the old one with
`os.replace`, so an interrupt (Ctrl-C, a killed job) leaves either the old or the new checkpoint,
never half of one. Loading checks the format, the checksum (a flipped byte in a tensor is caught),
the tensor names and shapes, and reports any problem as an `MNError` naming the file.

>>> import tempfile, torch
>>> net = torch.nn.Linear(2, 3)
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
>>> path = Path(tempfile.mkdtemp()) / "net.pt"
>>> save_checkpoint(path, net, opt, {"epoch": 1})
>>> load_checkpoint(path, torch.nn.Linear(2, 3))["epoch"]
1
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mncompile.diagnostics import MNError

FORMAT = "mncompile-checkpoint"
#: 2: one meta layout for every method (identity: settings, extras and seed), and a checksum
VERSION = 2
_DELETE_HINT = "delete this file to retrain that model from scratch, or restore it from a backup"


def checkpoint_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Where model `name`'s checkpoint lives inside `directory`."""
    return Path(directory) / f"{name}.pt"


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary file, then move it over `path`: readers never see half.

    The temporary file has a unique name beside `path`, so that two writers never share one; it
    is removed when `write` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def digest(value: Any) -> str:
    """SHA-256 of nested dicts, lists, tensors and plain values: what a checksum covers.

    Dict keys are taken in sorted order (by their repr), tensors by dtype, shape and bytes, so
    the same content always gives the same digest.

    >>> import torch
    >>> digest({"a": torch.ones(2), "b": [1, "x"]}) == digest({"b": [1, "x"], "a": torch.ones(2)})
    True
    >>> digest({"a": torch.ones(2)}) == digest({"a": torch.tensor([1.0, 1.5])})
    False
    """
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            h.update(b"{")
            for k in sorted(v, key=repr):
                h.update(repr(k).encode())
                feed(v[k])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                feed(x)
            h.update(b"]")
        else:
            h.update(f"{type(v).__name__}:{v!r};".encode())

    feed(value)
    return h.hexdigest()


def check_digest(payload: dict[str, Any], path: Path, hint: str) -> None:
    """Raise MNError naming `path` unless `payload["checksum"]` is the digest of the rest."""
    stored = payload.get("checksum")
    rest = {k: v for k, v in payload.items() if k != "checksum"}
    if not isinstance(stored, str) or stored != digest(rest):
        raise MNError(f"{path} is damaged: its contents do not match the checksum stored with it", hint=hint)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
) -> None:
    """Save model, optimizer and `meta` (plain Python values only) to `path`, atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "meta": meta,
    }
    payload["checksum"] = digest(payload)
    atomic_write(path, lambda f: torch.save(payload, f))


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str | None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and isinstance(found[k], torch.Tensor) and tuple(found[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else ""))
    if shapes:
        parts.append("shape of " + "; ".join(shapes[:4]) + " (checkpoint vs model)")
    return "; ".join(parts) or None


def safe_load(path: Path, what: str, hint: str) -> Any:
    """`torch.load(path, weights_only=True)`: tensors and plain values only, never code.

    A file that holds anything else (a pickled object whose loading would call a function) and
    a damaged one are MNErrors naming the file; torch's advice to load it with
    weights_only=False is never passed on.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:GLOBAL|global:?) ([\w.]+)", str(e))
        if found:
            raise MNError(f"{what} {path} holds a Python object ({found.group(1)}) other than tensors and "
                          "plain values; mncompile never loads those (a file it reads may not run code)",
                          hint=hint) from None
        raise MNError(f"{what} {path} is corrupt or truncated (UnpicklingError)", hint=hint) from None
    except Exception as e:  # torch raises many types for damaged archives; all mean the same here
        first = str(e).splitlines()[0] if str(e) else ""
        raise MNError(f"{what} {path} is corrupt or truncated ({type(e).__name__}: {first})",
                      hint=hint) from None


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Read the checkpoint at `path`, load it into `model`/`optimizer` if given, return its meta.

    A missing, corrupt, truncated or foreign file, or one whose tensors do not fit `model`, is an
    `MNError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MNError(f"checkpoint {path} not found", hint="train without resuming to create it")
    payload = safe_load(path, "checkpoint", _DELETE_HINT)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MNError(f"{path} is not an mncompile checkpoint", hint=_DELETE_HINT)
    if payload.get("version") != VERSION:
        raise MNError(
            f"checkpoint {path} has format version {payload.get('version')}, this mncompile reads {VERSION}",
            hint=_DELETE_HINT,
        )
    check_digest(payload, path, _DELETE_HINT)
    state, meta = payload.get("model"), payload.get("meta")
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise MNError(f"checkpoint {path} lacks its model state or meta data", hint=_DELETE_HINT)
    if model is not None:
        problem = _mismatch(model.state_dict(), state)
        if problem:
            raise MNError(
                f"checkpoint {path} does not fit model '{type(model).__name__}': {problem}",
                hint="the spec or the generated models changed since it was written; " + _DELETE_HINT,
            )
        model.load_state_dict(state)
    if optimizer is not None:
        opt_state = payload.get("optimizer")
        if opt_state is None:
            raise MNError(f"checkpoint {path} holds no optimizer state", hint=_DELETE_HINT)
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise MNError(f"checkpoint {path}: optimizer state does not fit: {e}", hint=_DELETE_HINT) from e
    return meta
