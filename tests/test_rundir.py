"""A run's --out folder: per-method defaults, one run at a time, finished runs kept, no debris."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mncompile.cli import main
from mncompile.runtime.rundir import RunFolder

MLP = """ensemble m { input 12 classes 4
  net a mlp { dense 8 }
  net b mlp { dense 12 }
}
"""
TINY = ["--data", "synthetic", "--train-size", "48", "--test-size", "24", "--batch", "16",
        "--max-epochs", "2", "--hatched-max-epochs", "1", "--quiet"]


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "m.mnet"
    path.write_text(MLP)
    return path


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", str(_spec(tmp_path)), "-o", str(tmp_path / "gen"), *TINY, *extra])


def test_each_method_has_its_own_default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(tmp_path) == 0
    assert "wrote runs/m/mothernets/results.json" in capsys.readouterr().out
    assert _run(tmp_path, "--method", "full-data") == 0
    for method in ("mothernets", "full-data"):
        doc = json.loads((tmp_path / "runs" / "m" / method / "results.json").read_text())
        assert doc["method"] == method


def test_a_finished_run_is_kept_unless_resumed_or_forced(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out)) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert _run(tmp_path, "--out", str(out), "--seed", "5") == 2
    err = capsys.readouterr().err
    assert (f"--out '{out}' already holds a finished run (ensemble m, method mothernets, g 1, seed 0, "
            "written") in err
    assert "--resume" in err and "--force" in err and (out / "results.json").read_bytes() == before
    assert _run(tmp_path, "--out", str(out), "--resume") == 0  # evaluated again, nothing retrained
    assert json.loads((out / "results.json").read_text())["members"] == json.loads(before)["members"]
    assert _run(tmp_path, "--out", str(out), "--seed", "5", "--force") == 0
    assert json.loads((out / "results.json").read_text())["info"]["seed"] == 5


def test_a_second_run_on_a_busy_folder_names_the_first(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import os

    out = tmp_path / "out"
    with RunFolder(out, method="mothernets"):
        assert _run(tmp_path, "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert f"--out '{out}' is in use by another run (pid {os.getpid()})" in err
    assert not (out / "results.json").exists()
    # a lock left by a killed run (its process gone, so nobody holds it) is taken over
    (out / ".lock").write_text("pid 999999\n")
    assert _run(tmp_path, "--out", str(out)) == 0
    assert (out / ".lock").read_text() == f"pid {os.getpid()}\n"


def test_the_lock_holds_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "out"
    code = ("import time; from pathlib import Path; from mncompile.runtime.rundir import RunFolder\n"
            f"with RunFolder(Path({str(out)!r}), method='x'):\n"
            "    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        from mncompile.diagnostics import MNError

        with pytest.raises(MNError, match=rf"in use by another run \(pid {holder.pid}\)"), \
                RunFolder(out, method="x"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with RunFolder(out, method="x"):  # the killed holder's lock is free again
        pass


def test_a_run_where_everything_diverges_leaves_nothing(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out), "--lr", "1e4") == 2
    assert "diverged" in capsys.readouterr().err
    assert not out.exists()
    # beside another method's finished run, only this method's checkpoints go
    assert _run(tmp_path, "--out", str(out), "--method", "full-data") == 0
    assert _run(tmp_path, "--out", str(out), "--lr", "1e4", "--force") == 2
    assert not (out / "ckpt" / "mothernets").exists() and (out / "ckpt" / "full-data").is_dir()


def test_resume_messages_say_what_is_there_and_what_differs(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, "--out", str(out), "--resume") == 0
    assert "holds no earlier run of this method; training from scratch" in capsys.readouterr().err
    assert _run(tmp_path, "--out", str(out), "--resume", "--lr", "0.07") == 2
    err = capsys.readouterr().err
    assert "differs from the one in" in err and "config.lr 0.1 -> 0.07" in err and "'batch'" not in err


def test_huge_values_in_an_npz_leave_nothing_half_written(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The tester's second way to a half-written ckpt/: data that makes every model diverge."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "huge.npz"
    np.savez(data, x_train=rng.normal(size=(48, 12)) * 1e30, y_train=rng.integers(0, 4, 48),
             x_test=rng.normal(size=(24, 12)), y_test=rng.integers(0, 4, 24))
    out = tmp_path / "out"
    argv = [a for a in TINY if a not in ("--data", "synthetic")]
    assert main(["run", str(_spec(tmp_path)), "-o", str(tmp_path / "gen"), *argv, "--data", f"npz:{data}",
                 "--out", str(out)]) == 2
    assert "diverged" in capsys.readouterr().err
    assert not out.exists()
