"""`mncompile bench`: every output file on a tiny ensemble, the Pareto front, user errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from mncompile.cli import main as cli_main
from mncompile.runtime.frontier import Run, aggregate, pareto_front, time_segments

SPEC = """ensemble t { input 1x16 classes 3
    train { batch 16 max_epochs 3 hatched_max_epochs 1 patience 50 lr 0.05 }
    net a plain { block { 3:4 } block { 3:6 } block { 3:6 } dense 8 }
    net b plain { block { 3:4 } block { 3:8 } block { 3:6 } }
    net c plain { block { 3:6 } block { 3:6 } block { 3:8 } } }"""
TINY = ["--data", "synthetic", "--train-size", "40", "--test-size", "20"]
PNG = b"\x89PNG\r\n\x1a\n"


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "t.mnet"
    path.write_text(text, encoding="utf-8")
    return path


def test_bench_writes_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench"
    rc = cli_main(["bench", str(_spec(tmp_path)), *TINY, "--seeds", "2", "--out", str(out),
                   "--shared-layers", "2"])
    printed = capsys.readouterr().out
    assert rc == 0
    methods = ["bagging", "distill", "fge", "full-data", "snapshot", "treenet"]
    # default clusters: one per architecture class (1), the midpoint (2) and m (3), where g = m
    # is left out because full-data trains the same nets; 2 seeds each; MotherNets and
    # Shared-MotherNets at each g
    assert "20 runs" in printed and "[bench 20/20] treenet seed 1" in printed and "ETA" in printed
    assert "mothernets at g = 3 = m left out" in printed and "mothernets-g3" not in printed
    for name in ("frontier.csv", "frontier.md", "frontier.png", "breakdown.png", "diversity.csv",
                 "diversity.png", "learning_curves.png"):
        assert (out / name).is_file(), name
    for png in ("frontier.png", "breakdown.png", "diversity.png", "learning_curves.png"):
        assert (out / png).read_bytes().startswith(PNG)
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    labels = [(r["method"], r["g"]) for r in rows]
    shared = [("shared-mothernets", "1"), ("shared-mothernets", "2")]
    assert labels == ([("mothernets", "1"), ("mothernets", "2")] + [(m, "") for m in methods[:4]]
                      + shared + [(m, "") for m in methods[4:]])
    for r in rows:  # every error has its Wilson interval over the 20 test examples
        assert r["test_examples"] == "20"
        assert float(r["error_low"]) <= float(r["error_mean"]) <= float(r["error_high"])
    assert all(r["seeds"] == "2" for r in rows)
    assert any(r["pareto"] == "yes" for r in rows)
    for r in rows:
        run_errors = []
        label = r["method"] + (f"-g{r['g']}" if r["g"] else "")
        for seed in (0, 1):
            doc = json.loads((out / "runs" / label / f"seed{seed}" / "results.json").read_text())
            assert doc["method"] == r["method"]
            run_errors.append(doc["ensemble"]["error"])
        assert float(r["error_mean"]) == pytest.approx(sum(run_errors) / 2, abs=1e-6)
        assert float(r["usd_m2"]) == pytest.approx(float(r["seconds_mean"]) * 3.06 / 3600, rel=1e-4)
    # treenet got the bench's --shared-layers
    doc = json.loads((out / "runs" / "treenet" / "seed0" / "results.json").read_text())
    assert doc["info"]["treenet"]["shared_layers"] == 2
    c = json.loads((out / "runs" / "shared-mothernets-g1" / "seed0" / "results.json").read_text())
    assert c["info"]["shared"]["clusters"]["mothernet1"]["shared"]
    div = list(csv.DictReader((out / "diversity.csv").open()))
    assert len(div) == len(rows) and all(float(d["member_variance"]) >= 0 for d in div)
    md = (out / "frontier.md").read_text()
    assert "| mothernets g=1 | 2 |" in md and "Diversity over trainings" in md
    assert "## Oracle accuracy (Table 3)" in md and "## Calibration" in md and "15 equal-width" in md
    assert "mncompile bench" in md and "--seeds 2" in md
    assert (out / "code" / "g1" / "models.py").is_file() and (out / "code" / "g2" / "plan.json").is_file()

    # --resume keeps the finished runs and rewrites the same table
    before = (out / "frontier.csv").read_text()
    assert cli_main(["bench", str(_spec(tmp_path)), *TINY, "--seeds", "2", "--out", str(out),
                     "--shared-layers", "2", "--resume"]) == 0
    assert "kept (finished before)" in capsys.readouterr().out
    assert (out / "frontier.csv").read_text() == before


def test_bench_one_seed_has_no_diversity_and_honours_methods_and_clusters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "b1"
    assert cli_main(["bench", str(_spec(tmp_path)), *TINY, "--methods", "mothernets,snapshot", "--seeds", "1",
                     "--clusters", "2", "--out", str(out), "--epochs-scale", "0.5"]) == 0
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    assert [(r["method"], r["g"]) for r in rows] == [("mothernets", "2"), ("snapshot", "")]
    assert not (out / "diversity.csv").exists() and "Diversity" not in (out / "frontier.md").read_text()
    doc = json.loads((out / "runs" / "snapshot" / "seed0" / "results.json").read_text())
    assert doc["info"]["config"]["max_epochs"] == 2 and doc["info"]["epochs_scale"] == 0.5


@pytest.mark.parametrize("argv,message", [
    (["--clusters", "4"], "--clusters 4 is not possible"),
    (["--methods", "mothernets,nope"], "unknown method 'nope'"),
    (["--data", "digits"], "dataset 'digits'"),
])
def test_bench_user_errors_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["bench", str(_spec(tmp_path)), "--data", "synthetic", "--out", "o", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_refuses_treenet_for_residual_nets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, """ensemble r { input 2x8x8 classes 3
        net a residual { stem 3:4 block { 3:4 } } net b residual { stem 3:4 block { 3:4 x2 } } }""")
    assert cli_main(["bench", str(spec), "--data", "synthetic", "--methods", "treenet", "--out", "o"]) == 2
    assert "treenet needs plain conv members" in capsys.readouterr().err
    assert not (tmp_path / "o" / "runs").exists()


def test_pareto_front() -> None:
    # (time, error): lower is better for both
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5)]) == [0]
    assert pareto_front([(1.0, 0.3), (2.0, 0.2), (3.0, 0.25), (0.5, 0.5)]) == [3, 0, 1]
    # a point as fast but less accurate is dominated; of exact duplicates the first stays
    assert pareto_front([(1.0, 0.3), (1.0, 0.2), (1.0, 0.2)]) == [1]
    # a slower point with the same error is dominated
    assert pareto_front([(2.0, 0.1), (1.0, 0.1)]) == [1]
    pts = [(5.0, 0.1), (4.0, 0.2), (3.0, 0.3), (2.0, 0.4), (6.0, 0.05), (4.5, 0.25)]
    front = pareto_front(pts)
    assert front == [3, 2, 1, 0, 4]
    for i, (t, e) in enumerate(pts):
        dominated = any(t2 <= t and e2 <= e and (t2, e2) != (t, e) for t2, e2 in pts)
        assert (i in front) == (not dominated)


def _doc(error: float, seconds: float, phases: list[dict[str, Any]],
         models: dict[str, float]) -> dict[str, Any]:
    return {"ensemble": {"error": error, "oracle_accuracy": 0.9},
            "members": {"a": {"accuracy": 0.8}, "b": {"accuracy": 0.6}},
            "total_seconds": seconds, "phases": phases,
            "models": {n: {"seconds": s} for n, s in models.items()}}


def test_aggregate_means_stds_and_pareto_flags() -> None:
    ph = [{"name": "members", "seconds": 1.0, "models": []}]
    runs = [Run("x", None, 0, _doc(0.1, 10.0, ph, {})), Run("x", None, 1, _doc(0.2, 12.0, ph, {})),
            Run("mothernets", 1, 0, _doc(0.25, 5.0, ph, {})), Run("y", None, 0, _doc(0.5, 20.0, ph, {}))]
    rows = aggregate(runs)
    assert [r.label for r in rows] == ["x", "mothernets g=1", "y"]
    s = rows[0].summary()
    assert s["error_mean"] == pytest.approx(0.15) and s["error_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert s["seconds_mean"] == 11.0 and s["member_error"] == pytest.approx(0.3) and s["seeds"] == 2
    # the best member errs 0.2 in both seeds: gains 0.2 - 0.1 and 0.2 - 0.2
    assert s["best_member_error"] == pytest.approx(0.2)
    assert s["gain"] == pytest.approx(0.05) and s["gain_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert [r.pareto for r in rows] == [True, True, False]
    assert rows[1].summary()["error_std"] != rows[1].summary()["error_std"]  # NaN: one seed


def test_time_segments_split_only_members_trained_one_at_a_time() -> None:
    seq = _doc(0.1, 3.0, [{"name": "members", "seconds": 3.0, "models": ["a", "b"]}], {"a": 1.0, "b": 2.0})
    assert time_segments(seq) == [("members", "a", 1.0), ("members", "b", 2.0)]
    lock = _doc(0.1, 2.0, [{"name": "mothernets", "seconds": 1.5, "models": ["m"]},
                           {"name": "hatching", "seconds": 0.01, "models": []},
                           {"name": "members", "seconds": 2.0, "models": ["a", "b"]}],
                {"m": 1.5, "a": 2.0, "b": 2.0})
    assert time_segments(lock) == [("mothernets", "m", 1.5), ("hatching", "", 0.01),
                                   ("members", "2 in lockstep", 2.0)]


def test_mothernets_at_g_m_is_full_data_so_bench_runs_it_once(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    assert cli_main(["bench", str(spec), *TINY, "--seeds", "1", "--methods", "mothernets", "--clusters", "3",
                     "--out", "a"]) == 0
    assert cli_main(["bench", str(spec), *TINY, "--seeds", "1", "--methods", "full-data", "--out", "b"]) == 0
    # one MotherNet per net hatches each net as itself, trained with the same seeds: the same ensemble
    a = json.loads((tmp_path / "a" / "runs" / "mothernets-g3" / "seed0" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "runs" / "full-data" / "seed0" / "results.json").read_text())
    assert a["members"] == b["members"]


def _row(method: str, error: float, seconds: float, n: int = 1000) -> Any:
    from mncompile.runtime.frontier import Row

    doc = _doc(error, seconds, [], {})
    doc["ensemble"]["test_examples"] = n
    return Row(method, None, [Run(method, None, 0, doc)])


def test_the_pareto_column_strikes_a_point_only_when_the_intervals_are_apart() -> None:
    from mncompile.runtime.frontier import interval_front

    # 1.0 % vs 1.2 % on 1000 examples: the Wilson intervals overlap, so the slower, better point
    # and the faster, worse one both stay; 1.0 % vs 3.0 % are apart, so the slow 3 % is off the front
    rows = [_row("fast", 0.012, 10.0), _row("slow", 0.010, 30.0), _row("worse", 0.030, 40.0)]
    assert interval_front(rows) == [0, 1]
    # a faster point whose interval overlaps does not strike a slower one off
    rows = [_row("a", 0.010, 5.0), _row("b", 0.011, 6.0)]
    assert interval_front(rows) == [0, 1]
    # on 100,000 examples the same 1.0 % vs 1.2 % are apart
    rows = [_row("a", 0.010, 5.0, 100_000), _row("b", 0.012, 6.0, 100_000)]
    assert interval_front(rows) == [0]
    lo, hi = rows[0].interval
    assert lo < 0.010 < hi


def test_resume_refuses_finished_runs_made_with_other_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    argv = ["bench", str(spec), *TINY, "--seeds", "1", "--methods", "snapshot", "--out", "o"]
    assert cli_main(argv) == 0
    capsys.readouterr()
    # the same bench with another split must not average its runs with the kept one
    assert cli_main([*argv, "--resume", "--val-fraction", "0"]) == 2
    err = capsys.readouterr().err
    assert "val_fraction 0.1 (this bench: 0.0)" in err and "Traceback" not in err


def test_resume_refuses_mothernets_runs_made_at_another_hatched_lr(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    argv = ["bench", str(spec), *TINY, "--seeds", "1", "--methods", "mothernets", "-g", "1", "--out", "o"]
    assert cli_main([*argv, "--hatched-lr-factor", "3"]) == 0
    capsys.readouterr()
    assert cli_main([*argv, "--resume"]) == 2  # the default recipe's hatched members train at 2 x lr
    err = capsys.readouterr().err
    assert "hatched_lr 0.15" in err and "(this bench: 0.1)" in err and "Traceback" not in err
    assert cli_main([*argv, "--resume", "--hatched-lr-factor", "3"]) == 0


def test_a_one_member_ensemble_benches_without_covariance(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, "ensemble one { input 1x16 classes 3 train { batch 16 max_epochs 2 }\n"
                           "  net a plain { block { 3:4 } dense 8 } }")
    assert cli_main(["bench", str(spec), *TINY, "--seeds", "2", "--methods", "full-data", "--out", "o"]) == 0
    md = (tmp_path / "o" / "frontier.md").read_text()
    assert "None" not in md and (tmp_path / "o" / "diversity.png").is_file()


def test_bench_passes_only_the_options_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Each run applies the recipe for its own method: a method without hatched members is not handed
    the hatched members' options the recipe filled in (which it would name as unused)."""
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path)
    assert cli_main(["bench", str(spec), *TINY, "--seeds", "1", "--methods", "snapshot", "--out", "o"]) == 0
    assert "not used" not in capsys.readouterr().err
    assert "not used" not in (tmp_path / "o" / "runs" / "snapshot" / "seed0" / "log.txt").read_text()
