"""Every method's results stay what they were: a fresh run against tests/data/runtime_pin.json.

Bit for bit on the CPU at one thread (wall times aside); see tests/runtime_pin.py for what is
compared and how to rewrite the pin when a change moves results on purpose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_pin import METHODS, PIN, run_all


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
