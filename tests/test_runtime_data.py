"""Datasets, shape/class checks and the mini-batch stream of mncompile.runtime.data."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mncompile.diagnostics import MNError
from mncompile.runtime.data import Dataset, augment_batch, batches, load_dataset, num_batches


def test_synthetic_is_seeded_shaped_and_learnable() -> None:
    a = load_dataset("synthetic", (1, 4, 4), 3, seed=1)
    b = load_dataset("synthetic", (1, 4, 4), 3, seed=1)
    c = load_dataset("synthetic", (1, 4, 4), 3, seed=2)
    assert a.x_train.shape == (512, 1, 4, 4) and a.x_test.shape == (256, 1, 4, 4)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert set(a.y_train.tolist()) == {0, 1, 2}
    # learnable: nearest class mean (estimated on train) beats chance (1/3) on test by far
    flat = a.x_train.flatten(1)
    means = torch.stack([flat[a.y_train == k].mean(0) for k in range(3)])
    pred = torch.cdist(a.x_test.flatten(1), means).argmin(1)
    assert (pred == a.y_test).float().mean() > 0.8
    small = load_dataset("synthetic", (5,), 2, seed=0, train_size=10, test_size=4)
    assert small.x_train.shape == (10, 5) and small.x_test.shape == (4, 5)


def test_mnist1d_shapes_and_global_rng_untouched() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    flat = load_dataset("mnist1d", (40,), 10, seed=42)
    assert np.random.rand() == expected  # make_dataset reseeds numpy's global RNG; we restore it
    seq = load_dataset("mnist1d", (1, 40), 10, seed=42)
    assert flat.x_train.shape == (4000, 40) and flat.x_test.shape == (1000, 40)
    assert seq.x_train.shape == (4000, 1, 40)
    assert torch.equal(seq.x_train.flatten(1), flat.x_train)
    assert flat.y_train.min() == 0 and flat.y_train.max() == 9 and not flat.augment
    with pytest.raises(MNError, match=r"shape 40, but the ensemble's input is 1x41"):
        load_dataset("mnist1d", (1, 41), 10)
    with pytest.raises(MNError, match=r"10 classes, but the ensemble says classes 5"):
        load_dataset("mnist1d", (40,), 5)
    limited = load_dataset("mnist1d", (40,), 10, seed=42, train_size=100, test_size=20)
    assert torch.equal(limited.x_train, flat.x_train[:100]) and len(limited.y_test) == 20


def test_digits_standardised_and_split() -> None:
    img = load_dataset("digits", (1, 8, 8), 10, seed=0)
    flat = load_dataset("digits", (64,), 10, seed=0)
    assert img.x_train.shape == (1437, 1, 8, 8) and img.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(img.x_train.flatten(1), flat.x_train)
    assert abs(float(img.x_train.mean())) < 1e-4 and abs(float(img.x_train.std()) - 1) < 1e-3
    other = load_dataset("digits", (64,), 10, seed=1)
    assert not torch.equal(other.y_train, flat.y_train)
    with pytest.raises(MNError, match="1x8x8, but the ensemble's input is 3x8x8"):
        load_dataset("digits", (3, 8, 8), 10)


def _fake_cifar(root: Path, hundred: bool, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        d = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: [(i + j) % 10 for j in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)


def test_cifar_from_torchvision_layout(tmp_path: Path) -> None:
    _fake_cifar(tmp_path, hundred=False)
    ds = load_dataset("cifar10", (3, 32, 32), 10, data_dir=tmp_path)
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (6, 3, 32, 32)
    assert ds.augment and ds.image_shape == (3, 32, 32)
    per_channel = ds.x_train.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-5)
    assert torch.allclose(ds.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert ds.y_train[:6].tolist() == [0, 1, 2, 3, 4, 5]
    flat = load_dataset("cifar10", (3072,), 10, data_dir=tmp_path)
    assert flat.x_train.shape == (30, 3072) and flat.image_shape == (3, 32, 32)
    hundred = tmp_path / "h"
    _fake_cifar(hundred, hundred=True)
    assert load_dataset("cifar100", (3, 32, 32), 100, data_dir=hundred).x_train.shape == (6, 3, 32, 32)


def test_cifar_errors_say_how_to_get_files(tmp_path: Path) -> None:
    with pytest.raises(MNError, match="no data directory") as e:
        load_dataset("cifar10", (3, 32, 32), 10)
    assert "torchvision" in (e.value.hint or "")
    with pytest.raises(MNError, match="data_batch_1 not found") as e:
        load_dataset("cifar10", (3, 32, 32), 10, data_dir=tmp_path)
    assert str(tmp_path) in (e.value.hint or "")
    with pytest.raises(MNError, match="shape 3x32x32, but the ensemble's input is 1x32x32"):
        load_dataset("cifar10", (1, 32, 32), 10, data_dir=tmp_path)
    with pytest.raises(MNError, match="100 classes"):
        load_dataset("cifar100", (3, 32, 32), 10, data_dir=tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(MNError, match="cannot read .*data_batch_1"):
        load_dataset("cifar10", (3, 32, 32), 10, data_dir=tmp_path)


def test_svhn_mat_files(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [4]][:n], dtype=np.uint8)
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", (3, 32, 32), 10, data_dir=tmp_path)
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.y_train.tolist() == [0, 1, 2, 3, 4]
    assert ds.augment
    with pytest.raises(MNError, match="test_32x32.mat not found"):
        (tmp_path / "test_32x32.mat").unlink()
        load_dataset("svhn", (3, 32, 32), 10, data_dir=tmp_path)


def _npz(path: Path, **over: np.ndarray) -> str:
    arrays = {
        "x_train": np.zeros((6, 2, 3), np.float32),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "x_test": np.ones((4, 2, 3), np.float64),
        "y_test": np.array([2, 1, 0, 1], np.int32),
    }
    arrays.update(over)
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_loads_and_validates(tmp_path: Path) -> None:
    ds = load_dataset(_npz(tmp_path / "ok.npz"), (2, 3), 3)
    assert ds.x_test.dtype == torch.float32 and ds.y_test.dtype == torch.int64
    assert load_dataset(_npz(tmp_path / "ok.npz"), (6,), 3).x_train.shape == (6, 6)
    with pytest.raises(MNError, match="shape 2x3, but the ensemble's input is 3x3"):
        load_dataset(_npz(tmp_path / "a.npz"), (3, 3), 3)
    with pytest.raises(MNError, match="labels from 0 to 2, but the ensemble has classes 2"):
        load_dataset(_npz(tmp_path / "b.npz"), (2, 3), 2)
    with pytest.raises(MNError, match="y_train has dtype float64; labels must be integers"):
        load_dataset(_npz(tmp_path / "c.npz", y_train=np.zeros(6)), (2, 3), 3)
    bad = np.zeros((4, 2, 3))
    bad[0, 0, 0] = np.nan
    with pytest.raises(MNError, match="x_test contains NaN"):
        load_dataset(_npz(tmp_path / "d.npz", x_test=bad), (2, 3), 3)
    with pytest.raises(MNError, match="x_train has shape .* y_train has shape"):
        load_dataset(_npz(tmp_path / "e.npz", y_train=np.zeros(5, np.int64)), (2, 3), 3)
    np.savez(tmp_path / "f.npz", x_train=np.zeros((2, 2)))
    with pytest.raises(MNError, match="lacks the array\\(s\\) y_train, x_test, y_test"):
        load_dataset(f"npz:{tmp_path / 'f.npz'}", (2,), 3)
    (tmp_path / "g.npz").write_bytes(b"garbage")
    with pytest.raises(MNError, match="cannot read .*g.npz as an .npz archive"):
        load_dataset(f"npz:{tmp_path / 'g.npz'}", (2,), 3)
    with pytest.raises(MNError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}", (2,), 3)


def test_unknown_dataset() -> None:
    with pytest.raises(MNError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11", (3, 32, 32), 10)


def _tiny(n: int = 10) -> Dataset:
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n) % 2
    return Dataset("t", x, y, x, y, classes=2)


def test_batches_cover_every_example_once_per_epoch_and_are_seeded() -> None:
    ds = _tiny(10)
    g = torch.Generator().manual_seed(0)
    epoch1 = list(batches(ds, 4, g))
    epoch2 = list(batches(ds, 4, g))
    assert [len(y) for _, y in epoch1] == [4, 4, 2] == [len(y) for _, y in epoch2]
    seen1 = torch.cat([x for x, _ in epoch1]).flatten()
    assert sorted(seen1.tolist()) == list(range(10))
    assert not torch.equal(seen1, torch.cat([x for x, _ in epoch2]).flatten())  # reshuffled
    again = list(batches(ds, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch1, again, strict=True))
    for x, y in epoch1:
        assert torch.equal(y, x.flatten().long() % 2)  # inputs and labels stay paired


def test_trailing_single_example_is_dropped() -> None:
    ds = _tiny(9)
    sizes = [len(y) for _, y in batches(ds, 4, torch.Generator().manual_seed(0))]
    assert sizes == [4, 4] and num_batches(ds, 4) == 2
    assert num_batches(_tiny(10), 4) == 3 == len(list(batches(_tiny(10), 4, torch.Generator())))


def test_augmentation_is_a_padded_crop_or_its_mirror() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 2, 5, 6)
    out = augment_batch(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flips = 0
    for i in range(len(x)):
        crops = [
            (padded[i, :, r : r + 5, c : c + 6], flip)
            for r in range(9)
            for c in range(9)
            for flip in (False, True)
        ]
        matches = [flip for crop, flip in crops if torch.equal(crop.flip(-1) if flip else crop, out[i])]
        assert matches, f"example {i} is not a crop of its padded input"
        flips += matches[0]
    assert 0 < flips < 16  # both flipped and unflipped examples occur
    same = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, same)
    flat = augment_batch(x.flatten(1), torch.Generator().manual_seed(3), image_shape=(2, 5, 6))
    assert torch.equal(flat, out.flatten(1))
    with pytest.raises(ValueError, match="augmentation needs"):
        augment_batch(torch.zeros(3, 5), torch.Generator())


def test_batches_augment_by_dataset_flag() -> None:
    x = torch.randn(8, 1, 4, 4)
    y = torch.zeros(8, dtype=torch.int64)
    plain = Dataset("a", x, y, x, y, classes=1)
    aug = replace(plain, augment=True)
    a = torch.cat([b for b, _ in batches(plain, 8, torch.Generator().manual_seed(0))])
    b = torch.cat([b for b, _ in batches(aug, 8, torch.Generator().manual_seed(0))])
    assert sorted(a.sum(dim=(1, 2, 3)).tolist()) == sorted(x.sum(dim=(1, 2, 3)).tolist())
    assert not torch.equal(a, b)
    c = torch.cat([b for b, _ in batches(aug, 8, torch.Generator().manual_seed(0), augment=False)])
    assert torch.equal(a, c)


class _Evil:
    """Pickles to a call of os.system: what a hostile 'data_batch_1' holds."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path: Path, protocol: int,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The tester's attack: a batch file whose unpickling calls os.system. Exit 2, no code run."""
    from mncompile.cli import main

    _fake_cifar(tmp_path / "data", hundred=False)
    marker = tmp_path / "pwned"
    with open(tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({"data": _Evil(marker), "labels": [0]}, f, protocol=protocol)
    with pytest.raises(MNError, match="refused to read .*data_batch_1: it refers to (posix|os|nt).system"):
        load_dataset("cifar10", (3, 32, 32), 10, data_dir=tmp_path / "data")
    spec = tmp_path / "c.mnet"
    spec.write_text("ensemble c { input 3x32x32 classes 10 net a plain { block { 3:4 } } }")
    rc = main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / "out"),
               "--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "a data file may not run code" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_official_batches_still_load_with_every_protocol(tmp_path: Path, protocol: int) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"batch_label": "training batch 1 of 5", "labels": [1, 2], "filenames": [b"a.png", b"b.png"],
             "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8)}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=protocol)
    ds = load_dataset("cifar10", (3, 32, 32), 10, data_dir=tmp_path)
    assert ds.x_train.shape == (10, 3, 32, 32) and ds.y_test.tolist() == [1, 2]


def test_npz_messages_name_the_problem_and_never_advise_pickles(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("hello\n1 2 3\n")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04garbage")
    cases = {str(tmp_path): "is a folder, not an .npz file", str(tmp_path / "t.txt"): "it is not a zip file",
             str(tmp_path / "one.npy"): "it is a single .npy array",
             str(tmp_path / "obj.npz"): "it holds pickled Python objects, which mncompile never loads",
             str(tmp_path / "bad.npz"): "BadZipFile"}
    for path, message in cases.items():
        with pytest.raises(MNError) as err:
            load_dataset(f"npz:{path}", (1, 4), 2)
        assert message in err.value.message, err.value.message
        assert "allow_pickle" not in str(err.value)


def test_mnist1d_at_its_default_sizes_is_todays_data_bit_for_bit() -> None:
    from mncompile.runtime.data import _mnist1d

    x, y, xt, yt = _mnist1d(0)
    ds = load_dataset("mnist1d", (1, 40), 10)
    assert torch.equal(ds.x_train, torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 40))
    assert torch.equal(ds.y_test, torch.as_tensor(yt))
    small = load_dataset("mnist1d", (40,), 10, train_size=100, test_size=50)  # below: the first N
    assert torch.equal(small.x_train, ds.x_train[:100].reshape(100, 40)) and len(small.y_test) == 50


def test_mnist1d_beyond_its_split_is_generated_once_and_cached(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import mnist1d.data

    from mncompile.runtime import data

    monkeypatch.setenv("MNCOMPILE_CACHE", str(tmp_path / "cache"))
    data._mnist1d.cache_clear()
    ds = load_dataset("mnist1d", (1, 40), 10, seed=3, train_size=4003, test_size=1201)
    assert (len(ds.y_train), len(ds.y_test)) == (4003, 1201)
    assert "generating MNIST-1D: 4003 training and 1201 test examples" in capsys.readouterr().err
    files = list((tmp_path / "cache").glob("mnist1d-*.npz"))
    assert len(files) == 1
    # the second load reads the cache: nothing is generated
    data._mnist1d.cache_clear()
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda *a, **k: pytest.fail("generated again"))
    again = load_dataset("mnist1d", (1, 40), 10, seed=3, train_size=4003, test_size=1201)
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    assert capsys.readouterr().err == ""
    monkeypatch.undo()
    monkeypatch.setenv("MNCOMPILE_CACHE", str(tmp_path / "cache"))
    # a damaged cache file, and one whose key is another's, are generated again, never trusted
    raw = bytearray(files[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(raw))
    data._mnist1d.cache_clear()
    fixed = load_dataset("mnist1d", (1, 40), 10, seed=3, train_size=4003, test_size=1201)
    assert "damaged or stale; generating it again" in capsys.readouterr().err
    assert torch.equal(fixed.x_train, ds.x_train)
    other = load_dataset("mnist1d", (1, 40), 10, seed=4, train_size=4003, test_size=1201)
    capsys.readouterr()
    newest = max((tmp_path / "cache").glob("mnist1d-*.npz"), key=lambda p: p.stat().st_mtime_ns)
    oldest = [p for p in (tmp_path / "cache").glob("mnist1d-*.npz") if p != newest][0]
    oldest.write_bytes(newest.read_bytes())  # seed 4's arrays under seed 3's name
    data._mnist1d.cache_clear()
    swapped = load_dataset("mnist1d", (1, 40), 10, seed=3, train_size=4003, test_size=1201)
    assert "damaged or stale" in capsys.readouterr().err
    assert torch.equal(swapped.x_train, ds.x_train) and not torch.equal(other.x_train, ds.x_train)
