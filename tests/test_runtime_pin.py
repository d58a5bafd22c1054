"""Every method's results stay what they were: a fresh run against tests/data/runtime_pin.json.

Bit for bit on the CPU at one thread (wall times aside); see tests/runtime_pin.py for what is
compared and how to rewrite the pin when a change moves results on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_pin import METHODS, PAPER_PIN, PIN, run_all


def _diff(path: str, want: Any, got: Any, out: list[str]) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got)):
            _diff(f"{path}.{k}", want.get(k, "<missing>"), got.get(k, "<missing>"), out)
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            _diff(f"{path}[{i}]", w, g, out)
    elif want != got:
        out.append(f"{path}: pinned {want!r}, now {got!r}")


@pytest.mark.slow
def test_every_method_matches_the_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pinned = json.loads(PIN.read_text(encoding="utf-8"))
    assert sorted(pinned) == sorted(METHODS)
    now = run_all(tmp_path)
    problems: list[str] = []
    _diff("", pinned, now, problems)
    assert not problems, f"{len(problems)} values moved:\n" + "\n".join(problems[:30])


def _per_head(pinned: dict[str, Any]) -> dict[str, Any]:
    """The landed pin with a joint model's recorded loss (the sum over its K heads) read per head."""
    import copy

    out = copy.deepcopy(pinned)
    for method, phase in (("treenet", "treenet"), ("shared-mothernets", "shared")):
        k = out[method]["ensemble"]["size"]
        for row in out[method]["history"]:
            if row["phase"] == phase:
                row["train_loss"] = float(row["train_loss"]) / k
        for model in out[method]["models"].values():
            if model["phase"] == phase:
                model["final_train_loss"] /= k
    return out


@pytest.mark.slow
def test_the_paper_recipe_reproduces_the_landed_results(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--recipe paper` gives the results every method had before the recipe options (commit a43a4d1).

    Bit for bit, but for the fields added since (the ensemble gain, the joint objective's name) and
    a joint model's recorded
    training loss, which is now the mean over its heads instead of their sum (to 1e-12).
    """
    monkeypatch.chdir(tmp_path)
    pinned = _per_head(json.loads(PAPER_PIN.read_text(encoding="utf-8")))
    now = run_all(tmp_path, ["--recipe", "paper"])
    problems: list[str] = []
    _diff("", pinned, now, problems)
    moved = []
    for p in problems:
        added = (".ensemble.gain:", ".ensemble.best_member_error:", ".info.shared.loss:")
        if "pinned '<missing>'" in p and any(a in p for a in added):
            continue
        path, _, rest = p.partition(": pinned ")
        want, _, got = rest.partition(", now ")
        try:
            if abs(float(want.strip("'")) - float(got.strip("'"))) <= 1e-12 * abs(float(want.strip("'"))):
                continue
        except ValueError:
            pass
        moved.append(p)
    assert not moved, f"{len(moved)} values moved:\n" + "\n".join(moved[:30])
