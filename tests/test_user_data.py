"""Data the user brings: the Python API (`mncompile.compile(...).fit(...)`), tensors, Datasets and
DataLoaders per split, and `--data FILE.py:FUNCTION` from the command line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

import mncompile
from mncompile.cli import main as cli_main
from mncompile.diagnostics import MNError
from mncompile.runtime.methods import METHODS
from tests.conftest import spec_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = """ensemble p1 { input 1x16 classes 3
    train { batch 16 max_epochs 2 hatched_max_epochs 1 patience 50 }
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
    net c plain { block { 3:4 3:4 } block { 3:8 3:8 } dense 8 }
}
"""

DATA_PY = '''
import torch
from torch.utils.data import Dataset


class Pairs(Dataset):
    """A Dataset of (x, y) items, as users write them."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 3, (n,), generator=g)
        self.x = torch.randn(n, 1, 16, generator=g) + self.y[:, None, None].float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def make():
    return Pairs(120, 0), None, Pairs(40, 1)


def with_val():
    return Pairs(120, 0), Pairs(30, 2), Pairs(40, 1)


def boom():
    raise ValueError("no data today")


def not_pairs():
    return [1, 2, 3], None, Pairs(10, 1)


def two():
    return Pairs(10, 0), Pairs(10, 1)


def empty_test():
    return Pairs(20, 0), None, Pairs(0, 1)


def strings():
    return [("abc", 1)] * 4, None, Pairs(10, 1)
'''


class Pairs(Dataset):
    def __init__(self, n: int, seed: int, shape: tuple[int, ...] = (1, 16), classes: int = 3) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.x = torch.randn(n, *shape, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "data.py").write_text(DATA_PY)
    return spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")


def test_the_api_trains_on_tensors_and_predicts(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    assert ens.members == ["a", "b", "c"] and ens.g == 1
    train, test = Pairs(120, 0), Pairs(40, 1)
    run = ens.fit((train.x, train.y), (test.x, test.y.numpy()), out="runs/t", quiet=True)
    doc = json.loads(Path("runs/t/results.json").read_text())
    assert run.results == doc  # the same dict as results.json
    info = doc["info"]
    assert info["dataset"] == "user data" and info["train_size"] + info["val_size"] == 120
    assert 10 <= info["val_size"] <= 14  # a tenth of each class
    assert len(info["data_digest"]) == 64
    probs = run.predict_proba(test.x)
    assert probs.shape == (40, 3) and torch.allclose(probs.sum(1), torch.ones(40))
    # the ensemble's accuracy on the test set is what results.json says
    acc = float((run.predict(test.x) == test.y).float().mean())
    assert acc == pytest.approx(doc["ensemble"]["accuracy"])
    assert torch.equal(mncompile.load_ensemble("runs/t/ensemble.pt").predict(test.x), run.predict(test.x))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_user_dataset_trains_every_method_through_the_api_and_the_cli(spec: Path, method: str) -> None:
    extra = ["--shared-layers", "1"] if method == "treenet" else []
    ens = mncompile.compile(spec, clusters=1)
    options = {"shared_layers": 1} if method == "treenet" else {}
    run = ens.fit(Pairs(120, 0), Pairs(40, 1), method=method, out=f"api-{method}", quiet=True, **options)
    assert run.results["method"] == method and run.results["ensemble"]["test_examples"] == 40
    if method == "treenet":  # no ensemble.pt: a clear error, not a missing file
        with pytest.raises(MNError, match="wrote no ensemble.pt"):
            run.predict_proba(Pairs(4, 2).x)
    else:
        assert run.predict_proba(Pairs(4, 2).x).shape == (4, 3)
    rc = cli_main(["run", str(spec), "-g", "1", "--data", "data.py:make", "--method", method, "--quiet",
                   "--out", f"cli-{method}", *extra])
    assert rc == 0
    doc = json.loads(Path(f"cli-{method}/results.json").read_text())
    assert doc["info"]["dataset"] == "data.py:make" and doc["info"]["test_size"] == 40


def test_the_user_s_validation_split_is_used_as_it_is(spec: Path) -> None:
    assert cli_main(["run", str(spec), "--data", "data.py:with_val", "--quiet", "--out", "o"]) == 0
    info = json.loads(Path("o/results.json").read_text())["info"]
    assert (info["train_size"], info["val_size"], info["val_given"]) == (120, 30, True)


def test_a_training_dataloader_streams_and_a_custom_sampler_is_refused(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    train = DataLoader(Pairs(120, 0), batch_size=7, shuffle=True)
    run = ens.fit(train, DataLoader(Pairs(40, 1)), out="dl", quiet=True, val_fraction=0)
    info = run.results["info"]
    assert info["train_size"] == 120 and info["streamed"] == {"workers": 0}
    assert info["config"]["batch"] == 7  # the loader's batch size
    odd = DataLoader(Pairs(120, 0), sampler=SubsetRandomSampler(range(50)))
    with pytest.raises(MNError, match="sampler of its own .SubsetRandomSampler.") as err:
        ens.fit(odd, Pairs(40, 1), out="dl2")
    assert "loader.dataset" in str(err.value.hint)
    assert not Path("dl2").exists()


def test_resume_refuses_other_data(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    ens.fit(Pairs(120, 0), Pairs(40, 1), out="r", quiet=True)
    with pytest.raises(MNError, match="data_digest"):
        ens.fit(Pairs(120, 5), Pairs(40, 1), out="r", quiet=True, resume=True)
    again = ens.fit(Pairs(120, 0), Pairs(40, 1), out="r", quiet=True, resume=True)
    assert again.results["ensemble"] == json.loads(Path("r/results.json").read_text())["ensemble"]


@pytest.mark.parametrize("train, test, message", [
    ([1, 2, 3], Pairs(10, 1), "item 0 is an int, not an (x, y) pair"),
    ([(torch.zeros(1, 16), 1, 2)], Pairs(10, 1), "item 0 is a tuple of 3, not an (x, y) pair"),
    (Pairs(20, 0, shape=(1, 15)), Pairs(10, 1), "has inputs of shape 1x15, but the ensemble's input is 1x16"),
    (Pairs(20, 0, classes=7), Pairs(10, 1), "holds labels from 0 to 6, but the ensemble has classes 3"),
    (Pairs(0, 0), Pairs(10, 1), "the split is empty"),
    (Pairs(20, 0), (torch.zeros(0, 1, 16), torch.zeros(0, dtype=torch.long)), "the test split is empty"),
    ([("abc", 1)] * 3, Pairs(10, 1), "dtype <U3"),
    ([(torch.zeros(1, 16), 0.5)], Pairs(10, 1), "the label 0.5 is not a class index"),
    ([(torch.zeros(1, 16), 0), (torch.zeros(1, 8), 1)], Pairs(10, 1), "item 1 is 1x8"),
    ((torch.full((4, 1, 16), float("nan")), torch.zeros(4, dtype=torch.long)), Pairs(10, 1),
     "NaN or infinite"),
    ((torch.zeros(4, 1, 16), torch.zeros(4, dtype=torch.long)), None, "no test split"),
    ("train.csv", Pairs(10, 1), "got str; a split is"),
])
def test_bad_user_data_is_a_clear_error_before_anything_trains(spec: Path, train: object, test: object,
                                                                message: str) -> None:
    ens = mncompile.compile(spec, clusters=1)
    with pytest.raises(MNError) as err:
        ens.fit(train, test, out="bad")
    assert message in str(err.value)
    assert not Path("bad").exists()


@pytest.mark.parametrize("data, message", [
    ("data.py:boom", "boom() raised ValueError: no data today"),
    ("data.py:nope", "data.py has no 'nope'"),
    ("missing.py:make", "missing.py is not a file"),
    ("data.py:not_pairs", "item 0 is an int, not an (x, y) pair"),
    ("data.py:two", "two() returned a tuple of 2, not (train, val, test)"),
    ("data.py:empty_test", "the split is empty"),
    ("data.py:strings", "dtype <U3"),
])
def test_a_bad_data_function_exits_2_with_a_message(spec: Path, data: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["run", str(spec), "--data", data, "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not Path("o").exists()


def test_debug_shows_the_data_function_s_own_traceback(spec: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MNError) as err:
        cli_main(["--debug", "run", str(spec), "--data", "data.py:boom", "--out", "o"])
    assert isinstance(err.value.detail, ValueError)
    shown = capsys.readouterr().err
    assert "Traceback" in shown and 'raise ValueError("no data today")' in shown


def test_bad_fit_options_are_errors_with_a_suggestion(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    with pytest.raises(MNError, match="unknown option 'val_fractoin'") as err:
        ens.fit(Pairs(20, 0), Pairs(10, 1), val_fractoin=0.2)
    assert "val_fraction" in str(err.value.hint)
    with pytest.raises(MNError, match="--lr: expected above 0"):
        ens.fit(Pairs(20, 0), Pairs(10, 1), lr=-1)
    with pytest.raises(MNError, match="either data= .* or train="):
        ens.fit(Pairs(20, 0), Pairs(10, 1), data="mnist1d")


def test_compile_text_and_the_temporary_folder_goes_with_the_object(tmp_path: Path) -> None:
    import gc

    ens = mncompile.compile_text(SPEC, clusters=1)
    folder = ens.folder
    assert (folder / "models.py").is_file() and (folder / "plan.json").is_file()
    del ens
    gc.collect()
    assert not folder.exists()
    kept = mncompile.compile_text(SPEC, folder=tmp_path / "gen")
    assert kept.folder == tmp_path / "gen" and (tmp_path / "gen" / "train.py").is_file()


def test_numpy_arrays_and_flat_inputs_reshape_to_the_spec(spec: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 16)), rng.integers(0, 3, 60)
    ens = mncompile.compile(spec, clusters=1)
    run = ens.fit((x, y), (x[:20], y[:20]), out="np", quiet=True, val_fraction=0)
    assert run.results["info"]["train_size"] == 60
    assert run.predict_proba(x[:5].reshape(5, 1, 16)).shape == (5, 3)


def test_the_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- api-example -->")
    code = readme[start:].split("```python\n", 1)[1].split("```", 1)[0]
    # as written, in a folder of its own that holds the examples it names
    (tmp_path / "examples").mkdir()
    for spec in re.findall(r'"(examples/[\w.-]+\.mnet)"', code):
        shutil.copy(root / spec, tmp_path / spec)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    run = namespace["run"]
    assert (tmp_path / "runs" / "digits-api" / "results.json").is_file()
    assert namespace["probs"].shape[1] == 10  # type: ignore[attr-defined]
    assert json.loads((tmp_path / "runs/digits-api/results.json").read_text()) == run.results  # type: ignore


# ------------------------------------------------------------------- streaming from a DataLoader


class Noisy(Pairs):
    """Augments each read with noise from torch's global generator (as torchvision transforms do),
    and counts its reads."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        self.reads = 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        x, y = super().__getitem__(i)
        return x + 0.1 * torch.randn(x.shape), y


def _same_training(a: mncompile.TrainedRun, b: mncompile.TrainedRun) -> None:
    """The same models, epochs, losses and ensemble (wall times aside)."""
    import csv

    from tests.test_resume_kill import _comparable

    assert _comparable(a.results) == _comparable(b.results)

    def history(run: mncompile.TrainedRun) -> list[dict[str, str]]:
        with open(run.out / "history.csv", encoding="utf-8", newline="") as f:
            return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]

    assert history(a) == history(b)


def test_a_stream_trains_exactly_what_the_same_data_in_memory_trains(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    data = Pairs(150, 0)
    memory = ens.fit(data, Pairs(40, 1), out="mem", quiet=True, val_fraction=0)
    streamed = ens.fit(DataLoader(data, batch_size=16, shuffle=True), Pairs(40, 1), out="str", quiet=True,
                       val_fraction=0)
    assert streamed.results["info"]["streamed"] == {"workers": 0}
    _same_training(memory, streamed)


def test_a_lockstep_group_reads_each_batch_once_and_sequential_training_once_per_model() -> None:
    from mncompile.runtime.data import Dataset as Task
    from mncompile.runtime.data import Stream
    from mncompile.runtime.jobs import TrainSettings
    from mncompile.runtime.train import train_lockstep, train_sequential

    def run(train: object, source: Noisy) -> int:
        stream = Stream(source, torch.arange(len(source)), (16,), 3)
        task = Task("t", source.x[:8].reshape(8, 16), source.y[:8], source.x[:8].reshape(8, 16), source.y[:8],
                    3, stream=stream)
        models = {n: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)) for n in "abc"}
        settings = TrainSettings(batch=10, lr=0.05, max_epochs=2, patience=0)
        before = source.reads
        train(models, task, settings)  # type: ignore[operator]
        return source.reads - before

    source = Noisy(100, 0)
    assert run(train_lockstep, source) == 2 * 100  # 3 models, 2 epochs: one read per example per epoch
    assert run(train_sequential, source) == 3 * 2 * 100


def test_augmentation_in_a_stream_is_reproducible_and_resume_is_exact(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    first = ens.fit(DataLoader(Noisy(150, 0), batch_size=16), Pairs(40, 1), out="a1", quiet=True)
    again = ens.fit(DataLoader(Noisy(150, 0), batch_size=16), Pairs(40, 1), out="a2", quiet=True)
    _same_training(first, again)
    workers = ens.fit(DataLoader(Noisy(150, 0), batch_size=16, num_workers=2), Pairs(40, 1), out="w1",
                      quiet=True)
    workers2 = ens.fit(DataLoader(Noisy(150, 0), batch_size=16, num_workers=2), Pairs(40, 1), out="w2",
                       quiet=True)
    _same_training(workers, workers2)


def test_a_bad_batch_deep_in_a_stream_names_the_batch(spec: Path) -> None:
    class Late(Pairs):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            x, y = super().__getitem__(i)
            return x, (7 if i == 290 else y)

    ens = mncompile.compile(spec, clusters=1)
    with pytest.raises(MNError, match=r"user data \(train\), batch \d+: labels from 0 to 7"):
        ens.fit(DataLoader(Late(300, 0), batch_size=16), Pairs(40, 1), out="late", quiet=True, val_fraction=0)


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):  # type: ignore[no-untyped-def]
        while True:
            yield torch.zeros(1, 16), 0


@pytest.mark.parametrize("make, options, message", [
    (lambda: DataLoader(Pairs(50, 0), batch_size=8), {"batch_order": "member"}, "--batch-order member needs"),
    (lambda: DataLoader(Pairs(50, 0), batch_size=None), {}, "batch_size None"),
    (lambda: DataLoader(Endless(), batch_size=4), {}, "IterableDataset"),
])
def test_what_a_stream_cannot_do_is_refused_before_training(spec: Path, make: object, options: dict,
                                                            message: str) -> None:
    ens = mncompile.compile(spec, clusters=1)
    with pytest.raises(MNError, match=message):
        ens.fit(make(), Pairs(40, 1), out="no", **options)  # type: ignore[operator]
    assert not Path("no").exists()


STREAM_PY = '''
import torch
from torch.utils.data import DataLoader, Dataset


class Noisy(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 4, (n,), generator=g)
        self.x = torch.randn(n, 24, generator=g) + self.y[:, None].float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(24), int(self.y[i])


def splits():
    return DataLoader(Noisy(1024, 0), batch_size=32, shuffle=True, num_workers=1), None, Noisy(128, 1)
'''


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="POSIX signals")
def test_sigkill_while_streaming_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    import signal

    from tests.test_resume_kill import _comparable, _generate, _wait_for, _weights

    folder, _ = _generate(tmp_path)
    (tmp_path / "stream.py").write_text(STREAM_PY)
    data = ["--data", f"{tmp_path / 'stream.py'}:splits"]

    def start(out: Path, *extra: str) -> __import__("subprocess").Popen[str]:
        import os
        import subprocess
        import sys

        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, str(folder / "train.py"), "--quiet", *data, "--out", str(out), *extra]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    killed = tmp_path / "killed"
    proc = start(killed)
    _wait_for(killed / "ckpt" / "mothernets" / "members" / "c.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (killed / "results.json").exists()
    resumed = start(killed, "--resume")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    whole = start(tmp_path / "whole")
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert _comparable(a) == _comparable(b)
    wa, wb = _weights(killed), _weights(tmp_path / "whole")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k][t], wb[k][t]) for k in wa for t in wa[k])
