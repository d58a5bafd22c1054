"""Metrics of mncompile.runtime.metrics against hand computations on tiny fixed examples."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from mncompile.diagnostics import MNError
from mncompile.runtime.metrics import (
    correct_class_probs,
    diversity,
    diversity_over_trainings,
    ece,
    ensemble_metrics,
    vote,
)
from mncompile.runtime.results import (
    HISTORY_COLUMNS,
    SCHEMA_VERSION,
    PhaseRecord,
    build_results,
    format_table,
    load_results,
    write_history,
    write_results,
)
from mncompile.runtime.train import EpochRecord, ModelResult

# two members, three examples, three classes; labels 0, 2, 1
A = [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]  # right, wrong (1), wrong (2)
B = [[0.4, 0.5, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1]]  # wrong (1), right, right
PROBS = torch.tensor([A, B])
LABELS = torch.tensor([0, 2, 1])


def test_members_and_ensemble_by_hand() -> None:
    m = ensemble_metrics(PROBS, LABELS, names=["a", "b"])
    a, b = m["members"]["a"], m["members"]["b"]
    assert a["accuracy"] == pytest.approx(1 / 3) and b["accuracy"] == pytest.approx(2 / 3)
    assert a["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.4) + math.log(0.3)) / 3)
    assert b["nll"] == pytest.approx(-(math.log(0.4) + math.log(0.6) + math.log(0.8)) / 3)
    # mean probabilities: [.55 .35 .1], [.15 .35 .5], [.2 .55 .25]: all three right
    assert m["accuracy"] == 1.0 and m["error"] == 0.0 and m["size"] == 2
    assert m["nll"] == pytest.approx(-(2 * math.log(0.55) + math.log(0.5)) / 3)
    brier = ((0.45**2 + 0.35**2 + 0.1**2) + (0.15**2 + 0.35**2 + 0.5**2) + (0.2**2 + 0.45**2 + 0.25**2)) / 3
    assert m["brier"] == pytest.approx(brier) == pytest.approx(0.345)
    # confidences .55, .5, .55, all right: bin (7/15, 8/15] holds .5, bin (8/15, 9/15] the two .55
    assert m["ece"] == pytest.approx((1 / 3) * 0.5 + (2 / 3) * 0.45)
    assert m["oracle_accuracy"] == 1.0
    assert m["disagreement"] == 1.0  # argmaxes 0,1,2 vs 1,2,1
    # every vote is a 1-1 tie, won by the higher mean probability: 0 (.55 > .35), 2 (.5 > .35),
    # 1 (.55 > .25); lowest-index tie-breaking would have said 0, 1, 1
    assert vote(PROBS).tolist() == [0, 2, 1] and m["accuracy_vote"] == 1.0


def test_member_calibration_by_hand() -> None:
    a = ensemble_metrics(PROBS[:1], LABELS)["members"]["member1"]
    assert a["brier"] == pytest.approx(
        ((0.3**2 + 0.04 + 0.01) + (0.01 + 0.25 + 0.36) + (0.09 + 0.49 + 0.16)) / 3
    )
    # confidences .7 (right, bin 11), .5 (wrong, bin 8), .4 (wrong, bin 6)
    assert a["ece"] == pytest.approx((0.3 + 0.5 + 0.4) / 3)
    m1 = ensemble_metrics(PROBS[:1], LABELS)
    assert m1["disagreement"] is None and m1["diversity"]["member_covariance"] is None


def test_vote_majority_and_exact_ties() -> None:
    one = [[1.0, 0.0, 0.0]]
    two = [[0.0, 1.0, 0.0]]
    three = [[0.0, 0.0, 1.0]]
    # three members: two vote 1, one votes 0 -> 1 despite member 0's certainty
    p = torch.tensor([[[0.3, 0.7, 0.0]], [[0.4, 0.6, 0.0]], one])
    assert vote(p).tolist() == [1]
    # a three-way tie with equal mean probabilities goes to the lowest index
    assert vote(torch.tensor([three, two, one])).tolist() == [0]
    labels = torch.tensor([2])
    assert ensemble_metrics(torch.tensor([three, two, one]), labels)["accuracy_vote"] == 0.0


def test_diversity_by_hand_and_its_identity() -> None:
    y = correct_class_probs(PROBS, LABELS)
    assert torch.allclose(y, torch.tensor([[0.7, 0.4, 0.3], [0.4, 0.6, 0.8]], dtype=torch.float64))
    d = diversity(y)
    var_a = ((0.7 - 1.4 / 3) ** 2 + (0.4 - 1.4 / 3) ** 2 + (0.3 - 1.4 / 3) ** 2) / 3
    var_b = (0.2**2 + 0 + 0.2**2) / 3
    cov = ((0.7 - 1.4 / 3) * -0.2 + (0.3 - 1.4 / 3) * 0.2) / 3
    mean = [0.55, 0.5, 0.55]
    ens = sum((v - 1.6 / 3) ** 2 for v in mean) / 3
    assert d["member_variance"] == pytest.approx((var_a + var_b) / 2)
    assert d["member_covariance"] == pytest.approx(cov) == pytest.approx(-0.08 / 3)
    assert d["ensemble_variance"] == pytest.approx(ens)
    assert d == ensemble_metrics(PROBS, LABELS)["diversity"]
    torch.manual_seed(0)
    y5 = torch.rand(5, 40)
    d5 = diversity(y5)
    k = 5
    assert d5["ensemble_variance"] == pytest.approx(
        d5["member_variance"] / k + (k - 1) / k * d5["member_covariance"]
    )


def test_diversity_over_trainings_by_hand() -> None:
    # two trainings, two members, one example: a gives .2 then .4, b gives .6 then .2
    y = torch.tensor([[[0.2], [0.6]], [[0.4], [0.2]]])
    d = diversity_over_trainings(y)
    assert d["member_variance"] == pytest.approx((0.02 + 0.08) / 2)
    assert d["member_covariance"] == pytest.approx(-0.04)
    assert d["ensemble_variance"] == pytest.approx(0.005)  # means .4 and .3
    pop = diversity_over_trainings(y, ddof=0)
    assert pop["member_variance"] == pytest.approx(0.025)
    # averaging over examples: a second example with no spread halves every moment
    y2 = torch.cat([y, torch.full((2, 2, 1), 0.5)], dim=2)
    d2 = diversity_over_trainings(y2)
    assert d2["member_covariance"] == pytest.approx(-0.02) and d2["ensemble_variance"] == pytest.approx(
        0.0025
    )
    with pytest.raises(ValueError, match="trainings > 1"):
        diversity_over_trainings(y[:1])


def test_ece_boundaries_and_perfect_calibration() -> None:
    # confidence exactly 0.6 = 9/15 sits in bin (8/15, 9/15], with the 0.55; both right
    p = torch.tensor([[0.6, 0.4], [0.55, 0.45]], dtype=torch.float64)
    assert ece(p, torch.tensor([0, 0])) == pytest.approx(1 - 0.575)
    assert ece(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])) == 0.0


def test_nll_is_finite_for_a_confident_mistake_and_inputs_are_checked() -> None:
    p = torch.tensor([[[1.0, 0.0]]])
    m = ensemble_metrics(p, torch.tensor([1]))
    assert m["nll"] == pytest.approx(-math.log(1e-12))
    with pytest.raises(ValueError, match="probs must be"):
        ensemble_metrics(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="labels must be"):
        ensemble_metrics(PROBS, torch.tensor([0, 1]))


# results.json, history.csv and the terminal table (results.py)


def _phases() -> list[PhaseRecord]:
    mother = ModelResult("m", "converged", "no improvement", [EpochRecord(1, 0.1, 1.0, 0.5, None, 2.0)])
    a = ModelResult(
        "a",
        "max_epochs",
        "reached",
        [EpochRecord(1, 0.1, 0.9, 0.6, 0.55, 1.5, 0.8, 0.5, 0.25),
         EpochRecord(2, 0.05, 0.7, 0.7, 0.6, 1.5, 0.85, 0.55, 0.25)],
    )
    b = ModelResult("b", "diverged", "loss nan", [EpochRecord(1, 0.1, float("nan"), 0.1, None, 1.5)])
    return [
        PhaseRecord("mothernets", 2.0, {"m": mother}),
        PhaseRecord("hatching", 0.5),
        PhaseRecord("members", 3.0, {"a": a, "b": b}),
    ]


def test_results_document(tmp_path: Path) -> None:
    metrics = ensemble_metrics(PROBS, LABELS, names=["a", "b"])
    r = build_results("mothernets", _phases(), metrics, info={"dataset": "synthetic", "seed": 0})
    assert r["schema_version"] == SCHEMA_VERSION == 1 and r["method"] == "mothernets"
    assert r["total_seconds"] == 5.5
    assert r["cost_usd"]["M1"] == {"usd_per_hour": 0.90, "usd": pytest.approx(5.5 * 0.90 / 3600)}
    assert r["cost_usd"]["M2"]["usd"] == pytest.approx(5.5 * 3.06 / 3600)
    assert [p["name"] for p in r["phases"]] == ["mothernets", "hatching", "members"]
    assert r["phases"][2]["models"] == ["a", "b"] and r["phases"][1]["models"] == []
    assert r["models"]["a"] == {
        "phase": "members", "status": "max_epochs", "message": "reached", "epochs": 2, "seconds": 3.0,
        "final_train_loss": 0.7, "final_train_acc": 0.7, "best_train_acc": 0.7, "final_test_acc": 0.6,
        "final_val_loss": 0.85, "final_val_acc": 0.55, "best_val_loss": 0.8, "val_seconds": 0.5,
    }  # fmt: skip
    # validation passes are reported beside the training time, never in it
    assert r["validation_seconds"] == 0.5 and r["phases"][2]["val_seconds"] == 0.5
    assert r["models"]["b"]["final_train_loss"] is None and r["models"]["b"]["best_train_acc"] is None
    assert r["members"]["b"]["accuracy"] == pytest.approx(2 / 3) and "members" not in r["ensemble"]
    assert r["ensemble"]["accuracy"] == 1.0 and r["info"]["dataset"] == "synthetic"
    assert build_results("fd", _phases(), total_seconds=9.0)["total_seconds"] == 9.0

    path = write_results(tmp_path, r)
    text = path.read_text()
    assert "NaN" not in text and not list(tmp_path.glob("*.tmp"))
    assert json.loads(text) == r == load_results(path)
    assert list(json.loads(text)) == sorted(r)
    path.write_text(json.dumps({**r, "schema_version": 99}))
    with pytest.raises(MNError, match="schema_version 99, this mncompile reads 1"):
        load_results(path)
    path.write_text("{")
    with pytest.raises(MNError, match="cannot read results file"):
        load_results(path)
    with pytest.raises(ValueError, match="model 'a' appears in phases members and again"):
        build_results("fd", [*_phases(), PhaseRecord("again", 1.0, {"a": _phases()[2].models["a"]})])


def test_history_csv(tmp_path: Path) -> None:
    path = write_history(tmp_path, _phases())
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert [(r["phase"], r["model"], r["epoch"]) for r in rows] == [
        ("mothernets", "m", "1"), ("members", "a", "1"), ("members", "a", "2"), ("members", "b", "1"),
    ]  # fmt: skip
    assert rows[0]["test_acc"] == "" and float(rows[2]["test_acc"]) == 0.6 and rows[3]["train_loss"] == "nan"
    assert float(rows[2]["lr"]) == 0.05 and float(rows[2]["seconds"]) == 1.5


def test_terminal_table() -> None:
    metrics = ensemble_metrics(PROBS, LABELS, names=["a", "b"])
    text = format_table(build_results("mothernets", _phases(), metrics))
    lines = text.splitlines()
    assert lines[0] == "method mothernets"
    assert lines[1].split() == [
        "model",
        "phase",
        "status",
        "epochs",
        "seconds",
        "train",
        "%",
        "test",
        "%",
        "test",
        "nll",
    ]
    row_a = next(ln for ln in lines if ln.startswith("a "))
    assert row_a.split() == [
        "a",
        "members",
        "max_epochs",
        "2",
        "3.0",
        "70.00",
        "33.33",
        f"{metrics['members']['a']['nll']:.4f}",
    ]
    assert "ensemble of 2: accuracy 100.00% (averaging), 100.00% (vote), oracle 100.00%" in text
    assert "time 5.5s (mothernets 2.0s, hatching 0.5s, members 3.0s)" in text
    assert "$0.0014 on M1 (one K80 GPU, AWS P2.xlarge / Azure NC6, $0.90/h)" in text
    assert "$0.0047 on M2 (one V100 GPU, AWS P3.2xlarge / Azure NCv3, $3.06/h)" in text


@pytest.mark.parametrize(("errors", "n"), [(0, 100), (1, 100), (25, 1000), (80, 8000), (999, 1000), (7, 7)])
def test_wilson_interval_matches_scipy(errors: int, n: int) -> None:
    from scipy.stats import binomtest

    from mncompile.runtime.metrics import wilson

    ci = binomtest(errors, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(errors, n)
    assert lo == pytest.approx(ci.low, abs=1e-12) and hi == pytest.approx(ci.high, abs=1e-12)
    assert lo <= errors / n <= hi


def test_results_carry_the_error_interval() -> None:
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]])
    labels = torch.tensor([0, 1, 1, 1])
    m = ensemble_metrics(probs, labels, names=["a"])
    assert m["error"] == 0.25 and m["test_examples"] == 4
    from mncompile.runtime.metrics import wilson

    assert m["error_interval"] == list(wilson(1, 4)) == m["members"]["a"]["error_interval"]
