"""What is measured on the test set: member and ensemble accuracy, calibration, diversity.

Inputs are the members' softmax probabilities `probs` of shape [K, N, C] (K members, N test
examples, C classes) and the labels [N]. Everything is computed in float64.

Conventions (the tests check each against a hand computation):

- NLL: mean over examples of -log p(label), with p clamped below at 1e-12 so that a confidently
  wrong float32 softmax gives a large, finite number instead of infinity.
- Brier score: mean over examples of sum over classes of (p_c - [c == label])^2; range [0, 2].
- ECE: 15 equal-width confidence bins over (0, 1], bin b holds max-probabilities in
  (b/15, (b+1)/15]; ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|.
- Ensemble prediction by averaging: the argmax of the mean of the members' probabilities.
- Majority vote: each member votes for its argmax; a tie between classes with the most votes goes
  to the tied class with the highest averaged probability, and if that ties too, the lowest index.
- Oracle accuracy: an example counts as right when any member gets it right.
- Disagreement: the fraction of examples on which two members' argmaxes differ, averaged over
  all pairs.
- Diversity (the paper's Section 3.4): Y_ij is member i's probability of the correct class on
  example j. The paper estimates Var(Y_ij) and Cov(Y_ij, Y_i'j) over repeated trainings and
  averages over examples; `diversity_over_trainings` does exactly that for results of R
  trainings, [R, K, N]. From ONE training there is no spread over trainings, so `diversity`
  uses the spread over examples instead: member_variance = mean over i of Var_j(Y_ij),
  member_covariance = mean over pairs i < i' of Cov_j(Y_ij, Y_i'j), ensemble_variance =
  Var_j(mean_i Y_ij). These are population moments (divide by N), so
  ensemble_variance = member_variance / K + (K - 1) / K * member_covariance holds exactly: the
  lower the covariance, the more averaging members reduces the variance.

>>> p = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.6, 0.4], [0.7, 0.3]]])
>>> m = ensemble_metrics(p, torch.tensor([0, 1]), names=["a", "b"])
>>> m["members"]["a"]["accuracy"], m["members"]["b"]["accuracy"], m["oracle_accuracy"]
(1.0, 0.5, 1.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch

EPS = 1e-12
BINS = 15


def _check(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probs.dim() != 3:
        raise ValueError(f"probs must be [members, examples, classes], got shape {tuple(probs.shape)}")
    if labels.dim() != 1 or len(labels) != probs.shape[1]:
        raise ValueError(f"labels must be [examples] = [{probs.shape[1]}], got shape {tuple(labels.shape)}")
    return probs.detach().cpu().double(), labels.detach().cpu().long()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of examples whose argmax is the label; probs [N, C]."""
    return float((probs.argmax(1) == labels).double().mean())


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the labels, p clamped at 1e-12; probs [N, C]."""
    p = probs.double().gather(1, labels[:, None]).squeeze(1)
    return float(-p.clamp_min(EPS).log().mean())


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over examples of the squared distance to the one-hot label; probs [N, C]."""
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(1).mean())


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = BINS) -> float:
    """Expected calibration error over `bins` equal-width bins of (0, 1]; probs [N, C]."""
    conf, pred = probs.double().max(1)
    right = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    total = 0.0
    for lo, hi in itertools.pairwise(edges.tolist()):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += float(inside.double().mean()) * abs(float(right[inside].mean() - conf[inside].mean()))
    return total


def vote(probs: torch.Tensor) -> torch.Tensor:
    """Majority-vote predictions [N] from member probabilities [K, N, C] (ties: see module doc)."""
    k, n, c = probs.shape
    votes = torch.zeros(n, c, dtype=torch.int64)
    votes.scatter_add_(1, probs.argmax(2).T, torch.ones(n, k, dtype=torch.int64))
    top = votes == votes.max(1, keepdim=True).values
    avg = probs.double().mean(0)
    # argmax returns the first maximum, which gives the lowest index among exact ties
    return torch.where(top, avg, torch.full_like(avg, -1.0)).argmax(1)


#: the normal quantile of a two-sided 95 % interval
Z95 = 1.959963984540054


def wilson(errors: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of an error rate `errors / n` (95 % by default).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 errors.

    >>> lo, hi = wilson(25, 1000)
    >>> round(lo, 4), round(hi, 4)
    (0.017, 0.0366)
    >>> wilson(0, 100)[0], round(wilson(0, 100)[1], 4)
    (0.0, 0.037)
    """
    if n < 1:
        raise ValueError("an interval needs at least one example")
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the ends, where the two terms cancel analytically but not in floating point
    lo = 0.0 if errors == 0 else max(0.0, centre - half)
    hi = 1.0 if errors == n else min(1.0, centre + half)
    return lo, hi


def error_interval(acc: float, n: int) -> list[float]:
    """[low, high] of the 95 % Wilson interval of the error 1 - `acc` over `n` test examples."""
    lo, hi = wilson(round((1.0 - acc) * n), n)
    return [lo, hi]


def member_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy (with its error's 95 % Wilson interval), NLL, Brier score and ECE of one model's [N, C]."""
    acc = accuracy(probs, labels)
    return {
        "accuracy": acc,
        "error_interval": error_interval(acc, len(labels)),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "ece": ece(probs, labels),
    }


def disagreement(probs: torch.Tensor) -> float | None:
    """Mean over member pairs of the fraction of examples they predict differently; None if K < 2."""
    preds = probs.argmax(2)
    pairs = list(itertools.combinations(range(len(preds)), 2))
    if not pairs:
        return None
    return sum(float((preds[i] != preds[j]).double().mean()) for i, j in pairs) / len(pairs)


def _summary(cov: torch.Tensor, ensemble_variance: float) -> dict[str, float | None]:
    """Mean diagonal and mean upper off-diagonal of a member covariance matrix [K, K]."""
    k = cov.shape[0]
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return {
        "member_variance": float(cov.diagonal().mean()),
        "member_covariance": sum(float(cov[i, j]) for i, j in pairs) / len(pairs) if pairs else None,
        "ensemble_variance": ensemble_variance,
    }


def correct_class_probs(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Y [K, N]: each member's probability of the correct class on each example."""
    return probs.double().gather(2, labels[None, :, None].expand(probs.shape[0], -1, 1)).squeeze(2)


def diversity(y: torch.Tensor) -> dict[str, float | None]:
    """Section 3.4 moments of Y [K, N] over the examples of one training (see module doc)."""
    y = y.double()
    centred = y - y.mean(1, keepdim=True)
    cov = centred @ centred.T / y.shape[1]
    mean = y.mean(0)
    return _summary(cov, float(((mean - mean.mean()) ** 2).mean()))


def diversity_over_trainings(y: torch.Tensor, ddof: int = 1) -> dict[str, float | None]:
    """The paper's estimator from R trainings, Y [R, K, N]: moments over r, averaged over examples.

    `ddof=1` (default) divides by R - 1, the unbiased estimate for a handful of repeats.
    """
    if y.dim() != 3 or y.shape[0] - ddof <= 0:
        raise ValueError(f"expected Y of shape [trainings > {ddof}, members, examples], got {tuple(y.shape)}")
    y = y.double()
    r = y.shape[0]
    centred = y - y.mean(0, keepdim=True)
    cov = torch.einsum("rin,rjn->ij", centred, centred) / (r - ddof) / y.shape[2]
    mean = y.mean(1)  # [R, N]: the ensemble's Y per training and example
    ens = ((mean - mean.mean(0, keepdim=True)) ** 2).sum(0) / (r - ddof)
    return _summary(cov, float(ens.mean()))


def ensemble_metrics(
    probs: torch.Tensor, labels: torch.Tensor, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Every metric of the module doc, as a JSON-ready dict (see docs/results-schema.md)."""
    probs, labels = _check(probs, labels)
    k = probs.shape[0]
    names = list(names) if names is not None else [f"member{i + 1}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for {k} members")
    avg = probs.mean(0)
    right = probs.argmax(2) == labels[None, :]
    out: dict[str, Any] = {
        "members": {name: member_metrics(probs[i], labels) for i, name in enumerate(names)},
        "size": k,
        "accuracy": accuracy(avg, labels),
        "accuracy_vote": float((vote(probs) == labels).double().mean()),
        "oracle_accuracy": float(right.any(0).double().mean()),
        "nll": nll(avg, labels),
        "brier": brier(avg, labels),
        "ece": ece(avg, labels),
        "disagreement": disagreement(probs),
        "diversity": diversity(correct_class_probs(probs, labels)) if probs.shape[1] > 0 else None,
    }
    out["error"] = 1.0 - out["accuracy"]
    # the ensemble gain: the best member's error minus the ensemble's (what averaging bought)
    out["best_member_error"] = 1.0 - max(m["accuracy"] for m in out["members"].values())
    out["gain"] = out["best_member_error"] - out["error"]
    out["error_interval"] = error_interval(out["accuracy"], len(labels))
    out["test_examples"] = len(labels)
    return _finite(out)


def _finite(obj: Any) -> Any:
    """NaN and infinities become None, so the dict is valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
