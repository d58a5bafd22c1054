"""Metrics of mncompile.runtime.metrics against hand computations on tiny fixed examples."""

from __future__ import annotations

import math

import pytest
import torch

from mncompile.runtime.metrics import (
    correct_class_probs,
    diversity,
    diversity_over_trainings,
    ece,
    ensemble_metrics,
    vote,
)

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
