"""g for a budget: parsing budgets, the estimate's arithmetic, `plan --budget` and `run --budget`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mncompile.api import loads
from mncompile.budget import Earlier, estimate, parse_budget
from mncompile.cli import main as cli_main
from mncompile.diagnostics import MNError
from tests.conftest import spec_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = """ensemble bt { input 1x16 classes 3
    train { batch 16 max_epochs 4 hatched_max_epochs 2 patience 50 }
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
    net c plain { block { 3:4 3:4 } block { 3:8 3:8 } dense 8 }
}
"""


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("2h", 7200), ("90s", 90), ("300", 300),
                                           ("1.5h", 5400), ("$2", 2 / 3.06 * 3600),
                                           ("2usd", 2 / 3.06 * 3600)])
def test_budgets_read_as_times_or_money(text: str, seconds: float) -> None:
    assert parse_budget(text, 3.06) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "0", "-5m", "$0", "1e999h", "5 weeks"])
def test_a_bad_budget_is_refused(text: str) -> None:
    with pytest.raises(MNError, match="--budget"):
        parse_budget(text, 3.06)


def _doc(method: str, g: int, models: dict[str, tuple[str, int]], members: list[str]) -> dict:
    return {"method": method, "members": members, "info": {"ensemble": "bt", "g": g, "train_size": 64},
            "ensemble": {"error": 0.1},
            "models": {n: {"phase": p, "epochs": e} for n, (p, e) in models.items()}}


def test_the_estimate_adds_epochs_times_step_times_per_phase() -> None:
    e = loads(SPEC)
    earlier = Earlier([
        _doc("mothernets", 1, {"mothernet1": ("mothernets", 10), "a": ("members", 3), "b": ("members", 5),
                               "c": ("members", 1)}, ["a", "b", "c"]),
        _doc("full-data", 3, {"a": ("members", 7), "b": ("members", 8), "c": ("members", 9)},
             ["a", "b", "c"]),
    ])
    times = {"mothernet1": 1.0, "mothernet2": 1.5, "mothernet3": 2.0, "a": 0.1, "b": 0.2, "c": 0.3}
    one = estimate(e, 1, times, earlier, batches=4)
    assert one.seconds == pytest.approx(4 * (10 * 1.0 + 3 * 0.1 + 5 * 0.2 + 1 * 0.3))
    assert one.sources == {"earlier runs"} and one.mothers == 1
    every = estimate(e, 3, times, earlier, batches=4)  # every net a cluster of its own: from scratch
    assert every.seconds == pytest.approx(4 * (7 * 0.1 + 8 * 0.2 + 9 * 0.3)) and every.mothers == 0
    caps = estimate(e, 1, times, Earlier(), batches=4)  # no earlier run: the spec's caps
    assert caps.seconds == pytest.approx(4 * (4 * 1.0 + 2 * (0.1 + 0.2 + 0.3)))
    assert caps.sources == {"the spec's caps"}


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return spec_in(tmp_path, monkeypatch, SPEC, "bt.mnet")


def test_plan_budget_prints_every_g_and_picks_the_largest_that_fits(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["plan", str(spec), "--budget", "2h", "--probe", "1", "--budget-train-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "est. time" in out and "the spec's caps" in out
    assert "the largest g expected to fit: g = 3" in out  # everything fits in two hours


def test_a_budget_too_small_for_g_1_says_what_it_needs(spec: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["plan", str(spec), "--budget", "0.0001s", "--probe", "1"]) == 2
    err = capsys.readouterr().err
    assert "even g = 1 needs about" in err and "Traceback" not in err


def test_run_budget_trains_at_the_g_it_picks_and_records_the_estimate(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = ["run", str(spec), "--data", "synthetic", "--train-size", "96", "--test-size", "24", "--quiet",
           "--out", "o", "--probe", "1"]
    assert cli_main([*run, "--budget", "2h"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(Path("o/results.json").read_text())
    budget = doc["info"]["budget"]
    assert budget["g"] == doc["info"]["g"] == 3 and budget["budget_seconds"] == 7200
    assert budget["train_examples"] == 96 - 10  # --train-size less the validation split
    assert budget["estimate_seconds"] > 0 and "x the estimate" in out
    assert cli_main([*run, "--budget", "2h", "--clusters", "1", "--force"]) == 2
    assert "--budget picks g" in capsys.readouterr().err
