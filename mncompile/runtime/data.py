"""Datasets as tensors on the device, and a shuffled mini-batch stream without DataLoader.

Every dataset here is small enough to live in (GPU) memory whole: MNIST-1D, scikit-learn's
digits, CIFAR-10/100 and SVHN (about 0.6 GB as float32), an `.npz` file, or a seeded synthetic
task. `load_dataset` checks the data against the spec's input shape and class count before any
training starts; `batches` yields one epoch of shuffled, optionally augmented mini-batches.

>>> ds = load_dataset("synthetic", (1, 8), 3, seed=0, train_size=30, test_size=9)
>>> ds.x_train.shape, ds.y_train.shape, ds.x_test.shape
(torch.Size([30, 1, 8]), torch.Size([30]), torch.Size([9, 1, 8]))
>>> g = torch.Generator().manual_seed(0)
>>> [tuple(x.shape) for x, _ in batches(ds, 16, g)]
[(16, 1, 8), (14, 1, 8)]
"""

from __future__ import annotations

import functools
import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mncompile.diagnostics import MNError
from mncompile.formats.settings import DATASETS, MAX_VAL_FRACTION

KNOWN = (*DATASETS, "npz:PATH")
SYNTHETIC_SIZES = (512, 256)
PAD = 4  # pixels of zero padding for the random crop (the usual CIFAR recipe)


@dataclass(frozen=True)
class Stream:
    """A training split read from the user's map-style Dataset every epoch, batch by batch.

    It comes from a user's DataLoader (`mncompile.runtime.userdata`), whose workers, collate
    function and pin_memory it keeps; the order is mncompile's: each epoch a permutation of
    `indices` from the epoch's generator, so every model of a lockstep group trains from each
    batch as it is read (one read and one augmentation per batch for the group) and `--resume`
    reads the same batches. The batch size is the run's (the loader's, unless --batch is given).
    """

    dataset: Any
    indices: torch.Tensor  # int64: the examples of the split, as indices into `dataset`
    input_shape: tuple[int, ...]
    classes: int
    label: str = "user data"
    num_workers: int = 0
    collate_fn: Any = None
    pin_memory: bool = False

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, idx: torch.Tensor) -> Stream:
        """The stream of examples `idx` of this one (a bootstrap sample)."""
        return replace(self, indices=self.indices[idx.cpu()])

    def batches(self, batch_size: int, generator: torch.Generator,
                device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch: a permutation from `generator`, read through a DataLoader; a final batch of
        one example is dropped. Augmentation drawing on torch's random numbers is seeded by the
        generator: in the workers by the loader's seed, in this process by a seed of its own,
        with the global generator's state put back after the epoch."""
        from torch.utils.data import DataLoader

        n = len(self.indices)
        order = self.indices[torch.randperm(n, generator=generator)].tolist()
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        loader = DataLoader(self.dataset, batch_size=batch_size, sampler=order, num_workers=self.num_workers,
                            collate_fn=self.collate_fn, pin_memory=self.pin_memory and device is not None
                            and torch.device(device).type == "cuda",
                            generator=torch.Generator().manual_seed(seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for k, batch in enumerate(loader):
                x, y = self.check(batch, k)
                if len(y) < 2 and n > 1:
                    break
                if device is not None:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                yield x, y

    def check(self, batch: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A loaded batch as (x float32 [b, *input_shape], y int64 [b]); MNError naming it otherwise."""
        where = f"{self.label} (train), batch {k}"
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise MNError(f"{where}: the loader gave {type(batch).__name__}, not an (x, y) pair",
                          hint="the Dataset's items must be (input, label), and the collate function "
                          "must keep them so")
        x, y = (torch.as_tensor(v) for v in batch)
        if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                     torch.int64)):
            raise MNError(f"{where}: the inputs have dtype {x.dtype}; expected numbers")
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1 or len(y) != len(x):
            raise MNError(f"{where}: the labels have dtype {y.dtype} and shape {_shape(tuple(y.shape))}; "
                          f"expected [{len(x)}] integer class indices")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.classes):
            raise MNError(f"{where}: labels from {int(y.min())} to {int(y.max())}, but the ensemble has "
                          f"classes {self.classes} (labels 0..{self.classes - 1})")
        shape = tuple(x.shape[1:])
        if shape != self.input_shape:
            if math.prod(shape) != math.prod(self.input_shape):
                raise MNError(f"{where}: inputs of shape {_shape(shape)}, but the ensemble's input is "
                              f"{_shape(self.input_shape)}")
            x = x.reshape(len(x), *self.input_shape)
        return x.float(), y.long()


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test tensors of one task; `image_shape` is the shape augmentation works in.

    The validation split (`x_val`, `y_val`) is held out of the training set by `load_dataset`'s
    `val_fraction`; it is empty (0 examples) when there is none, the paper's setting. With
    `stream`, the training split is read from the user's Dataset every epoch instead, and
    `x_train`/`y_train` hold only its first examples (the hatching checks' inputs).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    augment: bool = False
    image_shape: tuple[int, ...] | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    stream: Stream | None = None

    @property
    def train_size(self) -> int:
        """The number of training examples (streamed or in memory)."""
        return len(self.stream) if self.stream is not None else len(self.y_train)

    def take(self, idx: torch.Tensor) -> Dataset:
        """The same task with training examples `idx` (with repeats: a bootstrap sample)."""
        if self.stream is not None:
            return replace(self, stream=self.stream.take(idx))
        idx = idx.to(self.x_train.device)
        return replace(self, x_train=self.x_train[idx], y_train=self.y_train[idx])

    @property
    def val_size(self) -> int:
        """The number of validation examples (0: no split)."""
        return 0 if self.y_val is None else len(self.y_val)

    @property
    def has_val(self) -> bool:
        """Whether there is a validation split to watch."""
        return self.val_size > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-example shape, as the spec's `input` says."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on `device` (a no-op when it is already there)."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
            x_val=None if self.x_val is None else self.x_val.to(device),
            y_val=None if self.y_val is None else self.y_val.to(device),
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _fit(name: str, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """`x` reshaped to [N, *input_shape]; a reshape is allowed only when the sizes agree."""
    native = tuple(x.shape[1:])
    if native == tuple(input_shape):
        return x
    if math.prod(native) != math.prod(input_shape):
        raise MNError(
            f"dataset '{name}' has inputs of shape {_shape(native)}, but the ensemble's input is "
            f"{_shape(tuple(input_shape))}",
            hint=f"write 'input {_shape(native)}' in the spec, or use data of that shape",
        )
    return x.reshape(len(x), *input_shape)


def _check_classes(name: str, native: int, classes: int) -> None:
    if native != classes:
        raise MNError(
            f"dataset '{name}' has {native} classes, but the ensemble says classes {classes}",
            hint=f"write 'classes {native}' in the spec, or pick another dataset",
        )


def _standardise(x_train: np.ndarray, *others: np.ndarray, axes: tuple[int, ...]) -> tuple:
    """Every split shifted and scaled by the training split's statistics over `axes`."""
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    std = np.where(std > 1e-8, std, 1.0)
    return tuple((x - mean) / std for x in (x_train, *others))


def split_rng(fraction: float, seed: int) -> np.random.Generator:
    """The validation split's generator, of `seed` alone; MNError when `fraction` is outside
    (0, MAX_VAL_FRACTION]."""
    if not (0 < fraction <= MAX_VAL_FRACTION) or not math.isfinite(fraction):
        raise MNError(f"--val-fraction must be above 0 and at most {MAX_VAL_FRACTION}, got {fraction}",
                      hint="0 (no split, the paper's setting) is given as --val-fraction 0")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, 0x5A11D])))


def validation_split(y: np.ndarray, fraction: float, seed: int, classes: int,
                     name: str = "the data") -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a seeded, stratified split holding out `fraction` of each class.

    Each class gives round(fraction * its count) examples to the validation split, drawn by a
    generator of `seed` alone, so the split is the same for every training seed. Both index
    arrays are sorted, keeping the examples' order; too few examples to hold out any give an
    empty validation split. MNError when `fraction` is outside (0, MAX_VAL_FRACTION] or a class
    would be left without training examples.

    >>> tr, va = validation_split(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.25, 0, 2)
    >>> len(tr), len(va), sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[va].tolist())
    (7, 3, [0, 1, 1])
    """
    rng = split_rng(fraction, seed)
    val: list[np.ndarray] = []
    for c in range(classes):
        idx = np.flatnonzero(y == c)
        if len(idx) == 0:
            continue
        k = int(math.floor(fraction * len(idx) + 0.5))
        if k >= len(idx):
            raise MNError(
                f"--val-fraction {fraction} leaves class {c} of {name} without training examples "
                f"(it has {len(idx)}, all of which would go to validation)",
                hint="use a smaller --val-fraction or more training examples (--train-size)")
        val.append(rng.permutation(idx)[:k])
    held = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(y)), held.astype(np.int64), assume_unique=True)
    return keep, held.astype(np.int64)


#: MNIST-1D's own split: 4000 training and 1000 test examples (make_dataset's defaults)
MNIST1D_SIZES = (4000, 1000)


@functools.lru_cache(maxsize=4)
def _mnist1d(seed: int, num_samples: int | None = None,
             train_split: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    if num_samples is not None:
        args.num_samples, args.train_split = num_samples, train_split
    # make_dataset seeds numpy's global RNG; give the caller theirs back untouched
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def cache_dir() -> Path:
    """Where generated data is cached: $MNCOMPILE_CACHE, else $XDG_CACHE_HOME/mncompile, else
    ~/.cache/mncompile."""
    if os.environ.get("MNCOMPILE_CACHE"):
        return Path(os.environ["MNCOMPILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mncompile"


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _mnist1d_sized(seed: int, train: int, test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D with `train` + `test` examples: make_dataset(num_samples, train_split), cached on disk.

    make_dataset draws num_samples // 10 examples per class, so the count is rounded up to a
    multiple of 10 and the splits are cut to the sizes asked for. The cache file is keyed by the
    arguments and the mnist1d version, and holds a digest of its arrays: a file that does not
    match its key or its digest is generated again, never trusted.
    """
    import hashlib
    import importlib.metadata
    import json
    import sys

    from mncompile.runtime.checkpoint import atomic_write

    total = -(-(train + test) // 10) * 10
    # int(total * split) is make_dataset's cut; + 0.5 makes it exactly `train` whatever the rounding
    split = (train + 0.5) / total
    key = json.dumps({"dataset": "mnist1d", "version": importlib.metadata.version("mnist1d"), "seed": seed,
                      "num_samples": total, "train_split": split}, sort_keys=True)
    path = cache_dir() / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    names = ("x", "y", "x_test", "y_test")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in names}
                stored_key, digest = bytes(z["key"]).decode(), str(z["digest"])
            if stored_key == key and digest == _arrays_digest(arrays):
                return tuple(arrays[k] for k in names)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - a damaged cache file is regenerated, whatever is wrong
            pass
        print(f"note: the cached MNIST-1D at {path} is damaged or stale; generating it again",
              file=sys.stderr, flush=True)
    print(f"generating MNIST-1D: {train} training and {test} test examples (seed {seed}; cached in "
          f"{path.parent})", file=sys.stderr, flush=True)
    xtr, ytr, xte, yte = _mnist1d(seed, total, split)
    arrays = {"x": xtr[:train], "y": ytr[:train], "x_test": xte[:test], "y_test": yte[:test]}
    try:
        payload = {**arrays, "key": np.frombuffer(key.encode(), dtype=np.uint8),
                   "digest": np.array(_arrays_digest(arrays))}
        atomic_write(path, lambda f: np.savez(f, **payload))
    except OSError as err:  # a read-only home: the data is still usable, only not cached
        print(f"note: cannot cache MNIST-1D in {path.parent} ({err.strerror or err})", file=sys.stderr)
    return tuple(arrays[k] for k in names)  # type: ignore[return-value]


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise MNError(
            "dataset 'digits' needs scikit-learn, which is not installed",
            hint="pip install scikit-learn (or pip install 'mncompile[digits]')",
        ) from e
    bunch = load_digits()
    x = bunch.data.astype(np.float64) / 16.0
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    split = int(len(y) * 0.8)
    tr, te = order[:split], order[split:]
    return x[tr], y[tr], x[te], y[te]


def _download_hint(name: str, root: str) -> str:
    cls = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN"}[name]
    how = (
        f"torchvision.datasets.{cls}('{root}', split=s, download=True) for s in ('train', 'test')"
        if name == "svhn"
        else f"torchvision.datasets.{cls}('{root}', train=t, download=True) for t in (True, False)"
    )
    return (
        f"download it once on a machine with internet: pip install torchvision, then in Python "
        f"`import torchvision; [{how}]`, and pass that folder as --data-dir"
    )


def _need_dir(name: str, data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        raise MNError(
            f"dataset '{name}' is read from files on disk, but no data directory was given",
            hint=_download_hint(name, "DATA_DIR"),
        )
    return Path(data_dir)


#: the only globals an official CIFAR batch (cPickle of a dict of lists, strings and one uint8
#: array) refers to; anything else in a batch file is refused, so that no data file runs code
_CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _Refused(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch; any other global (a function to call, say) is an UnpicklingError."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise _Refused(f"it refers to {module}.{name}, which a CIFAR batch never holds")
        return super().find_class(module, name)


def _unpickle(path: Path, name: str, root: Path) -> dict:
    if not path.is_file():
        raise MNError(
            f"dataset '{name}': file {path} not found",
            hint=_download_hint(name, str(root)),
        )
    try:
        with open(path, "rb") as f:
            data = _BatchUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise MNError(f"dataset '{name}': refused to read {path}: {e}; a data file may not run code",
                      hint="use the batch files of the official CIFAR python version: "
                      + _download_hint(name, str(root))) from None
    except Exception as e:  # any other unpickling failure: the file is not what torchvision wrote
        raise MNError(f"dataset '{name}': cannot read {path}: {type(e).__name__}: {e}",
                      hint=_download_hint(name, str(root))) from None
    if not isinstance(data, dict):
        raise MNError(f"dataset '{name}': {path} holds a {type(data).__name__}, not a CIFAR batch",
                      hint=_download_hint(name, str(root)))
    return data


def _cifar(name: str, data_dir: str | os.PathLike[str] | None) -> tuple:
    """CIFAR in the 'python version' layout that torchvision downloads; no torchvision needed."""
    root = _need_dir(name, data_dir)
    if name == "cifar10":
        folder, train_files, test_files, key = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "labels",
        )
    else:
        folder, train_files, test_files, key = root / "cifar-100-python", ["train"], ["test"], "fine_labels"

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(folder / f, name, root)
            if "data" not in d or key not in d:
                raise MNError(f"dataset '{name}': {folder / f} lacks 'data' or '{key}'")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _svhn(data_dir: str | os.PathLike[str] | None) -> tuple:
    """SVHN's cropped-digit .mat files (train_32x32.mat, test_32x32.mat), read with scipy."""
    from scipy.io import loadmat

    root = _need_dir("svhn", data_dir)
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        if not path.is_file():
            raise MNError(f"dataset 'svhn': file {path} not found", hint=_download_hint("svhn", str(root)))
        try:
            mat = loadmat(str(path))
            x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)  # HWCN -> NCHW
            y = mat["y"].astype(np.int64).reshape(-1)
        except Exception as e:
            raise MNError(
                f"dataset 'svhn': cannot read {path}: {e}", hint=_download_hint("svhn", str(root))
            ) from e
        y[y == 10] = 0  # SVHN labels the digit 0 as 10
        out += [x, y]
    return tuple(out)


def check_split(where: str, split: str, x: np.ndarray, y: np.ndarray, classes: int) -> None:
    """MNError naming `where` unless `x` is [N, ...] numbers, finite, and `y` [N] integer labels
    0..classes-1, with N > 0 (the npz files' and the user data's checks)."""
    if x.dtype.kind not in "fiu":
        raise MNError(f"{where}: x_{split} has dtype {x.dtype}; inputs must be numbers")
    if y.dtype.kind not in "iu":
        raise MNError(
            f"{where}: y_{split} has dtype {y.dtype}; labels must be integers",
            hint="store class indices 0..classes-1 as an integer array",
        )
    if y.ndim != 1 or x.ndim < 2 or len(x) != len(y):
        raise MNError(
            f"{where}: x_{split} has shape {x.shape} and y_{split} has shape {y.shape}; expected "
            f"[N, ...] inputs and [N] labels with the same N",
        )
    if len(y) == 0:
        raise MNError(f"{where}: the {split} split is empty")
    if y.min() < 0 or y.max() >= classes:
        raise MNError(
            f"{where}: y_{split} holds labels from {y.min()} to {y.max()}, but the ensemble has "
            f"classes {classes} (labels 0..{classes - 1})",
            hint=f"write 'classes {int(y.max()) + 1}' in the spec, or relabel the data",
        )
    if not np.isfinite(x).all():
        raise MNError(f"{where}: x_{split} contains NaN or infinite values")


def _npz(path_text: str, classes: int) -> tuple:
    path = Path(path_text)
    how = "write it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
    if path.is_dir():
        raise MNError(f"dataset npz:{path_text}: {path} is a folder, not an .npz file",
                      hint="give npz:PATH to the .npz file itself")
    if not path.is_file():
        raise MNError(f"dataset file {path} not found", hint="give npz:PATH to an existing .npz file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(b"PK"):  # numpy.savez writes a zip file
        what = "a single .npy array" if magic.startswith(b"\x93NUMPY") else "not a zip file"
        raise MNError(f"cannot read {path} as an .npz archive: it is {what}", hint=how)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        # numpy's own text advises allow_pickle=True, which would let the file run code: never
        why = ("it holds pickled Python objects, which mncompile never loads" if "pickle" in str(e)
               else str(e))
        raise MNError(f"cannot read {path} as an .npz archive: {why}", hint=how) from None
    except Exception as e:  # zipfile.BadZipFile, OSError, ...: not an archive numpy can read
        raise MNError(f"cannot read {path} as an .npz archive ({type(e).__name__}: {e})", hint=how) from None
    need = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in need if k not in arrays]
    if missing:
        raise MNError(
            f"{path} lacks the array(s) {', '.join(missing)} (it has: {', '.join(sorted(arrays)) or 'none'})",
            hint="the archive needs x_train, y_train, x_test and y_test",
        )
    for split in ("train", "test"):
        check_split(str(path), split, arrays[f"x_{split}"], arrays[f"y_{split}"], classes)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise MNError(
            f"{path}: x_train examples have shape {_shape(arrays['x_train'].shape[1:])} but x_test "
            f"examples have shape {_shape(arrays['x_test'].shape[1:])}"
        )
    return tuple(arrays[k] for k in need)


def _synthetic(
    input_shape: tuple[int, ...], classes: int, seed: int, train_size: int, test_size: int
) -> tuple:
    """Gaussian classes: each class has its own random mean pattern; unit noise on top.

    The pattern's scale grows for small inputs so that class means stay about 4 noise standard
    deviations apart (a task a small net learns well, but not perfectly at once).
    """
    rng = np.random.default_rng(seed)
    scale = max(0.5, 3.0 / math.sqrt(math.prod(input_shape)))
    means = rng.standard_normal((classes, *input_shape)) * scale
    out: list[np.ndarray] = []
    for n in (train_size, test_size):
        y = rng.integers(0, classes, size=n)
        x = means[y] + rng.standard_normal((n, *input_shape))
        out += [x, y]
    return tuple(out)


def load_dataset(
    name: str,
    input_shape: tuple[int, ...],
    classes: int,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    val_fraction: float = 0.0,
) -> Dataset:
    """Load dataset `name` as CPU tensors shaped [N, *input_shape], checked against the spec.

    Names: `mnist1d` (generated with MNIST-1D's default arguments and `seed`; pass seed 42 for
    the canonical set), `digits` (scikit-learn; seeded 80/20 split), `cifar10`, `cifar100`, `svhn`
    (files under `data_dir` as torchvision downloads them; `augment` is on), `npz:PATH`, and
    `synthetic`. `train_size`/`test_size` set the synthetic sizes (default 512/256); for MNIST-1D
    above its own 4000/1000 they generate that many examples (`make_dataset` with num_samples =
    train + test, cached on disk: `cache_dir()`); otherwise they keep only the first examples of
    each split (for quick runs). `val_fraction` > 0 then holds out that share of the training
    examples, stratified by class and seeded by `seed` (`validation_split`); standardised data
    (digits, CIFAR, SVHN) is scaled by the statistics of the examples left for training.
    A shape or class count that does not match the spec raises `MNError` naming both.
    """
    input_shape = tuple(int(d) for d in input_shape)
    augment = False
    standardise: tuple[int, ...] | None = None  # the axes of per-channel statistics, when scaled
    image_shape: tuple[int, ...] | None = None
    if name == "mnist1d":
        _check_classes(name, 10, classes)
        train, test = train_size or MNIST1D_SIZES[0], test_size or MNIST1D_SIZES[1]
        if train > MNIST1D_SIZES[0] or test > MNIST1D_SIZES[1]:
            # more than MNIST-1D's own split: generate that many (below it: its first examples)
            xtr, ytr, xte, yte = _mnist1d_sized(seed, train, test)
        else:
            xtr, ytr, xte, yte = _mnist1d(seed)
    elif name == "digits":
        _check_classes(name, 10, classes)
        xtr, ytr, xte, yte = _digits(seed)
        xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
        standardise = (0, 1, 2, 3)  # one mean and std over every pixel
    elif name in ("cifar10", "cifar100", "svhn"):
        _check_classes(name, 100 if name == "cifar100" else 10, classes)
        # check the shape before reading 170 MB, so a wrong spec fails at once
        _fit(name, np.empty((0, 3, 32, 32)), input_shape)
        xtr, ytr, xte, yte = _svhn(data_dir) if name == "svhn" else _cifar(name, data_dir)
        xtr, xte = xtr.astype(np.float32) / 255, xte.astype(np.float32) / 255
        standardise = (0, 2, 3)
        augment, image_shape = True, (3, 32, 32)
    elif name.startswith("npz:"):
        xtr, ytr, xte, yte = _npz(name[4:], classes)
    elif name == "synthetic":
        xtr, ytr, xte, yte = _synthetic(
            input_shape,
            classes,
            seed,
            SYNTHETIC_SIZES[0] if train_size is None else train_size,
            SYNTHETIC_SIZES[1] if test_size is None else test_size,
        )
    else:
        raise MNError(f"unknown dataset '{name}'", hint="known datasets: " + ", ".join(KNOWN))
    if name != "synthetic":
        xtr, ytr = xtr[:train_size], ytr[:train_size]
        xte, yte = xte[:test_size], yte[:test_size]
    xva, yva = xtr[:0], ytr[:0]
    if val_fraction:
        keep, held = validation_split(np.asarray(ytr), val_fraction, seed, classes, f"dataset '{name}'")
        if len(held) == 0:
            import sys

            print(f"note: --val-fraction {val_fraction} of {len(ytr)} training examples holds out none; "
                  "training without a validation split", file=sys.stderr, flush=True)
        xtr, ytr, xva, yva = xtr[keep], ytr[keep], xtr[held], ytr[held]
    if standardise is not None:
        xtr, xva, xte = _standardise(xtr, xva, xte, axes=standardise)
    return from_arrays(name, input_shape, classes, (xtr, ytr), (xva, yva), (xte, yte), augment=augment,
                       image_shape=image_shape)


Pair = tuple[np.ndarray, np.ndarray]


def from_arrays(name: str, input_shape: tuple[int, ...], classes: int, train: Pair, val: Pair, test: Pair,
                **kwargs: Any) -> Dataset:
    """A Dataset of (x, y) array pairs, inputs reshaped to `input_shape` (`_fit`), as float32 and
    int64 tensors; `kwargs` are Dataset's other fields."""
    (xtr, ytr), (xva, yva), (xte, yte) = train, val, test
    xtr, xva, xte = (_fit(name, x, input_shape) for x in (xtr, xva, xte))

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return Dataset(name=name, x_train=tensor(xtr, torch.float32), y_train=tensor(ytr, torch.int64),
                   x_test=tensor(xte, torch.float32), y_test=tensor(yte, torch.int64), classes=classes,
                   x_val=tensor(xva, torch.float32), y_val=tensor(yva, torch.int64), **kwargs)


def augment_batch(
    x: torch.Tensor, generator: torch.Generator, image_shape: tuple[int, ...] | None = None
) -> torch.Tensor:
    """Random crop after 4-pixel zero padding, and a random horizontal flip, per example.

    The random numbers come from `generator` (on the CPU, so a seed means the same crops on any
    device); the crop itself is one gather on `x`'s device. `image_shape` (C, H, W) lets
    flattened images be augmented in their image form.
    """
    shape = tuple(x.shape)
    if image_shape is not None:
        x = x.reshape(len(x), *image_shape)
    if x.dim() != 4:
        raise ValueError(f"augmentation needs [N, C, H, W] images, got shape {shape}")
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD))
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = offsets[:, 1:2] + torch.arange(w, device=x.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    out = padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows,
        cols,
    ]
    return out.reshape(shape)


def batches(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    augment: bool | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled mini-batches of the training split, as (inputs, labels).

    One permutation per call from `generator`; batches are index gathers on the data's own device
    (move the dataset there once with `Dataset.to`). `augment` defaults to the dataset's flag.
    A final batch of a single example is dropped: BatchNorm cannot train on one example.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if dataset.stream is not None:
        yield from dataset.stream.batches(batch_size, generator, device)
        return
    augment = dataset.augment if augment is None else augment
    x_all, y_all = dataset.x_train, dataset.y_train
    if device is not None and x_all.device != torch.device(device):
        x_all, y_all = x_all.to(device), y_all.to(device)
    n = len(y_all)
    order = torch.randperm(n, generator=generator).to(x_all.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2 and n > 1:
            break
        x = x_all[idx]
        if augment:
            x = augment_batch(x, generator, dataset.image_shape)
        yield x, y_all[idx]


def num_batches(dataset: Dataset, batch_size: int) -> int:
    """How many batches `batches` yields per epoch."""
    n = dataset.train_size
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 or (rest == 1 and n == 1) else 0)
