"""The training recipe: the loss-explosion guard, the Shared-MotherNet's gradient scaling, the gain."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncompile.cli import main as cli_main
from mncompile.runtime.context import Outcome, RunContext
from mncompile.runtime.data import load_dataset
from mncompile.runtime.jobs import BLOWUP_EPOCHS, Job, ModelResult, TrainSettings, blown_up
from mncompile.runtime.methods.shared_mothernets import GradScale, joint_loss
from mncompile.runtime.metrics import ensemble_metrics
from mncompile.runtime.progress import Progress
from mncompile.runtime.results import PhaseRecord
from mncompile.runtime.shared import build_shared
from mncompile.runtime.train import fit
from tests.conftest import spec_in
from tests.test_shared import CASES, _build, clusters

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = """ensemble p1 { input 1x16 classes 3
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
    net c plain { block { 3:6 } block { 3:6 } } }"""
RUN = ["--data", "synthetic", "--train-size", "96", "--test-size", "24", "--batch", "16", "--max-epochs", "3",
       "--hatched-max-epochs", "8", "--quiet"]


def test_the_guard_catches_a_collapse_and_spares_a_spike_that_recovers() -> None:
    # Shared-MotherNets on a VGG-shaped ensemble (the sum of 5 heads' losses, 10 classes)
    collapse = [1.19, 6.48, 7.25, 4.84, 11.19, 8.0, 7.5, 9.1, 6.6, 7.0]
    fired = next(i for i in range(1, len(collapse) + 1) if blown_up(collapse[:i], classes=10))
    assert fired == 4
    assert blown_up(collapse[:4], classes=10) == (2, 1.19)
    # the same collapse as a mean per head: the guard reads per-head losses (history.csv)
    assert blown_up([v / 5 for v in collapse[:6]], classes=10) is not None
    # a spike that comes back down (--hatched-lr 0.01 on the same spec, per head)
    spike = [v / 5 for v in (0.013, 0.26, 2.30, 1.07, 0.5, 0.2, 0.1, 0.05)]
    assert all(blown_up(spike[:i], classes=10) is None for i in range(1, len(spike) + 1))
    # a plain net learning from scratch never fires; nor does a warm restart (snapshot, FGE)
    assert all(blown_up([2.2, 1.6, 1.2, 0.9, 0.7][:i], classes=10) is None for i in range(1, 6))
    restart = [2.0, 0.3, 0.05, 0.9, 0.8, 0.7, 0.2]
    rates = [0.2, 0.1, 0.01, 0.2, 0.15, 0.1, 0.01]
    assert all(blown_up(restart[:i], rates[:i], classes=10) is None for i in range(1, 8))
    # a loss that explodes from the first epoch (judged against ln C)
    assert blown_up([40.0, 900.0, 1e5], classes=10) == (1, math.log(10))
    assert blown_up([40.0, 900.0], classes=10) is None  # fewer epochs than BLOWUP_EPOCHS


def test_an_exploding_learning_rate_stops_that_model_and_the_others_go_on() -> None:
    ds = load_dataset("synthetic", (8,), 3, seed=0, train_size=96, test_size=24)
    torch.manual_seed(0)

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                   torch.nn.Linear(32, 3))

    jobs = [Job("wild", net(), TrainSettings(batch=16, lr=200.0, max_epochs=12, patience=0, momentum=0.9),
                lr_flag="--hatched-lr"),
            Job("calm", net(), TrainSettings(batch=16, lr=0.05, max_epochs=12, patience=0))]
    out = fit(jobs, ds, progress=Progress(quiet=True))
    assert out["wild"].status == "diverged"
    assert out["wild"].epochs <= 2 * BLOWUP_EPOCHS
    assert "--hatched-lr" in str(out["wild"].message)
    assert out["calm"].status == "max_epochs" and out["calm"].epochs == 12


def test_a_member_that_diverged_is_left_out_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mncompile.runtime.methods import METHODS, MethodSpec, mothernets

    def blows_up_a(ctx: RunContext) -> Outcome:
        outcome = mothernets.run(ctx)
        r = outcome.phases[-1].models["a"]
        r.status, r.message = "diverged", "training loss blew up (lower --hatched-lr)"
        return outcome

    monkeypatch.setitem(METHODS, "mothernets", MethodSpec("mothernets", blows_up_a, "test"))
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["info"]["diverged_members"] == {"a": "training loss blew up (lower --hatched-lr)"}
    assert "member 'a' diverged and is left out of the ensemble" in err
    assert sorted(doc["members"]) == ["b", "c"] and doc["ensemble"]["size"] == 2
    assert doc["models"]["a"]["status"] == "diverged"


def test_the_bench_s_diversity_leaves_a_diverged_member_out(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from mncompile.runtime.methods import METHODS, MethodSpec, mothernets

    def blows_up_a(ctx: RunContext) -> Outcome:
        outcome = mothernets.run(ctx)
        outcome.phases[-1].models["a"].status = "diverged"
        return outcome

    monkeypatch.setitem(METHODS, "mothernets", MethodSpec("mothernets", blows_up_a, "test"))
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    bench = ["bench", str(spec), *RUN[:6], "--seeds", "1", "--methods", "mothernets", "-g", "1",
             "--epochs-scale", "0.5", "--out", "o"]
    assert cli_main(bench) == 0
    run = tmp_path / "o" / "runs" / "mothernets-g1" / "seed0"
    assert json.loads((run / "y_members.json").read_text()) == ["b", "c"]
    assert np.load(run / "y.npy").shape == (2, 24)


def test_every_member_blowing_up_is_an_error_and_writes_nothing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    rc = cli_main(["run", str(spec), *RUN, "--hatched-lr", "1000", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "every member diverged" in err and "lower --hatched-lr" in err
    assert not (tmp_path / "out").exists()


def test_a_mothernet_that_blows_up_stops_the_run_and_names_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    rc = cli_main(["run", str(spec), *RUN, "--max-epochs", "6", "--lr", "40", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "MotherNet 'mothernet1' diverged" in err and "lower --lr" in err
    assert not (tmp_path / "out").exists()


def test_a_diverged_shared_model_takes_its_heads_out_of_the_ensemble() -> None:
    net = torch.nn.Linear(1, 1)
    bad = ModelResult("shared-m", "diverged", "training loss blew up", [])
    good = ModelResult("d", "converged", "", [])
    outcome = Outcome([PhaseRecord("shared", 1.0, {"shared-m": bad, "d": good})],
                      {"a": net, "b": net, "d": net}, members_of={"shared-m": ["a", "b"]})
    why = "shared-m: training loss blew up"
    assert outcome.diverged() == {"a": why, "b": why}


def test_the_ensemble_gain_is_the_best_members_error_minus_the_ensembles() -> None:
    labels = torch.tensor([0, 1, 0, 1])
    one_hot = torch.nn.functional.one_hot
    a = one_hot(torch.tensor([0, 1, 1, 1]), 2).float() * 0.8 + 0.1   # 3 of 4 right
    b = one_hot(torch.tensor([0, 0, 0, 1]), 2).float() * 0.6 + 0.2   # 3 of 4 right, less sure
    m = ensemble_metrics(torch.stack([a, b]), labels)
    assert m["best_member_error"] == pytest.approx(0.25)
    assert m["gain"] == pytest.approx(m["best_member_error"] - m["error"])


@pytest.mark.parametrize(("family", "rank"), CASES)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_scaling_gives_own_units_their_members_rate_and_shared_units_the_mean(
        family: str, rank: int, data: st.DataObject) -> None:
    e = data.draw(clusters(family, rank))
    sp, members, _, shared_module, _ = _build(e)
    cls = shared_module.SHARED.get(getattr(sp, "mother", None))
    if cls is None:
        return
    shared = build_shared(cls, members)
    k = len(cls.MEMBERS)
    x = torch.randn((6, *e.input), generator=torch.Generator().manual_seed(4))
    y = torch.randint(0, e.classes, (6,), generator=torch.Generator().manual_seed(5))

    def grads(mode: str) -> dict[str, torch.Tensor]:
        shared.zero_grad(set_to_none=True)
        joint_loss(shared(x), y, None).backward()
        GradScale(shared, mode)(shared)
        return {n: p.grad.clone() for n, p in shared.named_parameters() if p.grad is not None}

    plain, scaled, mean = grads("sum"), grads("scaled"), grads("mean")
    owner = {g: o for g, (o, _) in cls.GROUPS.items()}
    for name, g in plain.items():
        torch.testing.assert_close(mean[name], g / k)
        # each row's factor follows its group's owner: 1/K for the MotherNet's, 1 for a member's
        factor = GradScale(shared, "scaled").scales[name].flatten()
        i = int(name.split(".")[1])
        step, module = cls.STEPS[i], shared.steps[i]
        part = name.split(".")[2]
        ids = (module.blocks[int(name.split(".")[3])].rows if part == "blocks"
               else step["reads"] if part == "pre" else step["makes"])
        expect = torch.cat([torch.full((cls.GROUPS[gid][1],), 1 / k if owner[gid] is None else 1.0)
                            for gid in ids])
        torch.testing.assert_close(factor, expect)
        torch.testing.assert_close(scaled[name], g * factor.reshape((-1,) + (1,) * (g.dim() - 1)))
        # a member's own group is written by that member alone; a MotherNet group by all K
        if part == "blocks":
            for gid in ids:
                writers = {p["member"] for p in step["parts"] if gid in p["rows"] and p["key"]}
                assert writers == ({owner[gid]} if owner[gid] is not None else set(cls.MEMBERS)), (name, gid)


def test_the_scaling_refuses_an_unknown_mode() -> None:
    e_sp, members, _, shared_module, _ = _build(_small())
    shared = build_shared(shared_module.SHARED[e_sp.mother], members)
    with pytest.raises(Exception, match="unknown shared loss"):
        GradScale(shared, "median")


def _small():  # type: ignore[no-untyped-def]
    from mncompile.api import loads

    return loads(SPEC)


def test_a_batch_order_per_member_is_its_own_and_sequential_training_still_matches() -> None:
    from mncompile.runtime.train import train_lockstep, train_sequential

    ds = load_dataset("synthetic", (8,), 3, seed=0, train_size=96, test_size=24)

    def nets() -> dict[str, torch.nn.Module]:
        torch.manual_seed(0)
        return {n: torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
                for n in ("a", "b")}

    own = TrainSettings(batch=16, lr=0.05, max_epochs=2, patience=0, order="member")
    shared = TrainSettings(batch=16, lr=0.05, max_epochs=2, patience=0)
    runs = {}
    for label, s, train in (("own", own, train_lockstep), ("own-seq", own, train_sequential),
                            ("shared", shared, train_lockstep)):
        models = nets()
        train(models, ds, s, progress=Progress(quiet=True))
        runs[label] = {n: torch.cat([p.detach().flatten() for p in m.parameters()])
                       for n, m in models.items()}
    for n in ("a", "b"):
        assert torch.equal(runs["own"][n], runs["own-seq"][n])  # one model's batches are its own
        assert not torch.equal(runs["own"][n], runs["shared"][n])
    assert "order" in own.to_dict() and "order" not in shared.to_dict()  # old checkpoints resume


def test_hatched_stopping_on_validation_needs_a_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    rc = cli_main(["run", str(spec), *RUN, "--val-fraction", "0", "--hatched-stop", "val-loss",
                   "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "--hatched-stop val-loss needs a validation split" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    rc = cli_main(["run", str(spec), *RUN, "--hatched-stop", "val-loss", "--hatched-patience", "2",
                   "--batch-order", "member", "--out", str(tmp_path / "ok")])
    assert rc == 0
    doc = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert doc["info"]["hatched_stop"] == "val-loss" and doc["info"]["batch_order"] == "member"
    assert doc["info"]["hatched_patience"] == 2


def test_a_bootstrap_batch_order_fine_tunes_each_hatched_member_on_its_own_sample(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mncompile.runtime.train as train_module
    from mncompile.runtime.methods.bagging import bootstrap_indices

    seen: dict[str, tuple[str, torch.Tensor]] = {}
    real_fit = train_module.fit

    def spy(jobs: list[Job], data: object, **kw: object) -> dict[str, ModelResult]:
        for j in jobs:
            seen[j.name] = (str(kw["phase"]), data.y_train.clone())  # type: ignore[attr-defined]
        return real_fit(jobs, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "fit", spy)
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    assert cli_main(["run", str(spec), *RUN, "-g", "1", "--batch-order", "bootstrap", "--seed", "3",
                     "--out", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["info"]["batch_order"] == "bootstrap"
    ds = load_dataset("synthetic", (1, 16), 3, seed=0, train_size=96, test_size=24, val_fraction=0.1)
    n = ds.train_size
    assert seen["mothernet1"][1].tolist() == ds.y_train.tolist()  # the MotherNet trains on all of it
    for m in ("a", "b", "c"):
        phase, y = seen[m]
        assert phase == f"members {m}"  # each member alone: its data is its own
        assert y.tolist() == ds.y_train[bootstrap_indices(3, m, n)].tolist()
    assert seen["a"][1].tolist() != seen["b"][1].tolist()
    # and the finished run resumes as it was trained
    assert cli_main(["run", str(spec), *RUN, "-g", "1", "--batch-order", "bootstrap", "--seed", "3",
                     "--out", str(tmp_path / "out"), "--resume"]) == 0


def test_a_treenet_that_diverges_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    rc = cli_main(["run", str(spec), *RUN, "--max-epochs", "6", "--method", "treenet", "--shared-layers", "1",
                   "--lr", "1000", "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "TreeNet 'treenet' diverged" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_recipe_sets_a_method_option_only_for_the_method_that_reads_it() -> None:
    import argparse

    from mncompile.runtime.options import apply_recipe

    for method, expect in (("mothernets", None), ("shared-mothernets", "sum")):
        args = argparse.Namespace(recipe="paper", method=method, val_fraction=None, stop=None,
                                  batch_order=None, noise_mode=None, shared_loss=None)
        apply_recipe(args)
        assert args.shared_loss == expect and args.val_fraction == 0.0 and args.batch_order == "shared"
    given = argparse.Namespace(recipe="paper", method="mothernets", val_fraction=0.2, stop=None,
                               batch_order=None, noise_mode=None, shared_loss=None)
    apply_recipe(given)
    assert given.val_fraction == 0.2  # an option given explicitly wins


@pytest.mark.parametrize("argv, method, expect", [
    ([], "mothernets", 0.1),  # the default recipe: twice the run's lr
    ([], "shared-mothernets", 0.02),  # measured: twice the lr breaks a Shared-MotherNet's start
    (["--hatched-lr-factor", "2"], "shared-mothernets", 0.1),  # unless asked for
    (["--lr", "0.03"], "mothernets", 0.06),  # twice the lr the run trains at
    (["--hatched-lr-factor", "3"], "mothernets", 0.15),
    (["--hatched-lr-factor", "spec"], "mothernets", 0.02),
    (["--recipe", "paper"], "mothernets", 0.02),
    (["--recipe", "paper", "--hatched-lr-factor", "2"], "mothernets", 0.1),  # explicit wins
    (["--hatched-lr", "0.07"], "mothernets", 0.07),  # --hatched-lr wins over the factor
    ([], "full-data", 0.02),  # no hatched members: the spec's value stays, unused
])
def test_the_hatched_lr_is_twice_the_lr_by_default_and_the_spec_s_with_the_paper_recipe(
        argv: list[str], method: str, expect: float) -> None:
    from mncompile.runtime.options import apply_recipe, build_parser, resolve_config

    args = build_parser({"ensemble": "p1"}).parse_args([*argv, "--method", method])
    apply_recipe(args)
    config = resolve_config({"lr": 0.05, "hatched_lr": 0.02}, args)
    assert config["hatched_lr"] == pytest.approx(expect)
    assert config["lr"] == (0.03 if "--lr" in argv else 0.05)


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "1000", "twice"])
def test_a_bad_hatched_lr_factor_is_refused_before_anything_trains(
        bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    with pytest.raises(SystemExit) as exit_:
        cli_main(["run", str(spec), *RUN, "--hatched-lr-factor", bad, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--hatched-lr-factor" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_run_records_the_factor_and_the_hatched_lr_it_trained_at(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_in(tmp_path, monkeypatch, SPEC, "p1.mnet")
    assert cli_main(["run", str(spec), *RUN, "--out", str(tmp_path / "out")]) == 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    lr = doc["info"]["config"]["lr"]
    assert doc["info"]["hatched_lr_factor"] == 2.0
    assert doc["info"]["config"]["hatched_lr"] == pytest.approx(2 * lr)
    import csv

    with open(tmp_path / "out" / "history.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["phase"] == "members"]
    assert rows and max(float(r["lr"]) for r in rows) == pytest.approx(2 * lr)  # the members' first epoch


def test_hatched_options_given_to_a_method_without_hatched_members_are_named_as_unused() -> None:
    from mncompile.runtime.options import build_parser, unused_hatched_options

    parse = build_parser({"ensemble": "p1"}).parse_args
    note = unused_hatched_options(parse(["--method", "snapshot", "--batch-order", "member",
                                         "--noise", "0.1"]))
    assert note is not None and "--batch-order, --noise set" in note and "snapshot trains none" in note
    assert unused_hatched_options(parse(["--method", "snapshot"])) is None  # the recipe's values say nothing
    assert unused_hatched_options(parse(["--method", "mothernets", "--batch-order", "member"])) is None
    assert unused_hatched_options(parse(["--method", "shared-mothernets", "--hatched-lr", "0.1"])) is None
    assert "--hatched-lr-factor sets" in str(unused_hatched_options(
        parse(["--method", "full-data", "--hatched-lr-factor", "spec"])))
