"""Fixtures shared by several test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny nets gain nothing from threads, and on a busy machine idle OpenMP workers spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spec_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, name: str = "spec.mnet") -> Path:
    """`text` written as `tmp_path/name`, with the working folder moved there (runs write beside it)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path
