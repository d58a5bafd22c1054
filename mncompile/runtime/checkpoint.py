"""Atomic, self-checking training checkpoints that load with `torch.load(weights_only=True)`.

One file per model, `<dir>/<name>.pt`, rewritten after every epoch: the model's `state_dict`, the
optimizer's, and `meta`, a dict of plain Python values (epoch, seed, settings, early-stopping
state, history). It is written to a temporary file and moved over the old one with `os.replace`,
so an interrupt (Ctrl-C, a killed job) leaves either the old or the new checkpoint, never half of
one. Loading checks the format, the tensor names and shapes, and reports any problem as an
`MNError` naming the file.

>>> import tempfile, torch
>>> net = torch.nn.Linear(2, 3)
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
>>> path = Path(tempfile.mkdtemp()) / "net.pt"
>>> save_checkpoint(path, net, opt, {"epoch": 1})
>>> load_checkpoint(path, torch.nn.Linear(2, 3))["epoch"]
1
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mncompile.diagnostics import MNError

FORMAT = "mncompile-checkpoint"
#: 2: one meta layout for every method (identity: settings, extras and seed)
VERSION = 2
_DELETE_HINT = "delete this file to retrain that model from scratch, or restore it from a backup"


def checkpoint_path(directory: str | os.PathLike[str], name: str) -> Path:
    """Where model `name`'s checkpoint lives inside `directory`."""
    return Path(directory) / f"{name}.pt"


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary file, then move it over `path`: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged archives; all mean the same here
        raise MNError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {e})", hint=_DELETE_HINT
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MNError(f"{path} is not an mncompile checkpoint", hint=_DELETE_HINT)
    if payload.get("version") != VERSION:
        raise MNError(
            f"checkpoint {path} has format version {payload.get('version')}, this mncompile reads {VERSION}",
            hint=_DELETE_HINT,
        )
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
