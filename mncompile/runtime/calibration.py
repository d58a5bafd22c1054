"""Temperature scaling (Guo et al., 2017) of a trained ensemble, fitted on the validation split.

One temperature T > 0 divides every member's logits before its softmax; the ensemble averages the
tempered softmax outputs. `fit_temperature` finds T with LBFGS on the ensemble's negative
log-likelihood of the validation labels (T = exp(t), t from 0: no change). With `per_member`,
each member gets its own T, fitted on its own NLL. The ensemble's argmax can move with T (a sum
of tempered softmaxes is not a tempered sum), so the test metrics are reported before and after.

>>> import torch
>>> logits = torch.tensor([[[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]]])  # 1 member, 4 examples
>>> t = fit_temperature(logits, torch.tensor([0, 1, 1, 0]))  # half of the confident guesses are wrong
>>> bool(t.item() > 4.0)  # so the temperature flattens them
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from mncompile.diagnostics import MNError

if TYPE_CHECKING:
    from torch import nn

#: the temperatures a fit may reach: beyond them a member is (nearly) uniform or (nearly) one-hot
T_MIN, T_MAX = 0.01, 100.0
MODES = ("ensemble", "member")


def member_logits(members: Mapping[str, nn.Module], x: torch.Tensor, device: torch.device,
                  batch: int = 1024) -> torch.Tensor:
    """[K, N, C] float32 logits on the CPU, every member in eval mode, without gradients."""
    from mncompile.runtime.train import prepare_input

    out = []
    with torch.no_grad():
        for model in members.values():
            model.eval()
            parts = [model(prepare_input(x[i:i + batch], device)).float().cpu()
                     for i in range(0, len(x), batch)]
            out.append(torch.cat(parts))
    return torch.stack(out)


def tempered_probs(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """[K, N, C] member probabilities: softmax(logits_k / T_k); `temperature` [1] or [K]."""
    t = temperature.to(logits.dtype).reshape(-1, 1, 1)
    return torch.softmax(logits / t, dim=2)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, per_member: bool = False) -> torch.Tensor:
    """T ([1], or [K] with `per_member`) minimising the NLL of `labels` [N] under `logits` [K, N, C]."""
    logits, labels = logits.double(), labels.cpu().long()
    k = logits.shape[0]
    t = torch.zeros(k if per_member else 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([t], lr=0.5, max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    lo, hi = math.log(T_MIN), math.log(T_MAX)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        probs = tempered_probs(logits, t.clamp(lo, hi).exp())
        if per_member:  # each member on its own likelihood
            p = probs.gather(2, labels[None, :, None].expand(k, -1, 1)).squeeze(2)
        else:
            p = probs.mean(0).gather(1, labels[:, None]).squeeze(1)
        loss = -p.clamp_min(1e-12).log().mean(-1).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return t.detach().clamp(lo, hi).exp().float()


def calibrate(members: Mapping[str, nn.Module], dataset: Any, device: torch.device,
              mode: str) -> dict[str, Any]:
    """Fit the temperature on `dataset`'s validation split; the report results.json stores under
    `calibration` (the fit, and the test metrics before and after), with "temperature" a float,
    or member -> float with mode "member"."""
    from mncompile.runtime.metrics import BINS, ensemble_metrics

    if mode not in MODES:
        raise ValueError(f"unknown calibration mode {mode!r}")
    if not dataset.has_val:
        raise MNError("temperature scaling fits on the validation split, and this run has none",
                      hint="give --val-fraction F (0 < F <= 0.5), or val= to fit()")
    names = list(members)
    val = member_logits(members, dataset.x_val, device)
    t = fit_temperature(val, dataset.y_val, per_member=mode == "member")
    y_val, y_test = dataset.y_val.cpu(), dataset.y_test.cpu()
    test = member_logits(members, dataset.x_test, device)
    ones = torch.ones(1)

    def metrics(logits: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor) -> dict[str, float]:
        m = ensemble_metrics(tempered_probs(logits, temperature), labels, names=names)
        return {k: m[k] for k in ("error", "nll", "brier", "ece")}

    temperature: float | dict[str, float]
    temperature = ({n: float(v) for n, v in zip(names, t.tolist(), strict=True)} if mode == "member"
                   else float(t.item()))
    return {
        "mode": mode, "temperature": temperature, "val_examples": len(y_val),
        "fit": "LBFGS on the ensemble's validation NLL (T = exp(t), from T = 1)" if mode == "ensemble"
        else "LBFGS on each member's validation NLL",
        "val": {"before": metrics(val, y_val, ones), "after": metrics(val, y_val, t)},
        "test": {"before": metrics(test, y_test, ones), "after": metrics(test, y_test, t)},
        "ece_bins": f"{BINS} equal-width bins of (0, 1], bin b = (b/{BINS}, (b+1)/{BINS}]",
    }


def describe(report: Mapping[str, Any]) -> str:
    """The lines the run prints about its temperature scaling."""
    t = report["temperature"]
    what = (f"T = {t:.3f}" if isinstance(t, float)
            else "T per member " + ", ".join(f"{m} {v:.3f}" for m, v in t.items()))
    b, a = report["test"]["before"], report["test"]["after"]
    return (f"temperature scaling: {what}, fitted on {report['val_examples']} validation examples "
            f"({report['fit']})\n  test before -> after: error {b['error'] * 100:.2f}% -> "
            f"{a['error'] * 100:.2f}%, "
            f"nll {b['nll']:.4f} -> {a['nll']:.4f}, brier {b['brier']:.4f} -> {a['brier']:.4f}, "
            f"ece {b['ece']:.4f} -> {a['ece']:.4f} ({report['ece_bins']})")
