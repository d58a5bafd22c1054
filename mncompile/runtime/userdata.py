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

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mncompile.diagnostics import MNError
from mncompile.runtime.data import (
    Dataset,
    Stream,
    _arrays_digest,
    check_split,
    from_arrays,
    split_rng,
    validation_split,
)

#: the most examples read from one split (an IterableDataset may never end)
MAX_ITEMS = 1_000_000


#: the training examples read into memory from a streamed split: the hatching checks' inputs
PROBE = 256


@dataclass(frozen=True)
class Loader:
    """A training DataLoader to stream from: its map-style dataset, workers, collate function."""

    dataset: Any
    size: int
    batch_size: int
    num_workers: int
    collate_fn: Any
    pin_memory: bool
    first: tuple[np.ndarray, np.ndarray]  # its first examples, read and checked when it is given


@dataclass(frozen=True)
class UserData:
    """The user's splits: CPU arrays, or for train a DataLoader to stream (`val` None: split from
    train by --val-fraction)."""

    label: str
    train: tuple[np.ndarray, np.ndarray] | Loader
    test: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, Loader)

    @property
    def digest(self) -> str:
        """SHA-256 of every array: the run record's identity of the data (resume refuses other data).
        A streamed split counts by its size and first examples (reading it all would cost an epoch)."""
        train = self.train.first if isinstance(self.train, Loader) else self.train
        arrays = {f"{a}_{s}": v for s, pair in (("train", train), ("test", self.test),
                                                ("val", self.val)) if pair is not None
                  for a, v in zip("xy", pair, strict=True)}
        if isinstance(self.train, Loader):
            arrays["streamed_size"] = np.asarray([self.train.size])
        return _arrays_digest(arrays)

    def dataset(self, input_shape: Sequence[int], classes: int, *, seed: int = 0, val_fraction: float = 0.0,
                train_size: int | None = None, test_size: int | None = None) -> Dataset:
        """The `Dataset` a run trains on, checked against the spec's input shape and classes.

        `train_size`/`test_size` keep the first examples. The user's own validation split is used
        as it is; without one, `val_fraction` > 0 holds out a seeded, stratified share of train
        (of a streamed split: a seeded random share, read into memory, since stratifying would
        read every label).
        """
        shape = tuple(int(d) for d in input_shape)
        train = self.train.first if isinstance(self.train, Loader) else self.train
        parts = {"train": train, "test": self.test, "val": self.val}
        for split, pair in parts.items():
            if pair is not None:
                check_split(f"{self.label} ({split})", split, pair[0], pair[1], classes)
        xte, yte = self.test[0][:test_size], self.test[1][:test_size]
        stream = None
        if isinstance(self.train, Loader):
            loader = self.train
            n = min(loader.size, train_size) if train_size is not None else loader.size
            indices = np.arange(n)
            if self.val is not None:
                xva, yva = self.val
            elif val_fraction:
                keep, held = _random_split(n, val_fraction, seed, self.label)
                indices = keep
                xva, yva = _read_items(loader.dataset, held, f"{self.label} (validation)", seed)
            else:
                xva, yva = train[0][:0], train[1][:0]
            xtr, ytr = _read_items(loader.dataset, indices[:PROBE], f"{self.label} (train)", seed)
            check_split(f"{self.label} (train)", "train", xtr, ytr, classes)
            stream = Stream(loader.dataset, torch.as_tensor(indices, dtype=torch.int64), shape, classes,
                            label=self.label, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                            pin_memory=loader.pin_memory)
        else:
            xtr, ytr = train[0][:train_size], train[1][:train_size]
            if self.val is not None:
                xva, yva = self.val
            elif val_fraction:
                keep, held = validation_split(ytr, val_fraction, seed, classes, self.label)
                xtr, ytr, xva, yva = xtr[keep], ytr[keep], xtr[held], ytr[held]
            else:
                xva, yva = xtr[:0], ytr[:0]
        return from_arrays(self.label, shape, classes, (xtr, ytr), (xva, yva), (xte, yte), stream=stream)


def _random_split(n: int, fraction: float, seed: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a seeded random `fraction` of range(n) held out, both sorted."""
    rng = split_rng(fraction, seed)
    k = int(math.floor(fraction * n + 0.5))
    if n - k < 2:
        raise MNError(f"--val-fraction {fraction} leaves {label} with {n - k} training examples",
                      hint="use a smaller --val-fraction or more training examples")
    held = np.sort(rng.permutation(n)[:k])
    return np.setdiff1d(np.arange(n), held, assume_unique=True), held


def _read_items(dataset: Any, indices: Sequence[int] | np.ndarray, where: str,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items `indices` of a map-style dataset, read one by one into arrays. An augmentation in its
    `__getitem__` drawing on torch's generator draws from one seeded by `seed` (the global one's
    state is put back), so the same data reads the same on every run and on resume."""
    return read_split(_Items(dataset, [int(i) for i in indices]), where, seed)


class _Items:
    """A few items of a dataset, as a sequence `read_split` reads."""

    def __init__(self, dataset: Any, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


def user_data(train: Any, test: Any, val: Any = None, label: str = "user data") -> UserData:
    """The user's splits (each `(x, y)`, a Dataset or a DataLoader; `val` may be None). A training
    DataLoader is streamed from every epoch; every other split is read into memory."""
    from torch.utils.data import DataLoader

    if train is None or test is None:
        raise MNError(f"{label}: a training and a test split are needed, got "
                      f"{'no training split' if train is None else 'no test split'}",
                      hint="pass train=(x, y) and test=(x, y), Datasets or DataLoaders")
    read = {s: read_split(v, f"{label} ({s})") for s, v in (("test", test), ("val", val)) if v is not None}
    where = f"{label} (train)"
    split = _loader(train, where) if isinstance(train, DataLoader) else read_split(train, where)
    return UserData(label, split, read["test"], read.get("val"))


def _loader(loader: Any, where: str) -> Loader:
    """A training DataLoader to stream from, its first items read and checked now."""
    from torch.utils.data import IterableDataset

    if isinstance(loader.dataset, IterableDataset):
        raise MNError(f"{where}: the DataLoader reads an IterableDataset, whose order mncompile cannot draw",
                      hint="pass a map-style Dataset (__getitem__ and __len__), or the IterableDataset "
                      "itself to read it into memory")
    _check_loader(loader, where)
    if loader.batch_size is None:
        raise MNError(f"{where}: the DataLoader has batch_size None (no batching)",
                      hint="give it a batch size, or pass its Dataset")
    try:
        size = len(loader.dataset)
    except TypeError:
        raise MNError(f"{where}: the DataLoader's dataset has no len()",
                      hint="give the Dataset __len__") from None
    if size == 0:
        raise MNError(f"{where}: the split is empty")
    first = _read_items(loader.dataset, range(min(size, PROBE)), where)
    return Loader(loader.dataset, size, int(loader.batch_size), int(loader.num_workers), loader.collate_fn,
                  bool(loader.pin_memory), first)


def read_split(obj: Any, where: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One split as arrays (x [N, ...] float32, y [N] int64): `(x, y)`, a Dataset or a DataLoader.

    A Dataset is read item by item with torch's generator seeded by `seed` (its state put back
    after), so that an augmentation in `__getitem__` reads the same on every run.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _read_split(obj, where)


def _read_split(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(obj, DataLoader):  # a validation or test loader: its dataset, read into memory
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
                      hint="pass the DataLoader without it (shuffle=True or False: mncompile's seeded "
                      "sampler takes the shuffle's place), or its Dataset (loader.dataset)")


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


def read_function(name: str) -> UserData:
    """`--data FILE.py:FUNCTION`: import FILE.py, call FUNCTION(), read the (train, val, test) it returns."""
    from mncompile.userfile import call, load_name

    hint = "give --data FILE.py:FUNCTION, FUNCTION() returning (train, val, test); val may be None"
    fn = load_name(name, "--data", hint)
    func = name.rpartition(":")[2]
    if not callable(fn):
        raise MNError(f"--data {name}: '{func}' is a {type(fn).__name__}, not a function", hint=hint)
    value = call(fn, name, "--data")
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        got = (f"{_a(type(value).__name__)} of {len(value)}" if isinstance(value, (tuple, list))
               else _a(type(value).__name__))
        raise MNError(f"--data {name}: {func}() returned {got}, not (train, val, test)", hint=hint)
    train, val, test = value
    return user_data(train, test, val, label=name)
