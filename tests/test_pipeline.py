"""The training pipeline: every family end to end, singletons, methods, options, user errors."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mncompile.api import loads
from mncompile.cli import main as cli_main
from mncompile.compiler import compile_ensemble
from mncompile.runtime import pipeline
from mncompile.runtime.context import Outcome, RunContext
from mncompile.runtime.methods import METHODS, MethodSpec
from mncompile.runtime.options import TRAIN_KEYS, build_parser, resolve_config

TINY = ["--data", "synthetic", "--train-size", "48", "--test-size", "24", "--batch", "16",
        "--max-epochs", "2", "--hatched-max-epochs", "1", "--quiet"]

SPECS: dict[str, str] = {
    "plain1d": """ensemble p1 { input 1x16 classes 3
        net a plain { block { 3:4 } block { 3:6 } dense 8 }
        net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
        net c plain { block { 3:6 } block { 3:6 } } }""",
    "plain2d": """ensemble p2 { input 2x8x8 classes 3
        net a plain { block { 3:4 } block { 3:4 } }
        net b plain { block { 3:6 } block { 5:4 3:4 } dense 6 } }""",
    "residual": """ensemble r { input 2x8x8 classes 3
        net a residual { stem 3:4 block { 3:4 } block { 3:8 } }
        net b residual { stem 3:4 block { 3:4 x2 } block { 3:8 x2 } dense 6 } }""",
    "dense": """ensemble d { input 1x16 classes 3
        net a dense { stem 3:4 block { 3:2 x2 } block { 3:2 } }
        net b dense { stem 3:6 block { 3:3 x3 } block { 3:2 x2 } } }""",
    "mlp": """ensemble m { input 12 classes 4
        net a mlp { dense 8 }
        net b mlp { dense 12 6 }
        net c mlp { dense 10 } }""",
}


def _write_spec(tmp_path: Path, text: str, name: str = "spec.mnet") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _run(tmp_path: Path, spec: Path, *extra: str, out: str = "out") -> int:
    return cli_main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / out),
                     *TINY, *extra])


def _results(tmp_path: Path, out: str = "out") -> dict[str, Any]:
    return json.loads((tmp_path / out / "results.json").read_text())


@pytest.mark.parametrize("family", sorted(SPECS))
def test_every_family_trains_end_to_end(tmp_path: Path, family: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS[family])
    e = loads(SPECS[family])
    assert _run(tmp_path, spec) == 0
    printed = capsys.readouterr().out
    assert "ensemble of" in printed and "on M1 (one K80 GPU" in printed and "member covariance" in printed
    doc = _results(tmp_path)
    names = [n.name for n in e.nets]
    assert doc["schema_version"] == 1 and doc["method"] == "mothernets"
    assert sorted(doc["members"]) == sorted(names)
    assert [p["name"] for p in doc["phases"]] == ["mothernets", "hatching", "members"]
    assert doc["phases"][0]["models"] == ["mothernet1"]
    assert doc["phases"][2]["models"] == names
    assert doc["models"]["mothernet1"]["epochs"] == 2
    assert all(doc["models"][n]["epochs"] == 1 for n in names)
    ens = doc["ensemble"]
    assert ens["size"] == len(names) and 0 <= ens["accuracy"] <= 1
    assert ens["diversity"]["member_covariance"] is not None
    # every table of these specs is exact, and the hatched nets compute the MotherNet's function
    checks = doc["info"]["hatch"]
    assert sorted(checks) == sorted(names)
    assert all(c["table_exact"] and c["relative_diff"] < 1e-4 for c in checks.values()), checks
    assert doc["total_seconds"] == pytest.approx(sum(p["seconds"] for p in doc["phases"]))
    history = (tmp_path / "out" / "history.csv").read_text().splitlines()
    assert history[0].startswith("phase,model,epoch") and len(history) == 1 + 2 + len(names)
    assert (tmp_path / "gen" / "train.py").is_file()
    assert sorted(p.stem for p in (tmp_path / "gen" / "hatch").iterdir()) == sorted(names)


def test_singleton_clusters_are_trained_once_without_hatching(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec, "--clusters", "2") == 0
    doc = _results(tmp_path)
    plan = json.loads((tmp_path / "gen" / "plan.json").read_text())
    lone = [c["members"][0] for c in plan["clusters"] if len(c["members"]) == 1]
    pair = next(c for c in plan["clusters"] if len(c["members"]) == 2)
    assert len(lone) == 1
    assert sorted(doc["phases"][0]["models"]) == sorted([*lone, pair["mother"]["name"]])
    assert doc["phases"][2]["models"] == pair["members"]
    assert doc["models"][lone[0]]["phase"] == "mothernets" and doc["models"][lone[0]]["epochs"] == 2
    assert sorted(doc["info"]["hatch"]) == sorted(pair["members"])
    assert sorted(p.name for p in (tmp_path / "gen" / "hatch").iterdir()) == sorted(
        f"{m}.json" for m in pair["members"])


def test_all_singletons_have_no_members_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec, "--clusters", "3") == 0
    doc = _results(tmp_path)
    assert [p["name"] for p in doc["phases"]] == ["mothernets"]
    assert sorted(doc["phases"][0]["models"]) == ["a", "b", "c"]
    assert not (tmp_path / "gen" / "hatch").exists()


def test_full_data_trains_members_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec, "--method", "full-data") == 0
    doc = _results(tmp_path)
    assert doc["method"] == "full-data"
    assert [p["name"] for p in doc["phases"]] == ["members"]
    assert all(doc["models"][n]["epochs"] == 2 for n in "abc")  # MotherNet settings: max_epochs
    assert (tmp_path / "out" / "ckpt" / "full-data" / "members" / "a.pt").is_file()


def test_sequential_equals_lockstep_and_the_seed_matters(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["plain1d"])
    # (run-to-run determinism across processes: test_run_cli and test_resume_kill)
    assert _run(tmp_path, spec, "--fuse", "off", out="a") == 0  # the unfused lockstep
    assert _run(tmp_path, spec, out="b") == 0  # auto: plain 1-D nets train fused, on the CPU too
    assert _run(tmp_path, spec, "--sequential", out="c") == 0
    assert _run(tmp_path, spec, "--seed", "5", out="d") == 0
    a, b, c, d = (_results(tmp_path, o) for o in "abcd")
    assert a["members"] == c["members"]
    assert a["ensemble"] == c["ensemble"]
    assert a["members"] != d["members"]
    for name in a["models"]:
        assert a["models"][name]["final_train_loss"] == c["models"][name]["final_train_loss"]
    # fused: the same training to float32 rounding
    assert (a["info"]["fuse"], b["info"]["fuse"], c["info"]["fuse"]) == (False, True, False)
    for name in a["models"]:
        lo, lf = a["models"][name]["final_train_loss"], b["models"][name]["final_train_loss"]
        assert abs(lo - lf) <= 1e-4 * max(1.0, abs(lo)), name


def test_resolve_config_applies_overrides_then_the_epochs_scale() -> None:
    parser = build_parser({"ensemble": "e"})
    train = {"batch": 64, "max_epochs": 60, "hatched_max_epochs": 15, "patience": 10, "lr": 0.05}
    cfg = resolve_config(train, parser.parse_args(["--epochs-scale", "0.1", "--lr", "0.2", "--seed", "3"]))
    assert (cfg["max_epochs"], cfg["hatched_max_epochs"], cfg["patience"]) == (6, 2, 1)
    assert cfg["lr"] == 0.2 and cfg["batch"] == 64 and cfg["seed"] == 3 and cfg["hatched_lr"] == 0.1
    cfg = resolve_config({**train, "patience": 0}, parser.parse_args(["--epochs-scale", "0.001"]))
    assert (cfg["max_epochs"], cfg["hatched_max_epochs"], cfg["patience"]) == (1, 1, 0)
    cfg = resolve_config(train, parser.parse_args(["--epochs-scale", "1.5", "--max-epochs", "7"]))
    assert cfg["max_epochs"] == math.ceil(7 * 1.5) and cfg["patience"] == 15


@pytest.mark.parametrize("bad", [["--epochs-scale", "0"], ["--lr", "-1"], ["--batch", "x"],
                                 ["--schedule", "step"], ["--device", "tpu"],
                                 # the tester's: accepted with no word before
                                 ["--epochs-scale", "1e9"], ["--train-size", "10000000"],
                                 ["--seed", "12345678901234567890"], ["--momentum", "1"],
                                 ["--lr", "inf"], ["--max-epochs", "1000001"]])
def test_bad_options_exit_2(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser({"ensemble": "e"}).parse_args(bad)
    assert exc.value.code == 2


def test_option_ranges_admit_real_use() -> None:
    args = build_parser({"ensemble": "e"}).parse_args(
        ["--train-size", "500000", "--test-size", "100000", "--epochs-scale", "10", "--seed", "4294967295",
         "--momentum", "0.99", "--max-epochs", "5000"])
    assert (args.train_size, args.seed, args.momentum) == (500000, 4294967295, 0.99)


def test_a_method_registered_elsewhere_runs_and_is_evaluated(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunContext] = []

    def untrained(ctx: RunContext) -> Outcome:
        seen.append(ctx)
        return Outcome([], {m: ctx.build(m) for m in ctx.members}, {"note": "untrained"})

    monkeypatch.setitem(METHODS, "untrained", MethodSpec("untrained", untrained, "test"))
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec, "--method", "untrained") == 0
    doc = _results(tmp_path)
    assert doc["method"] == "untrained" and doc["info"]["note"] == "untrained"
    assert doc["phases"] == [] and sorted(doc["members"]) == ["a", "b", "c"]
    ctx = seen[0]
    assert ctx.mother_settings.max_epochs == 2 and ctx.hatched_settings.max_epochs == 1
    assert ctx.ckpt_dir("x") == tmp_path / "out" / "ckpt" / "untrained" / "x"
    # the same name and seed give the same initial weights, another name others
    w1, w2 = ctx.build("a").state_dict(), ctx.build("a").state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_unknown_method_and_mismatched_data_fail_before_training(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["plain1d"])
    assert _run(tmp_path, spec, "--method", "nope") == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    # digits is 1x8x8 (64 values per example), the spec says 1x16
    spec = _write_spec(tmp_path, "ensemble x { input 1x16 classes 10 net a plain { block { 3:4 } } }")
    rc = cli_main(["run", str(spec), "-o", str(tmp_path / "gen-x"), "--out", str(tmp_path / "out"),
                   "--data", "digits", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "dataset 'digits'" in err and "1x16" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec) == 0
    ckpt = tmp_path / "out" / "ckpt" / "mothernets" / "members" / "b.pt"
    ckpt.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    assert _run(tmp_path, spec, "--resume") == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "corrupt" in err and "Traceback" not in err


def test_resume_with_other_options_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec) == 0
    capsys.readouterr()
    assert _run(tmp_path, spec, "--resume", "--test-size", "20") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "test_size 24 -> 20" in err
    # the same options resume: every model is finished, so nothing trains again
    assert _run(tmp_path, spec, "--resume") == 0


def test_compile_writes_train_py_and_hatch_tables_with_safe_names(tmp_path: Path) -> None:
    text = """ensemble e { input 6 classes 2 data synthetic train { lr 0.25 batch 7 schedule constant }
        net ab mlp { dense 4 } net AB mlp { dense 5 } net input mlp { dense 6 } }"""
    e = loads(text, source="e.mnet")
    out = compile_ensemble(e)
    hatch = sorted(p for p in out.files if p.startswith("hatch/"))
    assert hatch == ["hatch/AB_1.json", "hatch/ab.json", "hatch/input.json"]
    members = {json.loads(out.files[p])["member"] for p in hatch}
    assert members == {"ab", "AB", "input"}
    namespace: dict[str, Any] = {}
    exec(compile(out.files["train.py"].replace('if __name__ == "__main__":', "if False:"), "train.py",
                 "exec"), namespace)
    assert namespace["DATA"] == "synthetic" and namespace["ENSEMBLE"] == "e"
    assert namespace["TRAIN"] == e.config.model_dump()
    assert namespace["TRAIN"]["lr"] == 0.25 and namespace["TRAIN"]["schedule"] == "constant"


def test_compile_reports_hatch_exactness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _write_spec(tmp_path, SPECS["dense"])
    assert cli_main([str(spec), "-o", str(tmp_path / "g")]) == 0
    assert "hatching: all 2 tables exact" in capsys.readouterr().out
    # a member with more dense blocks than its MotherNet hatches inexactly (a transition is added)
    spec = _write_spec(tmp_path, """ensemble d { input 1x16 classes 3
        net a dense { stem 3:4 block { 3:2 } }
        net b dense { stem 3:4 block { 3:2 } block { 3:2 } } }""", "d2.mnet")
    assert cli_main([str(spec), "-o", str(tmp_path / "g2")]) == 0
    out = capsys.readouterr().out
    assert "hatching: 1 of 2 tables exact; not exact: b\n" in out
    # the warning names the member, its place in the spec (block 2 is on line 3) and the fix
    warning = next(line for line in out.splitlines() if "warning:" in line)
    assert warning.startswith(f"  {spec}:3:") and "member 'b'" in warning
    assert "the transition after block 1" in warning and "'mothernet1'" in warning
    help_line = out.splitlines()[out.splitlines().index(warning) + 1]
    assert help_line.startswith("    = help: move the layers of block 2 into block 1")


def test_parser_documents_every_train_key() -> None:
    text = build_parser({"ensemble": "e"}).format_help()
    for key in TRAIN_KEYS:
        assert "--" + key.replace("_", "-") in text
    for option in ("--data", "--data-dir", "--device", "--out", "--resume", "--epochs-scale", "--seed",
                   "--quiet", "--sequential", "--method"):
        assert option in text
    assert "runs/e" in text


def test_args_namespace_is_what_execute_reads() -> None:
    args = build_parser({"ensemble": "e"}).parse_args([])
    assert isinstance(args, argparse.Namespace)
    # without --out, execute writes to runs/<ensemble>/<method>
    assert args.method == "mothernets" and args.out is None and args.epochs_scale == 1.0


def test_a_table_that_claims_exactness_wrongly_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A member with an extra dense block hatches inexactly; pretend its table said 'exact'."""
    import dataclasses

    real = pipeline.load_folder

    def lying(folder: Path) -> Any:
        models, plan, tables = real(folder)
        return models, plan, {m: dataclasses.replace(t, exact=True, reasons=()) for m, t in tables.items()}

    monkeypatch.setattr(pipeline, "load_folder", lying)
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, """ensemble d { input 1x16 classes 3
        net a dense { stem 3:4 block { 3:2 } }
        net b dense { stem 3:4 block { 3:2 } block { 3:2 } } }""")
    assert _run(tmp_path, spec) == 0
    err = capsys.readouterr().err
    assert "warning: hatching 'b' from 'mothernet1' should be exact" in err
    checks = _results(tmp_path)["info"]["hatch"]
    assert "warning" in checks["b"] and checks["b"]["relative_diff"] > 1e-3
    assert "warning" not in checks["a"] and checks["a"]["max_abs_diff"] < 1e-4


def test_the_run_names_the_member_that_does_not_hatch_exactly(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = _write_spec(tmp_path, """ensemble d { input 1x16 classes 3
        net a dense { stem 3:4 block { 3:2 } }
        net b dense { stem 3:4 block { 3:2 } block { 3:2 } } }""")
    assert _run(tmp_path, spec) == 0
    out = capsys.readouterr().out
    assert "hatching: 1 of 2 tables exact; largest output difference before noise" in out
    assert "(member b)" in out
    assert "  b does not start as its MotherNet's function: " in out and "mncompile check" in out


def test_a_fresh_run_starts_from_an_empty_checkpoint_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Checkpoints left by an earlier run must never be taken for this run's on a later --resume."""
    monkeypatch.chdir(tmp_path)
    spec = _write_spec(tmp_path, SPECS["mlp"])
    assert _run(tmp_path, spec) == 0
    stale = tmp_path / "out" / "ckpt" / "mothernets" / "members" / "b.pt"
    leftover = stale.parent / "leftover.pt"
    leftover.write_bytes(stale.read_bytes())
    first = stale.read_bytes()
    capsys.readouterr()
    assert _run(tmp_path, spec, "--lr", "0.07") == 2  # a finished run is never replaced unasked
    assert "already holds a finished run (ensemble m, method mothernets, g 1, seed 0, written" in \
        capsys.readouterr().err
    assert leftover.exists()
    assert _run(tmp_path, spec, "--lr", "0.07", "--force") == 0
    assert not leftover.exists()
    assert stale.read_bytes() != first  # retrained from the new MotherNet, not kept
    capsys.readouterr()
    assert _run(tmp_path, spec, "--lr", "0.07", "--resume", "--alpha", "0.5") == 2
    assert "method_options" in capsys.readouterr().err


def test_methods_are_one_explicit_table() -> None:
    """Every method is listed in runtime/methods/__init__.py, with the module that runs it."""
    assert list(METHODS) == ["mothernets", "shared-mothernets", "full-data", "bagging", "distill", "snapshot",
                             "fge", "treenet"]
    for name, spec in METHODS.items():
        assert spec.name == name and spec.help
        assert spec.run.__module__ == "mncompile.runtime.methods." + name.replace("-", "_")


def test_hatched_max_epochs_0_evaluates_the_hatched_members_as_they_are(tmp_path: Path) -> None:
    """The spec allows hatched_max_epochs 0 (check passes it); train.py used to refuse it."""
    spec = _write_spec(tmp_path, SPECS["mlp"].replace("{ input 12 classes 4",
                                                      "{ input 12 classes 4 train { hatched_max_epochs 0 }"))
    assert cli_main(["check", str(spec)]) == 0
    assert cli_main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / "out"),
                     *[a for a in TINY if a not in ("--hatched-max-epochs", "1")]]) == 0
    doc = _results(tmp_path)
    hatched = [m for m, r in doc["models"].items() if r["phase"] == "members"]
    assert hatched and all(doc["models"][m]["epochs"] == 0 for m in hatched)
    assert all(doc["models"][m]["message"] == "max_epochs is 0: not trained" for m in hatched)
    assert doc["info"]["config"]["hatched_max_epochs"] == 0
