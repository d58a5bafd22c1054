"""`--engine ray`: a local Ray cluster (2 CPUs, loopback only) against the local engine.

Tolerances: members trained as Ray tasks run the local training loop over the same batch stream
from the same initial weights, so their numbers agree with the local engine's to float rounding
(different torch thread counts may sum in another order). A network trained data-parallel on 2
gloo workers computes the same mean gradient, summed in another order (and, with BatchNorm, each
worker normalises its half of the batch), so its losses agree to about 1e-4 without BatchNorm and
its accuracies to a few points with it. The ensemble accuracy is compared within 2 percentage
points: on 256 test examples, about 5 examples.

The Ray tests share one Ray instance (about 3 s to start); each data-parallel trainer costs
about 20 s of Ray Train start-up on a 2-core machine, so two tests use one. Every test has 300 s
(pytest-timeout, the dev extra): a Ray run that hangs fails its test instead of the whole suite.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mncompile.cli import main as cli_main
from mncompile.diagnostics import MNError
from mncompile.runtime.pipeline import main as pipeline_main

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='needs the ray extra: pip install "mncompile[ray]"')
# a Ray run that hangs (a placement that never comes, say) fails its test, not the whole suite;
# without pytest-timeout (the dev extra) the mark is only unknown
pytestmark = pytest.mark.timeout(300)

MLP3 = """ensemble m3 { input 40 classes 10
  net a mlp { dense 32 }
  net b mlp { dense 48 24 }
  net c mlp { dense 40 } }
"""
ONE_CONV = """ensemble one { input 1x16 classes 3
  net a plain { block { 3:8 } block { 3:8 } dense 16 } }
"""
TINY = ["--data", "synthetic", "--train-size", "256", "--test-size", "256", "--batch", "32",
        "--max-epochs", "4", "--hatched-max-epochs", "3", "--quiet"]


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.mnet"
    path.write_text(text, encoding="utf-8")
    return path


def _run(tmp_path: Path, spec: Path, out: str, *extra: str) -> int:
    return cli_main(["run", str(spec), "-o", str(tmp_path / "gen"), "--out", str(tmp_path / out), *TINY,
                     *extra])


def _results(path: Path) -> dict[str, Any]:
    return json.loads((path / "results.json").read_text())


def _history(path: Path) -> list[dict[str, str]]:
    with open(path / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def _same_history(a: list[dict[str, str]], b: list[dict[str, str]], rel: float) -> None:
    def rows(h: list[dict[str, str]]) -> list[tuple[str, str, str]]:
        return [(r["phase"], r["model"], r["epoch"]) for r in h]

    assert rows(a) == rows(b)
    for x, y in zip(a, b, strict=True):
        assert float(x["lr"]) == float(y["lr"])
        for key in ("train_loss", "train_acc"):
            assert math.isclose(float(x[key]), float(y[key]), rel_tol=rel, abs_tol=rel), (x, y)


# ------------------------------------------------------------------------ without Ray


def test_missing_ray_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "out", "--engine", "ray") == 2
    err = capsys.readouterr().err
    assert 'Ray is not installed: pip install "mncompile[ray]"' in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_local_engine_never_imports_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        one_torch_thread: None) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "out", "--max-epochs", "1", "--hatched-max-epochs", "1") == 0
    assert "engine" not in _results(tmp_path / "out")["info"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--address", "auto"], "--address and --gpus-per-model are options of --engine ray"),
    (["--gpus-per-model", "2"], "--address and --gpus-per-model are options of --engine ray"),
    (["--engine", "ray", "--sequential"], "--sequential is an option of the local engine"),
])
def test_engine_options_are_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], message: str) -> None:
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "out", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpus_per_model_option() -> None:
    from mncompile.runtime.pipeline import build_parser

    p = build_parser({"ensemble": "e"})
    assert p.parse_args([]).gpus_per_model is None and p.parse_args([]).engine == "local"
    assert p.parse_args(["--gpus-per-model", "auto"]).gpus_per_model is None
    assert p.parse_args(["--gpus-per-model", "3"]).gpus_per_model == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--gpus-per-model", "0"])


class _FakeRay:
    """Just enough of `ray` for the driver's Scheduler: every task ends at once with `reply`."""

    class exceptions:  # as ray.exceptions
        class RayError(Exception):
            pass

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.calls: list[str] = []

    def put(self, value: Any) -> object:
        return object()

    def remote(self, **options: Any) -> Any:
        def wrap(fn: Any) -> Any:
            def remote(*args: Any) -> tuple[str, int]:
                self.calls.append(fn.__name__)
                return (fn.__name__, len(self.calls))

            return types.SimpleNamespace(remote=remote)

        return wrap

    def wait(self, refs: list[Any], num_returns: int) -> tuple[list[Any], list[Any]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Any) -> Any:
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def _scheduler(tmp_path: Path, reply: Any, slots: int = 2) -> Any:
    import torch

    from mncompile.runtime.jobs import Job, TrainSettings
    from mncompile.runtime.ray_engine import Cluster, Scheduler, _Job

    (tmp_path / "models.py").write_text("MODELS = {}\n")
    from mncompile.formats.plan_file import read_plan

    rows = [{"name": n, "params": 1, "macs": macs} for n, macs in (("a", 10), ("b", 30), ("c", 10))]
    plan = read_plan({"input": [2], "classes": 2, "members": rows,
                      "clusters": [{"mother": {"name": "mothernet1", "params": 1, "macs": 5}, "family": "mlp",
                                    "members": ["a", "b", "c"]}]}, "plan.json")
    ctx = types.SimpleNamespace(folder=tmp_path, plan=plan, dataset=types.SimpleNamespace(to=lambda d: None),
                                out=tmp_path / "out", method="full-data", seed=0, device=torch.device("cpu"),
                                progress=types.SimpleNamespace(quiet=True, stream=sys.stdout),
                                ckpt_dir=lambda phase: tmp_path / "out" / "ckpt" / "full-data" / phase)
    s = Scheduler(ctx, Cluster(slots, False), None, _FakeRay(reply))  # type: ignore[arg-type]
    s.submit([_Job(Job(n, torch.nn.Linear(2, 2), TrainSettings(batch=32)), "members")
              for n in ("a", "b", "c")])
    return s


def test_ready_networks_are_queued_largest_first(tmp_path: Path) -> None:
    s = _scheduler(tmp_path, {"error": "x"})
    assert [j.name for j in s.queue] == ["b", "a", "c"]  # by MACs, ties in plan order


def test_an_unreadable_data_parallel_checkpoint_leaves_the_member_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A member whose trainer ended but whose checkpoint the driver cannot read: reported, left out."""
    bad = tmp_path / "b.pt"
    bad.write_bytes(b"not a checkpoint")
    s = _scheduler(tmp_path, {"checkpoint": str(bad)}, slots=4)
    job, result = s.next_done()  # 3 ready, 4 free: b (the largest) on 2 workers, data-parallel
    assert s.ray.calls == ["fit_task", "train_task", "train_task"]
    assert (job.name, result) == ("b", None) and list(s.failed) == ["b"]
    assert "corrupt or truncated" in s.failed["b"]
    assert s.failed_result(job).status == "training"
    err = capsys.readouterr().err
    assert "b failed on Ray (it trained, but the driver cannot read its checkpoint)" in err
    assert s.placements[0].status == "failed"


@pytest.mark.parametrize(("reply", "printed"), [
    ({"error": "damaged", "retried": " (a user error: not retried)"},
     "b failed on Ray (a user error: not retried): damaged"),
    (_FakeRay.exceptions.RayError("boom"), "b failed on Ray after 2 retries: RayError: boom"),
])
def test_a_failure_says_what_was_retried(tmp_path: Path, capsys: pytest.CaptureFixture[str], reply: Any,
                                         printed: str) -> None:
    s = _scheduler(tmp_path, reply)
    job, result = s.next_done()  # 3 ready, 2 free: one device each
    assert (job.name, result) == ("b", None)
    assert printed in capsys.readouterr().err


@needs_ray
def test_a_refused_connection_is_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray 2.60 raises AuthenticationError (a RayError) for RAY_AUTH_MODE=token without the token."""
    import ray

    from mncompile.runtime.ray_engine import connect

    def refuse(**kwargs: Any) -> None:
        raise ray.exceptions.AuthenticationError("no token")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(MNError, match=r"cannot connect to the Ray cluster at '10\.0\.0\.5:6379': .*no token"):
        connect("10.0.0.5:6379")
    def time_out(**kwargs: Any) -> None:
        raise TimeoutError("timed out")

    monkeypatch.setattr(ray, "init", time_out)
    with pytest.raises(MNError, match="cannot connect to the Ray cluster at 'auto': timed out"):
        connect("auto")


@needs_ray
def test_train_v1_on_the_workers_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from mncompile.runtime import ray_engine

    class Workers(_FakeRay):
        exceptions = ray.exceptions

        def get(self, ref: Any, timeout: float | None = None) -> Any:
            return (False, "2.50.1", None)

    monkeypatch.delenv("RAY_TRAIN_V2_ENABLED", raising=False)
    with pytest.raises(MNError, match=r"Ray Train v1 is active on the Ray workers \(Ray 2\.50\.1, "
                       r"RAY_TRAIN_V2_ENABLED=unset\)") as err:
        ray_engine.require_train_v2(Workers(None))
    assert "Ray >= 2.51" in str(err.value.hint) and "--gpus-per-model 1" in str(err.value.hint)


# ------------------------------------------------------------------------ on a local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """Two CPUs on this machine, every Ray process bound to 127.0.0.1, shut down afterwards."""
    import logging

    with pytest.MonkeyPatch.context() as mp:
        # Ray's single-machine mode: the node's address, and every server it starts, is 127.0.0.1
        # (the variable is read when ray is imported, and by the processes Ray starts)
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = pytest.importorskip("ray")
        from ray._private import ray_constants

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        try:
            assert ray.util.get_node_ip_address() == "127.0.0.1"
            yield ray
        finally:
            ray.shutdown()


@needs_ray
def test_ray_engine_gives_the_local_results(tmp_path: Path, ray_cluster: Any, one_torch_thread: None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """MotherNet data-parallel on both CPUs (Appendix D: 1 ready, 2 free), then 3 members 2 at a time."""
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "local") == 0
    assert _run(tmp_path, spec, "ray", "--engine", "ray") == 0
    printed = capsys.readouterr().out
    assert "ensemble of 3" in printed
    local, ray = _results(tmp_path / "local"), _results(tmp_path / "ray")
    assert abs(ray["ensemble"]["accuracy"] - local["ensemble"]["accuracy"]) <= 0.02
    assert ray["models"].keys() == local["models"].keys() and ray["members"].keys() == local["members"].keys()
    assert [p["name"] for p in ray["phases"]] == [p["name"] for p in local["phases"]]
    for name, m in local["models"].items():
        assert ray["models"][name].keys() == m.keys()
        assert (ray["models"][name]["status"], ray["models"][name]["epochs"]) == (m["status"], m["epochs"])
    assert ray["info"]["hatch"].keys() == local["info"]["hatch"].keys()
    _same_history(_history(tmp_path / "ray"), _history(tmp_path / "local"), rel=1e-4)
    for phase, net in (("mothernets", "mothernet1"), ("members", "a"), ("members", "b"), ("members", "c")):
        assert (tmp_path / "ray" / "ckpt" / "mothernets" / phase / f"{net}.pt").is_file()
    info = ray["info"]
    assert info["engine"] == "ray" and info["ray"]["slots"] == 2 and info["ray"]["device"] == "cpu"
    workers = {p["name"]: p["workers"] for p in info["ray"]["placements"]}
    assert workers == {"mothernet1": 2, "a": 1, "b": 1, "c": 1}
    # hatched together, queued largest first (MACs: b 3312, c 2000, a 1600): a waits for a slot
    assert [p["name"] for p in info["ray"]["placements"]] == ["mothernet1", "b", "c", "a"]
    starts = {p["name"]: p["start"] for p in info["ray"]["placements"]}
    ends = {p["name"]: p["end"] for p in info["ray"]["placements"]}
    assert starts["a"] >= min(ends["b"], ends["c"])
    assert ray["total_seconds"] == pytest.approx(sum(p["seconds"] for p in ray["phases"]))


@needs_ray
def test_train_v1_is_refused_before_anything_is_written(tmp_path: Path, ray_cluster: Any,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", "0")
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "out", "--engine", "ray") == 2
    err = capsys.readouterr().err
    assert "Ray Train v1 is active in this process" in err and "RAY_TRAIN_V2_ENABLED=0" in err
    assert not (tmp_path / "out").exists()


@needs_ray
def test_one_model_data_parallel_on_two_gloo_workers(tmp_path: Path, ray_cluster: Any,
                                                    one_torch_thread: None) -> None:
    """A conv net with BatchNorm, alone (full-data, 1 member): both CPUs train it, and it learns."""
    spec = _spec(tmp_path, ONE_CONV)
    args = ["--method", "full-data", "--max-epochs", "8", "--lr", "0.1"]
    assert _run(tmp_path, spec, "ray", "--engine", "ray", *args) == 0
    assert _run(tmp_path, spec, "local", *args) == 0
    ray, local = _results(tmp_path / "ray"), _results(tmp_path / "local")
    assert [p["workers"] for p in ray["info"]["ray"]["placements"]] == [2]
    rows = [r for r in _history(tmp_path / "ray") if r["model"] == "a"]
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 8 and losses[-1] < 0.6 * losses[0]
    assert ray["models"]["a"]["final_train_acc"] > 0.7
    assert abs(ray["ensemble"]["accuracy"] - local["ensemble"]["accuracy"]) <= 0.05
    # each worker normalises its 16 examples by their own BatchNorm statistics: close, not equal
    assert ray["models"]["a"]["final_train_loss"] == pytest.approx(local["models"]["a"]["final_train_loss"],
                                                                    rel=0.15)


FLAKY = '''

# --- test_ray_engine: b fails once, in its second epoch; c fails whenever ALWAYS exists
import pathlib as _pl

_CALLS, _ONCE, _ALWAYS = _pl.Path(r"{calls}"), _pl.Path(r"{once}"), _pl.Path(r"{always}")
_forward_b, _forward_c = MODELS["b"].forward, MODELS["c"].forward


def _flaky_b(self, x):
    if self.training:
        with open(_CALLS, "a") as f:
            f.write("b\\n")
        if len(_CALLS.read_text().split()) == {fail_at} and not _ONCE.exists():
            _ONCE.touch()
            raise RuntimeError("injected failure of b")
    return _forward_b(self, x)


def _broken_c(self, x):
    if self.training and _ALWAYS.exists():
        raise RuntimeError("injected failure of c")
    return _forward_c(self, x)


MODELS["b"].forward, MODELS["c"].forward = _flaky_b, _broken_c
'''


@needs_ray
def test_failures_retry_from_the_checkpoint_or_leave_the_member_out(
        tmp_path: Path, ray_cluster: Any, one_torch_thread: None, capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, MLP3)
    gen = tmp_path / "gen"
    assert cli_main([str(spec), "-o", str(gen)]) == 0
    calls, once, always = tmp_path / "calls.txt", tmp_path / "once", tmp_path / "always"
    batches = 256 // 32
    with open(gen / "models.py", "a", encoding="utf-8") as f:
        f.write(FLAKY.format(calls=calls, once=once, always=always, fail_at=batches + 1))
    always.touch()
    defaults: dict[str, Any] = {"ensemble": "m3", "data": None, "train": {}}
    ray_args = [*TINY, "--out", str(tmp_path / "ray"), "--engine", "ray", "--gpus-per-model", "1"]
    assert pipeline_main(gen, defaults, ray_args) == 0
    err = capsys.readouterr().err
    assert "c failed on Ray" in err and "injected failure of c" in err
    # b failed in its second epoch, and the retry went on from its first epoch's checkpoint
    assert once.exists()
    assert len(calls.read_text().split()) == batches + 1 + batches * 2
    doc = _results(tmp_path / "ray")
    assert sorted(doc["members"]) == ["a", "b"] and doc["ensemble"]["size"] == 2
    c = doc["models"]["c"]
    assert c["status"] == "training" and "injected failure of c" in c["message"]
    assert list(doc["info"]["failed_members"]) == ["c"]

    always.unlink()
    assert pipeline_main(gen, defaults, [*TINY, "--out", str(tmp_path / "local")]) == 0
    local = _results(tmp_path / "local")
    for m in ("a", "b"):
        assert doc["members"][m]["accuracy"] == local["members"][m]["accuracy"]
        assert doc["models"][m]["final_train_loss"] == pytest.approx(local["models"][m]["final_train_loss"],
                                                                     rel=1e-6)


@needs_ray
def test_resume_across_engines(tmp_path: Path, ray_cluster: Any, one_torch_thread: None) -> None:
    """A local run's checkpoints, one member's removed: --engine ray --resume retrains only that one."""
    spec = _spec(tmp_path, MLP3)
    assert _run(tmp_path, spec, "out") == 0
    local, local_history = _results(tmp_path / "out"), _history(tmp_path / "out")
    ckpt = tmp_path / "out" / "ckpt" / "mothernets"
    (ckpt / "members" / "b.pt").unlink()
    finished = {p: (p.stat().st_mtime_ns, p.stat().st_ino)
                for p in (ckpt / "mothernets" / "mothernet1.pt", ckpt / "members" / "a.pt",
                          ckpt / "members" / "c.pt")}
    assert _run(tmp_path, spec, "out", "--engine", "ray", "--gpus-per-model", "1", "--resume") == 0
    resumed = _results(tmp_path / "out")
    placed = [p["name"] for p in resumed["info"]["ray"]["placements"]]
    assert placed == ["mothernet1", "b", "c", "a"]  # all placed, largest first; only b had epochs left
    # a checkpoint is written after every epoch trained: the finished networks trained none
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in finished} == finished
    assert (ckpt / "members" / "b.pt").is_file()
    assert resumed["ensemble"]["accuracy"] == local["ensemble"]["accuracy"]
    for m, member in local["members"].items():
        assert resumed["members"][m]["accuracy"] == member["accuracy"]
    _same_history(_history(tmp_path / "out"), local_history, rel=1e-5)


@needs_ray
def test_bench_trains_every_method_on_ray(tmp_path: Path, ray_cluster: Any,
                                                      one_torch_thread: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path, MLP3)
    out = tmp_path / "bench"
    assert cli_main(["bench", str(spec), "--data", "synthetic", "--train-size", "64", "--test-size", "32",
                     "--seeds", "1",
                     "--methods", "mothernets,full-data,snapshot", "--clusters", "1",
                     "--epochs-scale", "0.01", "--engine", "ray", "--gpus-per-model", "1",
                     "--out", str(out)]) == 0
    engines = {name: _results(out / "runs" / name / "seed0")["info"].get("engine")
               for name in ("mothernets-g1", "full-data", "snapshot")}
    assert engines == {"mothernets-g1": "ray", "full-data": "ray", "snapshot": "ray"}
    assert (out / "frontier.csv").is_file()


PLAIN3 = """ensemble p3 { input 1x16 classes 3
  train { batch 32 lr 0.05 }
  net a plain { block { 3:4 } block { 3:6 } block { 3:6 } dense 8 }
  net b plain { block { 5:4 3:4 } block { 3:8 } block { 3:6 } dense 8 }
  net c plain { block { 3:6 } block { 3:6 } block { 3:8 } } }
"""


@needs_ray
@pytest.mark.parametrize("method", ["shared-mothernets", "bagging", "distill", "snapshot", "fge", "treenet"])
def test_every_method_trains_on_ray_as_locally(tmp_path: Path, ray_cluster: Any, one_torch_thread: None,
                                               method: str) -> None:
    """One device per job: the same loop over the same stream from the same weights as the local engine."""
    spec = _spec(tmp_path, PLAIN3)
    args = ["--method", method, "--max-epochs", "3", "--hatched-max-epochs", "2"]
    assert _run(tmp_path, spec, "local", *args) == 0
    assert _run(tmp_path, spec, "ray", "--engine", "ray", "--gpus-per-model", "1", *args) == 0
    local, ray = _results(tmp_path / "local"), _results(tmp_path / "ray")
    assert ray["info"]["engine"] == "ray" and ray["info"]["ray"]["placements"]
    assert [p["name"] for p in ray["phases"]] == [p["name"] for p in local["phases"]]
    assert ray["members"].keys() == local["members"].keys()
    for m, member in local["members"].items():
        assert ray["members"][m]["accuracy"] == member["accuracy"], m
    _same_history(_history(tmp_path / "ray"), _history(tmp_path / "local"), rel=1e-5)
