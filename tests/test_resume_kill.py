"""A run killed with SIGKILL mid-training resumes to exactly the result of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mncompile.api import loads
from mncompile.compiler import compile_ensemble
from mncompile.runtime.pipeline import main as pipeline_main
from mncompile.writer import write_folder

SPEC = """ensemble k { input 24 classes 4 data synthetic
  train { batch 32 lr 0.05 hatched_lr 0.02 patience 50 max_epochs 3 hatched_max_epochs 30 }
  net a mlp { dense 32 } net b mlp { dense 48 24 } net c mlp { dense 64 } }"""
OPTIONS = ["--train-size", "1024", "--test-size", "128", "--quiet"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _generate(tmp_path: Path) -> tuple[Path, dict]:
    e = loads(SPEC, source="k.mnet")
    folder = tmp_path / "gen"
    write_folder(folder, compile_ensemble(e).files)
    return folder, {"ensemble": e.name, "data": e.data, "train": e.config.model_dump()}


def _start(folder: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(folder / "train.py"), *OPTIONS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path_glob: Path, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(path_glob.parent.glob(path_glob.name)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before a checkpoint appeared: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint {path_glob} after {timeout}s")


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: torch.load(p, weights_only=True)["model"] for p in sorted(out.glob("ckpt/*/*/*.pt"))}


def _comparable(doc: dict) -> dict:
    """results.json without wall times (and the fields that only hold them)."""
    models = {n: {k: v for k, v in m.items() if k not in ("seconds", "val_seconds")}
              for n, m in doc["models"].items()}
    return {"members": doc["members"], "ensemble": doc["ensemble"], "models": models,
            "phases": [p["name"] for p in doc["phases"]]}


def test_sigkill_during_member_training_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    folder, defaults = _generate(tmp_path)
    killed = tmp_path / "killed"
    proc = _start(folder, killed)
    # the MotherNet is done and the hatched members have finished at least one epoch
    _wait_for(killed / "ckpt" / "mothernets" / "members" / "c.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists(), "the run finished before it was killed"
    meta = torch.load(killed / "ckpt" / "mothernets" / "members" / "a.pt", weights_only=True)["meta"]
    assert 1 <= meta["epoch"] < 30

    resumed = _start(folder, killed, "--resume")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr

    # the reference, uninterrupted, in this process (another interpreter, same seed, same numbers)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert pipeline_main(folder, defaults, [*OPTIONS, "--out", str(tmp_path / "straight")]) == 0
    finally:
        torch.set_num_threads(threads)
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert _comparable(a) == _comparable(b)
    assert all(b["models"][m]["epochs"] == 30 for m in "abc")
    wa, wb = _weights(killed), _weights(tmp_path / "straight")
    assert sorted(wa) == sorted(wb) == ["a", "b", "c", "mothernet1"]
    for name in wa:
        assert all(torch.equal(wa[name][k], wb[name][k]) for k in wb[name]), name


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path: Path) -> None:
    folder, _ = _generate(tmp_path)
    out = tmp_path / "out"
    proc = _start(folder, out)
    _wait_for(out / "ckpt" / "mothernets" / "members" / "a.pt", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "train.py" in stderr
    assert "Traceback" not in stderr
    assert not (out / "results.json").exists()
