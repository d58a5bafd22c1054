"""bench/gpu_check.sh and bench/gpu_runs.py, the prepared GPU check of fused training, on the CPU."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_script_parses_and_names_its_usage() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    script = ROOT / "bench" / "gpu_check.sh"
    assert subprocess.run([bash, "-n", str(script)], check=False).returncode == 0
    done = subprocess.run([bash, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage: bash bench/gpu_check.sh fetch | run OUT" in done.stderr


def test_gpu_runs_times_fused_and_unfused_runs_that_agree(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("gpu_runs_bench", ROOT / "bench" / "gpu_runs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_runs_bench"] = module
    spec.loader.exec_module(module)
    rc = module.main(["--device", "cpu", "--specs", "examples/mnist1d.mnet", "--train-size", "200",
                      "--test-size", "100", "--epochs-scale", "0.02"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| mnist1d.mnet")]
    assert [r[1].strip() for r in rows] == ["mothernets", "members"], out
    members = rows[1]
    assert members[2].strip() == "5"
    fused_s, unfused_s = float(members[3]), float(members[4])
    assert fused_s > 0 and unfused_s > 0
    fused_err, unfused_err = (float(v) for v in members[7].split("/"))
    assert abs(fused_err - unfused_err) <= 0.02  # the same training to float32 rounding: 2 examples at most
    assert "info.fuse True / False" in out
    assert "device cpu (CPU)" in out.splitlines()[0]
