"""Data the user brings: per split, tensors `(x, y)`, a `torch.utils.data.Dataset`, or a
`DataLoader`; or, from the command line, `--data FILE.py:FUNCTION`, a function that returns the
three splits `(train, val, test)`.

Each split is read once, item by item, into CPU arrays and checked as the built-in datasets are
(the spec's input shape, integer labels 0..classes-1, finite inputs, no empty split) before
anything trains; the run then trains from memory, exactly as on the built-in data, so batch
order, `--resume` and every method and engine work unchanged. A DataLoader's dataset is read
(its sampler must be the default one, since mncompile draws the batch order itself); an
augmentation inside the Dataset's `__getitem__` is then applied once, when the item is read.

`--data FILE.py:FUNCTION` imports FILE.py and calls FUNCTION(): it runs the user's own code, the
one file mncompile ever executes, and only when the user names it.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mncompile.diagnostics import MNError
from mncompile.runtime.data import Dataset, _arrays_digest, _fit, check_split, validation_split

#: the most examples read from one split (an IterableDataset may never end)
MAX_ITEMS = 1_000_000
SPLITS = ("train", "val", "test")


def is_function_data(name: str) -> bool:
    """Whether a --data value names a Python function: FILE.py:FUNCTION."""
    path, sep, func = name.rpartition(":")
    return bool(sep) and path.endswith(".py") and bool(func)


@dataclass(frozen=True)
class UserData:
    """The user's splits as CPU arrays (`val` None: split from train by --val-fraction)."""

    label: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of every array: the run record's identity of the data (resume refuses other data)."""
        arrays = {f"{a}_{s}": v for s, pair in (("train", self.train), ("test", self.test),
                                                ("val", self.val)) if pair is not None
                  for a, v in zip("xy", pair, strict=True)}
        return _arrays_digest(arrays)

    def dataset(self, input_shape: Sequence[int], classes: int, *, seed: int = 0, val_fraction: float = 0.0,
                train_size: int | None = None, test_size: int | None = None) -> Dataset:
        """The `Dataset` a run trains on, checked against the spec's input shape and classes.

        `train_size`/`test_size` keep the first examples. The user's own validation split is used
        as it is; without one, `val_fraction` > 0 holds out a seeded, stratified share of train.
        """
        shape = tuple(int(d) for d in input_shape)
        parts = {"train": self.train, "test": self.test, "val": self.val}
        for split, pair in parts.items():
            if pair is not None:
                check_split(f"{self.label} ({split})", split, pair[0], pair[1], classes)
        (xtr, ytr), (xte, yte) = self.train, self.test
        xtr, ytr, xte, yte = xtr[:train_size], ytr[:train_size], xte[:test_size], yte[:test_size]
        if self.val is not None:
            xva, yva = self.val
        elif val_fraction:
            keep, held = validation_split(ytr, val_fraction, seed, classes, self.label)
            xtr, ytr, xva, yva = xtr[keep], ytr[keep], xtr[held], ytr[held]
        else:
            xva, yva = xtr[:0], ytr[:0]
        xtr, xva, xte = (_fit(self.label, x, shape) for x in (xtr, xva, xte))

        def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

        return Dataset(name=self.label, x_train=tensor(xtr, torch.float32), y_train=tensor(ytr, torch.int64),
                       x_test=tensor(xte, torch.float32), y_test=tensor(yte, torch.int64), classes=classes,
                       x_val=tensor(xva, torch.float32), y_val=tensor(yva, torch.int64))


def user_data(train: Any, test: Any, val: Any = None, label: str = "user data") -> UserData:
    """Read the user's splits (each `(x, y)`, a Dataset or a DataLoader; `val` may be None)."""
    if train is None or test is None:
        raise MNError(f"{label}: a training and a test split are needed, got "
                      f"{'no training split' if train is None else 'no test split'}",
                      hint="pass train=(x, y) and test=(x, y), Datasets or DataLoaders")
    read = {s: read_split(v, f"{label} ({s})") for s, v in (("train", train), ("test", test), ("val", val))
            if v is not None}
    return UserData(label, read["train"], read["test"], read.get("val"))


def read_split(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as arrays (x [N, ...] float32, y [N] int64): `(x, y)`, a Dataset or a DataLoader."""
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(obj, DataLoader):
        _check_loader(obj, where)
        obj = obj.dataset
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(_is_array(v) for v in obj):
        x, y = (_as_array(v, where, what) for v, what in zip(obj, ("inputs", "labels"), strict=True))
        return _typed(x, y, where)
    if isinstance(obj, (str, bytes)) or not (hasattr(obj, "__getitem__") and hasattr(obj, "__len__")
                                             or isinstance(obj, IterableDataset)):
        raise MNError(f"{where}: got {type(obj).__name__}; a split is (x, y) tensors or arrays, a "
                      "torch.utils.data.Dataset of (x, y) items, or a DataLoader")
    items = iter(obj) if isinstance(obj, IterableDataset) else (obj[i] for i in range(len(obj)))
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for i, item in enumerate(items):
        if i >= MAX_ITEMS:
            raise MNError(f"{where}: more than {MAX_ITEMS:,} items", hint="pass a finite Dataset")
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            what = (f"{_a(type(item).__name__)} of {len(item)}" if isinstance(item, (tuple, list))
                    else _a(type(item).__name__))
            raise MNError(f"{where}: item {i} is {what}, not an (x, y) pair",
                          hint="each item must be (input tensor, integer label)")
        xs.append(_as_array(item[0], f"{where} item {i}", "input"))
        ys.append(_label(item[1], f"{where} item {i}"))
    if not xs:
        raise MNError(f"{where}: the split is empty")
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        first = xs[0].shape
        odd = next(i for i, x in enumerate(xs) if x.shape != first)
        raise MNError(f"{where}: items have different input shapes: item 0 is {_shape(first)}, "
                      f"item {odd} is {_shape(xs[odd].shape)}")
    return _typed(np.stack(xs), np.asarray(ys, dtype=np.int64), where)


def _check_loader(loader: Any, where: str) -> None:
    from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

    custom = (type(loader.sampler) not in (SequentialSampler, RandomSampler)
              or (loader.batch_sampler is not None and type(loader.batch_sampler) is not BatchSampler))
    if custom:
        raise MNError(f"{where}: the DataLoader has a sampler of its own "
                      f"({type(loader.sampler).__name__}); mncompile draws the batch order itself, "
                      "seeded by (seed, epoch), so that --resume is exact",
                      hint="pass its Dataset instead (loader.dataset); batch size and augmentation come "
                      "from the spec and the Dataset")


def _a(noun: str) -> str:
    """'a tuple', 'an int'."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _is_array(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, np.ndarray))


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape)) if len(shape) else "scalar"


def _as_array(v: Any, where: str, what: str) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.is_complex() or v.dtype == torch.bool:
            raise MNError(f"{where}: the {what} has dtype {v.dtype}; expected real numbers")
        return v.numpy()
    try:
        a = np.asarray(v)
    except Exception as err:  # noqa: BLE001 - whatever the user's object raises, say what it was
        raise MNError(f"{where}: the {what} ({type(v).__name__}) is not an array: {err}") from None
    if a.dtype.kind not in "fiu":
        raise MNError(f"{where}: the {what} has dtype {a.dtype} ({type(v).__name__}); expected numbers")
    return a


def _label(v: Any, where: str) -> int:
    a = _as_array(v, where, "label")
    if a.size != 1:
        raise MNError(f"{where}: the label has shape {_shape(a.shape)}; expected one integer class index")
    value = a.reshape(()).item()
    if a.dtype.kind == "f":
        if not (math.isfinite(value) and float(value).is_integer()):
            raise MNError(f"{where}: the label {value} is not a class index",
                          hint="labels are integers 0..classes-1")
    return int(value)


def _typed(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if x.dtype.kind not in "fiu":
        raise MNError(f"{where}: the inputs have dtype {x.dtype}; expected numbers")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y) & (y == np.round(y))):
            raise MNError(f"{where}: the labels are not all integers",
                          hint="labels are integers 0..classes-1")
        y = y.astype(np.int64)
    if x.ndim == 1:
        x = x[:, None]  # one feature per example
    return x.astype(np.float32, copy=False), y


def _with_detail(error: MNError, detail: BaseException) -> MNError:
    error.detail = detail
    return error


def read_function(name: str) -> UserData:
    """`--data FILE.py:FUNCTION`: import FILE.py, call FUNCTION(), read the (train, val, test) it returns."""
    path_text, _, func = name.rpartition(":")
    path = Path(path_text)
    hint = "give --data FILE.py:FUNCTION, FUNCTION() returning (train, val, test); val may be None"
    if not path.is_file():
        raise MNError(f"--data {name}: {path} is not a file" + (" (it is a folder)" if path.is_dir() else ""),
                      hint=hint)
    if not func.isidentifier():
        raise MNError(f"--data {name}: '{func}' is not a Python name", hint=hint)
    module_name = f"_mncompile_user_data_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MNError(f"--data {name}: cannot import {path}", hint=hint)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        error = MNError(f"--data {name}: importing {path} raised {type(err).__name__}: {err}",
                        hint="fix the file (mncompile --debug ... shows the traceback)")
        raise _with_detail(error, err) from err
    fn = getattr(module, func, None)
    if not callable(fn):
        names = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_")
                       and v.__module__ == module_name)
        raise MNError(f"--data {name}: {path} has no function '{func}'",
                      hint="its functions: " + (", ".join(names) or "none"))
    try:
        value = fn()
    except Exception as err:
        error = MNError(f"--data {name}: {func}() raised {type(err).__name__}: {err}",
                        hint="fix the function (mncompile --debug ... shows the traceback)")
        raise _with_detail(error, err) from err
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        got = (f"{_a(type(value).__name__)} of {len(value)}" if isinstance(value, (tuple, list))
               else _a(type(value).__name__))
        raise MNError(f"--data {name}: {func}() returned {got}, not (train, val, test)", hint=hint)
    train, val, test = value
    return user_data(train, test, val, label=name)
