"""bench/stream.py: a quick run of the shared scan's bench (one epoch on 200 examples)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("fmt", ["npz", "png"])
def test_smoke(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    if fmt == "png":
        pytest.importorskip("PIL")
    spec = importlib.util.spec_from_file_location("stream_bench", ROOT / "bench/stream.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["stream_bench"] = module
    spec.loader.exec_module(module)
    rc = module.main(["--workers", "0", "--epochs", "1", "--train-size", "200", "--test-size", "50",
                      "--repeats", "1", "--format", fmt, "--scale", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("0 "))
    assert row.split()[-1] == "True"  # lockstep and sequential gave the same ensemble
    assert "repeat: OMP_NUM_THREADS=1 python bench/stream.py --workers 0" in out
