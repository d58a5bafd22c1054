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
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.py").write_text(DATA_PY)
    path = tmp_path / "p1.mnet"
    path.write_text(SPEC)
    return path


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
    rc = cli_main(["run", str(spec), "-g", "1", "--data", "data.py:make", "--method", method, "--quiet",
                   "--out", f"cli-{method}", *extra])
    assert rc == 0
    doc = json.loads(Path(f"cli-{method}/results.json").read_text())
    assert doc["info"]["dataset"] == "data.py:make" and doc["info"]["test_size"] == 40


def test_the_user_s_validation_split_is_used_as_it_is(spec: Path) -> None:
    assert cli_main(["run", str(spec), "--data", "data.py:with_val", "--quiet", "--out", "o"]) == 0
    info = json.loads(Path("o/results.json").read_text())["info"]
    assert (info["train_size"], info["val_size"], info["val_given"]) == (120, 30, True)


def test_a_dataloader_s_dataset_is_read_and_a_custom_sampler_refused(spec: Path) -> None:
    ens = mncompile.compile(spec, clusters=1)
    train = DataLoader(Pairs(120, 0), batch_size=7, shuffle=True)
    run = ens.fit(train, DataLoader(Pairs(40, 1)), out="dl", quiet=True, val_fraction=0)
    assert run.results["info"]["train_size"] == 120
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
    ("data.py:nope", "data.py has no function 'nope'"),
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
