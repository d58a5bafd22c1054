"""bench/schedule_sim.py: a smoke test of the parallel-training simulation (fast, no training)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mncompile.diagnostics import MNError
from mncompile.runtime.placement import parallel_seconds

ROOT = Path(__file__).resolve().parent.parent
V5 = str(ROOT / "examples/v5.mnet")
D5 = str(ROOT / "examples/d5.mnet")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location("schedule_sim", ROOT / "bench/schedule_sim.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["schedule_sim"] = module
    spec.loader.exec_module(module)
    return module


def test_doctests(sim: ModuleType) -> None:
    assert doctest.testmod(sim).failed == 0


def test_v5_workload(sim: ModuleType) -> None:
    w = sim.workload(V5)
    mn, se, fd = (w.jobs[m] for m in ("mothernets", "snapshot", "full-data"))
    # MotherNets g=1: the MotherNet, then the five members (largest first), 200 and 60 epochs
    assert w.g == 1 and mn[0].name == "MN:mothernet1" and mn[0].after == ()
    assert [j.name for j in mn[1:]] == ["vgg19", "vgg16b", "vgg16", "vgg16a", "vgg13"]
    assert all(j.after == ("MN:mothernet1",) for j in mn[1:])
    assert mn[0].seconds == pytest.approx(w.epoch_seconds["mothernet1"] * 200)
    assert mn[1].seconds == pytest.approx(w.epoch_seconds["vgg19"] * 60)
    # SE: vgg16 (params nearest the mean), 5 chained cycles of 200 // 5 epochs
    assert [j.name for j in se] == [f"vgg16@{i}" for i in range(1, 6)]
    assert [j.after for j in se[1:]] == [(f"vgg16@{i}",) for i in range(1, 5)]
    assert se[0].seconds == pytest.approx(w.epoch_seconds["vgg16"] * 40)
    # FD: five independent members, 200 epochs each
    assert len(fd) == 5 and all(j.after == () for j in fd)
    # the MACs model: 6 x MACs x 50,000 images / 1.5 TFLOP/s
    assert w.epoch_seconds["vgg16"] == pytest.approx(6 * 313463808 * 50_000 / 1.5e12)


def test_measured_epoch_seconds_scale_by_macs(sim: ModuleType) -> None:
    w = sim.workload(V5, measured={"vgg16": 40.0, "d5.densenet40_k12": 1.0})
    assert w.measured == ("vgg16",) and w.epoch_seconds["vgg16"] == 40.0
    assert w.epoch_seconds["vgg19"] == pytest.approx(40.0 * 398398464 / 313463808)
    w = sim.workload(V5, hatched_epochs=10, cycle_epochs=60, max_epochs=100)
    assert w.jobs["mothernets"][1].seconds == pytest.approx(w.epoch_seconds["vgg19"] * 10)
    assert w.jobs["snapshot"][0].seconds == pytest.approx(w.epoch_seconds["vgg16"] * 60)
    assert w.jobs["full-data"][0].seconds == pytest.approx(w.epoch_seconds["vgg19"] * 100)


def test_simulated_times(sim: ModuleType) -> None:
    w = sim.workload(V5)
    res = sim.run_all(w, [2, 8], alpha=0.1)
    for m in sim.METHODS:
        assert set(res[m]) == {1, 2, 8}
        assert res[m][1].makespan == pytest.approx(sum(j.seconds for j in w.jobs[m]))
        assert res[m][8].makespan < res[m][2].makespan < res[m][1].makespan
    se_total = sum(j.seconds for j in w.jobs["snapshot"])
    assert res["snapshot"][8].makespan == pytest.approx(parallel_seconds(se_total, 8, 0.1))
    rows = sim.table_rows(res, [1, 8])
    assert rows[0][2] == "1.00x" and len(rows[0]) == len(sim.HEADERS)


def test_main_prints_table_json_and_plot(sim: ModuleType, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out_json, png = tmp_path / "s.json", tmp_path / "s.png"
    rc = sim.main(["--spec", V5, "--spec", D5, "--gpus", "1..2", "8", "--alpha", "0", "--alpha", "0.2",
                   "--json", str(out_json), "--plot", str(png)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert printed.startswith("SIMULATED") and "not a measurement" in printed
    assert "v5 (examples/v5.mnet)" in printed and "alpha 0.2" in printed and "SE/MN" in printed
    assert ("repeat: python bench/schedule_sim.py --spec examples/v5.mnet --spec examples/d5.mnet "
            "--gpus 1..2 8 --alpha 0 --alpha 0.2 --tflops 1.5 --images 50000") in printed
    doc = json.loads(out_json.read_text())
    assert doc["simulation"] is True and doc["gpus"] == [1, 2, 8]
    se = doc["specs"]["v5"]["alpha"]["0.0"]["snapshot"]
    assert se["8"] == pytest.approx(se["1"] / 8)  # alpha 0: perfect scaling
    assert png.read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "0"], "at least 1"),
    (["--gpus", "3..1"], "ranges"),
    (["--alpha", "-1"], "--alpha"),
    (["--epoch-seconds", "vgg16"], "NET=SECONDS"),
    (["--epoch-seconds", "vgg16=0"], "NET=SECONDS"),
    (["--epoch-seconds", "nope=3"], "names no net"),
    (["--hatched-epochs", "0"], "--hatched-epochs"),
    (["--spec", "/no/such.mnet"], "no such file"),
])
def test_user_errors(sim: ModuleType, argv: list[str], message: str,
                     capsys: pytest.CaptureFixture[str]) -> None:
    assert sim.main(["--spec", V5, *argv] if "--spec" not in argv else argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_parse_helpers(sim: ModuleType) -> None:
    assert sim.parse_gpus(["8", "1..3"]) == [1, 2, 3, 8]
    with pytest.raises(MNError):
        sim.parse_gpus(["x"])
    assert sim.parse_measured([]) == {}
