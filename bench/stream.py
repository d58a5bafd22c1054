"""The shared scan when reading costs something: K nets from one DataLoader stream, against the
same K nets trained one after another (K passes over the data).

The data is MNIST-1D (`mncompile.runtime.data.load_dataset`, data seed 0), written to disk one
file per example as a compressed NumPy archive (`numpy.savez_compressed`: a zip entry that
`np.load` opens and inflates on every read), read by a map-style Dataset whose `__getitem__`
opens, decodes and adds Gaussian noise from torch's generator (an augmentation). Training goes
through the Python API (`mncompile.compile(...).fit`), `--method full-data`, a fixed number of
epochs (`patience 0`), no validation split, on the CPU, with the spec's nets
(default: examples/mnist1d.mnet, its 5 members):

- `lockstep`: the default, unfused (`fuse="off"`); every batch is read once and all K nets step on
  it, each its own step;
- `sequential`: `sequential=True`; each net has its own pass, K reads of every batch.

Both get the same batches in the same order (same seeds), so they train the same weights
(`same results`: the two ensembles' test metrics are identical); the ratio is their training
wall time (results.json's `total_seconds`: the epoch loops,
reading included). `read` is one pass of the same loader alone (no training), timed apart,
and `steps` is what is left of a lockstep epoch: training time minus read time. Each setting runs
`--repeats` times, alternating the two; medians are printed.

    OMP_NUM_THREADS=1 python bench/stream.py                      # workers 0 and 2, 3 epochs
    python bench/stream.py --workers 0 --epochs 1 --train-size 600  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

import mncompile  # noqa: E402
from mncompile.runtime.data import load_dataset  # noqa: E402


class Files(Dataset):
    """One file per example: each read opens and decodes it, then augments it.

    `npz`: a compressed NumPy archive of the 1x40 signal (inflated on read). `png`: the signal as
    an 8-bit grayscale image `scale` times larger in each direction (a row of 40 x scale pixels,
    `scale` rows), decoded with Pillow and averaged back down to 1x40 on read: the decode-and-
    resize of an image pipeline.
    """

    def __init__(self, folder: Path, n: int, noise: float, fmt: str, scale: int, labels: np.ndarray,
                 lo: float, hi: float) -> None:
        self.paths = [folder / f"{i:06d}.{fmt}" for i in range(n)]
        self.noise, self.fmt, self.scale, self.labels, self.lo, self.hi = noise, fmt, scale, labels, lo, hi

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.fmt == "npz":
            with np.load(self.paths[i]) as z:
                x = torch.from_numpy(z["x"])
        else:
            from PIL import Image

            with Image.open(self.paths[i]) as im:
                a = np.asarray(im, dtype=np.float32)
            s = self.scale
            a = a.reshape(s, 40, s).mean(axis=(0, 2)) / 255.0  # back down to 40 values
            x = torch.from_numpy((a * (self.hi - self.lo) + self.lo).astype(np.float32)).reshape(1, 40)
        return x + self.noise * torch.randn(x.shape), int(self.labels[i])


def write_files(folder: Path, x: np.ndarray, y: np.ndarray, fmt: str, scale: int) -> tuple[float, float]:
    folder.mkdir(parents=True, exist_ok=True)
    lo, hi = float(x.min()), float(x.max())
    for i in range(len(y)):
        if fmt == "npz":
            np.savez_compressed(folder / f"{i:06d}.npz", x=x[i], y=np.int64(y[i]))
        else:
            from PIL import Image

            row = np.round((x[i].reshape(40) - lo) / (hi - lo) * 255).astype(np.uint8)
            img = np.repeat(np.repeat(row[None, :, None], scale, 0), scale, 2).reshape(scale, 40 * scale)
            Image.fromarray(img, mode="L").save(folder / f"{i:06d}.png")
    return lo, hi


def read_pass(ds: Dataset, batch: int, workers: int) -> float:
    """Seconds of one pass of the loader alone (mncompile's sampler order)."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()  # type: ignore[arg-type]
    loader = DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def train(ens: Any, ds: Dataset, test: tuple[torch.Tensor, torch.Tensor], batch: int, workers: int,
          epochs: int, sequential: bool, out: Path) -> dict[str, Any]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run = ens.fit(DataLoader(ds, batch_size=batch, num_workers=workers), test, method="full-data",
                      out=str(out), force=True, quiet=True, val_fraction=0, max_epochs=epochs, patience=0,
                      sequential=sequential, fuse="off")
    return run.results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", default=str(ROOT / "examples" / "mnist1d.mnet"))
    p.add_argument("--workers", default="0,2", help="DataLoader num_workers to try (default 0,2)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--noise", type=float, default=0.05, help="augmentation noise std (default 0.05)")
    p.add_argument("--format", choices=("npz", "png"), default="npz",
                   help="npz: a compressed archive per example; png: an image `--scale` times larger, "
                   "decoded and resized on read (needs Pillow)")
    p.add_argument("--scale", type=int, default=8, help="png: the image is 40*S x S pixels (default 8)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]
    ens = mncompile.compile(args.spec, clusters=1)
    k = len(ens.members)
    ds_mem = load_dataset("mnist1d", (1, 40), 10, seed=0, train_size=args.train_size,
                          test_size=args.test_size)
    what = ("compressed .npz file" if args.format == "npz"
            else f"{40 * args.scale}x{args.scale} PNG image, decoded and resized on read,")
    print(f"stream bench: torch {torch.__version__}, {torch.get_num_threads()} thread(s); {k} nets of "
          f"{Path(args.spec).name} (full-data), {args.train_size} MNIST-1D examples as one {what} each, "
          f"batch {args.batch}, {args.epochs} epochs, noise {args.noise}; {args.repeats} alternating "
          "repeats; medians", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mncompile-stream-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        labels = ds_mem.y_train.numpy()
        lo, hi = write_files(root / "files", ds_mem.x_train.numpy(), labels, args.format, args.scale)
        print(f"wrote {args.train_size} files in {time.perf_counter() - start:.1f}s", flush=True)
        ds = Files(root / "files", args.train_size, args.noise, args.format, args.scale, labels, lo, hi)
        test = (ds_mem.x_test, ds_mem.y_test)
        for w in workers:
            times: dict[str, list[float]] = {"lockstep": [], "sequential": [], "read": []}
            docs: dict[str, dict[str, Any]] = {}
            for r in range(args.repeats):
                for mode in ("lockstep", "sequential"):
                    doc = train(ens, ds, test, args.batch, w, args.epochs, mode == "sequential", root / mode)
                    times[mode].append(doc["total_seconds"])
                    docs[mode] = doc
                    print(f"  workers {w} repeat {r + 1} {mode}: {doc['total_seconds']:.1f}s "
                          f"(error {doc['ensemble']['error'] * 100:.2f}%)", flush=True)
                times["read"].append(read_pass(ds, args.batch, w))
            med = {m: statistics.median(v) for m, v in times.items()}
            same = docs["lockstep"]["ensemble"] == docs["sequential"]["ensemble"]
            steps = med["lockstep"] / args.epochs - med["read"]
            rows.append((w, med["lockstep"], med["sequential"], med["sequential"] / med["lockstep"],
                         med["read"], steps, same))
    print()
    print(f"{'workers':>7}  {'lockstep s':>10}  {'sequential s':>12}  {'ratio':>6}  {'read s/epoch':>12}  "
          f"{'steps s/epoch':>13}  same results")
    for w, lock, seq, ratio, read, steps, same in rows:
        print(f"{w:>7}  {lock:>10.1f}  {seq:>12.1f}  {ratio:>5.2f}x  {read:>12.2f}  {steps:>13.2f}  {same}")
    print()
    print("lockstep: one read of each batch for the K nets; sequential: K reads. ratio = sequential / "
          "lockstep training wall time. read: one loader pass alone; steps: a lockstep epoch minus it "
          "(the K nets' forward, backward and SGD steps)")
    given = sys.argv[1:] if argv is None else argv
    print("repeat: OMP_NUM_THREADS=1 python bench/stream.py " + " ".join(given))
    return 0


if __name__ == "__main__":
    sys.exit(main())
