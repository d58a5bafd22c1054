"""The baselines: every method end to end, the KD loss, the SE/FGE schedules, TreeNet, bagging."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mncompile.api import loads
from mncompile.cli import main as cli_main
from mncompile.compiler import compile_ensemble
from mncompile.diagnostics import MNError
from mncompile.runtime.context import RunContext
from mncompile.runtime.data import load_dataset, num_batches
from mncompile.runtime.engines import LocalEngine
from mncompile.runtime.folder import load_folder
from mncompile.runtime.methods import METHODS, bagging, distill, treenet
from mncompile.runtime.methods import options as method_opts
from mncompile.runtime.methods.bagging import bootstrap_indices
from mncompile.runtime.methods.cycles import fge_collects, fge_lr, snapshot_lr
from mncompile.runtime.methods.distill import distillation_loss
from mncompile.runtime.methods.treenet import build_treenet
from mncompile.runtime.progress import Progress
from mncompile.runtime.train import TrainSettings
from mncompile.writer import write_folder

# three plain nets with three blocks: every member has a conv layer at (1,1), (2,1), (3,1);
# b has a second layer in block 1, which a 3-layer trunk does not keep
PLAIN = """ensemble t { input 1x16 classes 3
    train { batch 16 max_epochs 4 hatched_max_epochs 2 patience 50 lr 0.05 }
    net a plain { block { 3:4 } block { 3:6 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } block { 3:6 3:6 } dense 8 8 }
    net c plain { block { 3:6 } block { 3:6 } block { 3:8 } } }"""
TINY = ["--data", "synthetic", "--train-size", "48", "--test-size", "24", "--quiet"]


def _spec(tmp_path: Path, text: str = PLAIN) -> Path:
    path = tmp_path / "t.mnet"
    path.write_text(text, encoding="utf-8")
    return path


def _run(tmp_path: Path, method: str, *extra: str, out: str = "out") -> dict[str, Any]:
    spec = _spec(tmp_path)
    rc = cli_main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / out),
                   "--method", method, *TINY, *extra])
    assert rc == 0
    return json.loads((tmp_path / out / "results.json").read_text())


def _ctx(tmp_path: Path, text: str = PLAIN, **method_options: Any) -> RunContext:
    e = loads(text)
    folder = tmp_path / "gen"
    write_folder(folder, compile_ensemble(e).files)
    models, plan, tables = load_folder(folder)
    data = load_dataset("synthetic", plan.input, plan.classes, seed=0,
                        train_size=48, test_size=24)
    config = {**e.config.model_dump()}
    ctx = RunContext(folder=folder, models=models, plan=plan, tables=tables, dataset=data, config=config,
                     mother_settings=TrainSettings.from_config(config, "mother"),
                     hatched_settings=TrainSettings.from_config(config, "hatched"), out=tmp_path / "out",
                     device=torch.device("cpu"), seed=0, progress=Progress(quiet=True),
                     engine=LocalEngine())
    ctx.info["method_options"] = method_options
    return ctx


@pytest.mark.parametrize("method", ["bagging", "distill", "snapshot", "fge", "treenet"])
def test_every_baseline_runs_end_to_end(tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = _run(tmp_path, method)
    assert doc["schema_version"] == 1 and doc["method"] == method
    ens = doc["ensemble"]
    assert ens["size"] == 3 and 0 <= ens["error"] <= 1 and ens["diversity"]["member_covariance"] is not None
    assert doc["total_seconds"] == pytest.approx(sum(p["seconds"] for p in doc["phases"]))
    assert all(p["seconds"] > 0 for p in doc["phases"])
    phases = [p["name"] for p in doc["phases"]]
    members = sorted(doc["members"])
    if method == "bagging":
        assert phases == ["members"] and members == ["a", "b", "c"]
        assert all(doc["models"][m]["epochs"] == 4 for m in "abc")
        fractions = doc["info"]["bagging"]["unique_fraction"]
        assert all(0.4 < f < 0.9 for f in fractions.values()) and len(set(fractions.values())) > 1
    elif method == "distill":
        # b has the most parameters: it is the teacher, and a member
        assert phases == ["teacher", "students"] and doc["info"]["distill"]["teacher"] == "b"
        assert doc["phases"][1]["models"] == ["a", "c"] and members == ["a", "b", "c"]
    elif method in ("snapshot", "fge"):
        base = doc["info"][method]["base"]
        assert members == [f"{base}@{k}" for k in (1, 2, 3)]
        assert phases == (["cycles"] if method == "snapshot" else ["pretrain", "cycles"])
        # the snapshots are different models
        probs = [tuple(round(v["nll"], 9) for v in [doc["members"][m]]) for m in members]
        assert len(set(probs)) == 3
    else:
        assert phases == ["treenet"] and members == ["a", "b", "c"]
        assert doc["info"]["treenet"]["dropped_layers"] == {"b": ["block1.layer2"]}
    history = (tmp_path / "out" / "history.csv").read_text().splitlines()
    assert history[0].startswith("phase,model,epoch") and len(history) > 1


def test_snapshot_base_is_mean_sized_and_epochs_split_into_cycles(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = _run(tmp_path, "snapshot", "--max-epochs", "7")
    plan = json.loads((tmp_path / "gen" / "plan.json").read_text())
    params = {m["name"]: m["params"] for m in plan["members"]}
    mean = sum(params.values()) / 3
    assert doc["info"]["snapshot"]["base"] == min(params, key=lambda m: abs(params[m] - mean))
    info = doc["info"]["snapshot"]
    assert info["cycle_epochs"] == 2 and info["cycles"] == 3  # 7 // 3 epochs per cycle
    base = info["base"]
    assert doc["models"][base]["epochs"] == 6
    # the recorded lr is each epoch's first step: lr0 at the start of a cycle, half-way down after
    rows = [r.split(",") for r in (tmp_path / "out" / "history.csv").read_text().splitlines()[1:]]
    lrs = [float(r[3]) for r in rows]
    assert lrs == pytest.approx([0.2, 0.1, 0.2, 0.1, 0.2, 0.1])


def test_distillation_loss_matches_a_hand_computation() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([1, 2])
    alpha, temp = 0.9, 4.0

    def softmax(row: list[float]) -> list[float]:
        z = [math.exp(v) for v in row]
        return [v / sum(z) for v in z]

    kl = ce = 0.0
    for i in range(2):
        p = softmax([v / temp for v in t[i].tolist()])
        q = softmax([v / temp for v in s[i].tolist()])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
        ce += -math.log(softmax(s[i].tolist())[int(y[i])])
    expected = alpha * temp**2 * kl / 2 + (1 - alpha) * ce / 2
    assert float(distillation_loss(s, t, y, alpha, temp)) == pytest.approx(expected, rel=1e-6)
    # alpha 0 is plain cross-entropy; a student equal to its teacher has no KL term
    assert float(distillation_loss(s, t, y, 0.0, temp)) == pytest.approx(ce / 2, rel=1e-6)
    assert float(distillation_loss(s, s, y, 1.0, temp)) == pytest.approx(0.0, abs=1e-7)


def test_snapshot_schedule_matches_its_formula() -> None:
    lr0, cycle = 0.2, 12
    for it, expected in [(0, 0.2), (3, 0.1 * (1 + math.cos(math.pi / 4))), (6, 0.1), (11, 0.1 * (1 + math.cos(
            math.pi * 11 / 12))), (12, 0.2), (18, 0.1), (40, 0.1 * (1 + math.cos(math.pi * 4 / 12)))]:
        assert snapshot_lr(it, cycle, lr0) == pytest.approx(expected)
    # the lowest point is the cycle's last iteration, just before the restart
    lrs = [snapshot_lr(i, cycle, lr0) for i in range(2 * cycle)]
    assert min(lrs) == lrs[cycle - 1] == lrs[2 * cycle - 1] and max(lrs) == lrs[0] == lrs[cycle]


def test_fge_schedule_matches_its_formula_and_collects_at_the_low_point() -> None:
    lr1, lr2, c = 0.05, 1e-4, 8
    for it, expected in [(0, (1 - 2 / 8) * lr1 + 2 / 8 * lr2), (1, 0.5 * lr1 + 0.5 * lr2), (3, lr2),
                         (5, (2 - 12 / 8) * lr2 + (12 / 8 - 1) * lr1), (7, lr1), (11, lr2), (15, lr1)]:
        assert fge_lr(it, c, lr1, lr2) == pytest.approx(expected)
    lrs = [fge_lr(i, c, lr1, lr2) for i in range(3 * c)]
    collected = [i for i in range(3 * c) if fge_collects(i, c)]
    assert collected == [3, 11, 19] and all(lrs[i] == pytest.approx(min(lrs)) for i in collected)


def test_fge_pretrains_80_percent_then_collects_one_model_per_cycle(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = _run(tmp_path, "fge", "--max-epochs", "5")
    info = doc["info"]["fge"]
    assert info["pretrain_epochs"] == 4 and info["cycles"] == 3 and info["cycle_epochs"] == 2
    base = info["base"]
    assert doc["models"][base]["epochs"] == 4 and doc["models"][f"{base}@cycles"]["epochs"] == 6
    rows = [r.split(",") for r in (tmp_path / "out" / "history.csv").read_text().splitlines()[1:]]
    cycle_lrs = [float(r[3]) for r in rows if r[0] == "cycles"]
    n = num_batches(load_dataset("synthetic", (1, 16), 3, train_size=48, test_size=24), 16)
    assert cycle_lrs == pytest.approx([fge_lr(e * n, 2 * n, 0.05, 1e-4) for e in range(6)])


def test_treenet_shares_exactly_the_requested_layers(tmp_path: Path) -> None:
    for shared in (1, 2, 3):
        ctx = _ctx(tmp_path / str(shared))
        tree = build_treenet(ctx, shared)
        convs = [m for m in tree.trunk.modules() if isinstance(m, torch.nn.Conv1d)]
        assert len(convs) == shared
        assert tree.positions == [(1, 1), (2, 1), (3, 1)][:shared]
        # the trunk is the narrowest net: 4 filters (a and b) then 6, kernel 3 everywhere
        assert [c.out_channels for c in convs] == [4, 6, 6][:shared]
        assert all(c.kernel_size == (3,) for c in convs)
        model = tree.module()
        trunk = sum(p.numel() for p in tree.trunk.parameters())
        branches = sum(p.numel() for b in tree.branches.values() for p in b.parameters())
        assert sum(p.numel() for p in model.parameters()) == trunk + branches
        members = tree.members()
        per_member = sum(p.numel() for m in members.values() for p in m.parameters())
        assert per_member == 3 * trunk + branches  # each member counts the trunk; the TreeNet once
        assert all(next(m.children()) is tree.trunk for m in members.values())
        x = ctx.dataset.x_test[:5]
        for name, member in members.items():
            member.eval()
            assert member(x).shape == (5, 3), name
        if shared == 3:
            # c's block 3 has 8 filters; its head now reads the trunk's 6 channels
            assert "c" in tree.retargeted and tree.dropped == {"b": ["block1.layer2"]}
            assert tree.branches["c"].get_submodule("head.out").in_features == 6


def test_treenet_trains_the_trunk_once_for_every_branch(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, shared_layers=2)
    outcome = treenet.run(ctx)
    assert len({id(next(m.children())) for m in outcome.members.values()}) == 1
    info = outcome.info["treenet"]
    counted_per_member = sum(p.numel() for m in outcome.members.values() for p in m.parameters())
    assert info["shared_layers"] == 2 and info["params"] == counted_per_member - 2 * info["trunk_params"]
    assert list(outcome.phases[0].models) == ["treenet"] and outcome.phases[0].models["treenet"].epochs == 4


@pytest.mark.parametrize("family,text", [
    ("residual", """ensemble r { input 2x8x8 classes 3
        net a residual { stem 3:4 block { 3:4 } block { 3:8 } }
        net b residual { stem 3:4 block { 3:4 x2 } block { 3:8 } } }"""),
    ("dense", """ensemble d { input 1x16 classes 3
        net a dense { stem 3:4 block { 3:2 x2 } block { 3:2 } }
        net b dense { stem 3:6 block { 3:3 x3 } block { 3:2 x2 } } }"""),
    ("mlp", "ensemble m { input 12 classes 4 net a mlp { dense 8 } net b mlp { dense 12 6 } }"),
])
def test_treenet_rejects_skip_connections_and_mlps(tmp_path: Path, family: str, text: str) -> None:
    ctx = _ctx(tmp_path, text)
    with pytest.raises(MNError) as err:
        build_treenet(ctx, 1)
    assert f"is {family}" in err.value.message and "treenet needs plain" in err.value.message
    assert err.value.hint and "another --method" in err.value.hint


def test_treenet_with_more_shared_layers_than_positions_is_a_user_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MNError, match="more than the 3 conv layers"):
        build_treenet(_ctx(tmp_path), 4)
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, """ensemble s { input 1x16 classes 3
        net a plain { block { 3:4 } block { 3:6 } } net b plain { block { 3:5 } block { 3:4 } } }""")
    assert cli_main(["run", str(spec), "-o", "g2", "--out", "o2", "--method", "treenet", *TINY]) == 2
    err = capsys.readouterr().err
    assert "--shared-layers 3 is more than the 2" in err and "Traceback" not in err


def test_bootstrap_samples_are_seeded_and_differ_per_member() -> None:
    a = bootstrap_indices(0, "a", 1000)
    assert torch.equal(a, bootstrap_indices(0, "a", 1000))
    assert not torch.equal(a, bootstrap_indices(0, "b", 1000))
    assert not torch.equal(a, bootstrap_indices(1, "a", 1000))
    assert a.min() >= 0 and a.max() < 1000 and len(a) == 1000
    # about 1 - 1/e of the examples appear in a bootstrap sample
    assert abs(len(set(a.tolist())) / 1000 - (1 - math.exp(-1))) < 0.04


def test_bagging_members_see_their_bootstrap_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx(tmp_path)
    seen: dict[str, torch.Tensor] = {}
    from mncompile.runtime import train

    real = train.fit

    def spy(jobs: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen[jobs[0].name] = data.y_train.clone()
        return real(jobs, data, *args, **kwargs)

    monkeypatch.setattr(train, "fit", spy)
    outcome = bagging.run(ctx)
    assert sorted(seen) == ["a", "b", "c"] and list(outcome.members) == ["a", "b", "c"]
    for m, labels in seen.items():
        assert torch.equal(labels, ctx.dataset.y_train[bootstrap_indices(0, m, 48)])


def test_method_options_are_checked(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, teacher="zz")
    with pytest.raises(MNError, match="--teacher 'zz' is not a member"):
        distill.run(ctx)
    ctx.info["method_options"] = {"nonsense": 1}
    with pytest.raises(MNError, match="unknown method option"):
        method_opts.options(ctx)
    ctx.info["method_options"] = {"teacher": "a", "alpha": 0.5, "temperature": 2.0}
    outcome = distill.run(ctx)
    assert outcome.info["distill"] == {"teacher": "a", "alpha": 0.5, "temperature": 2.0}
    assert [p.name for p in outcome.phases] == ["teacher", "students"]
    assert list(outcome.phases[0].models) == ["a"] and sorted(outcome.phases[1].models) == ["b", "c"]


def test_baselines_are_registered_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"bagging", "distill", "snapshot", "fge", "treenet"} <= set(METHODS)
    assert METHODS["snapshot"].help
    monkeypatch.chdir(tmp_path)
    a = _run(tmp_path, "snapshot", out="a")
    b = _run(tmp_path, "snapshot", out="b")
    assert a["members"] == b["members"]
    # everything finished: a resume trains nothing again and evaluates the same snapshots
    c = _run(tmp_path, "snapshot", "--resume", out="a")
    assert c["members"] == a["members"]


def test_train_py_options_reach_the_baselines(tmp_path: Path) -> None:
    """`--alpha` etc. given to train.py / mncompile run land in the method's options."""
    from mncompile.runtime import pipeline as pl

    parser = pl.build_parser({"seed": 0}, prog="train.py")
    args = parser.parse_args(["--method", "distill", "--alpha", "0.5", "--temperature", "8"])
    assert method_opts.method_options(args) == {"alpha": 0.5, "temperature": 8.0}
