"""The trained-ensemble file (version 2): self-contained, checked, never running code.

- the runtime's builders (`runtime.nets`, `runtime.shared_net`) make exactly the generated
  classes: every example and random nets and clusters of every family, same state_dict keys,
  shapes and order, same outputs bit for bit with the same weights;
- a trained run's ensemble.pt loads after its generated folder is overwritten, moved or deleted,
  and predicts exactly what the run's members predicted;
- damaged, altered, foreign and code-running files are MNErrors naming the file.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import shutil
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncompile.cli import main as cli_main
from mncompile.compiler import compile_ensemble
from mncompile.diagnostics import MNError
from mncompile.emit import load_models
from mncompile.formats.ensemble_file import (
    FILE_NAME,
    MAX_LAYERS,
    describe_net,
    describe_shared,
    net_tensors,
    net_to_data,
    read_net,
    read_shared,
    shared_tensors,
    shared_to_data,
)
from mncompile.formats.plan_file import PlanFile, read_plan
from mncompile.passes.share_plan import Refusal
from mncompile.runtime import load_ensemble
from mncompile.runtime.checkpoint import digest
from mncompile.runtime.ensemble import save_ensemble
from mncompile.runtime.nets import build_net
from mncompile.runtime.shared import consolidate, shared_member, verify_shared
from mncompile.runtime.shared_net import GenericSharedNet
from tests.strategies import ensembles
from tests.test_hatch_props import randomise
from tests.test_pipeline import TINY
from tests.test_shared import _build, clusters

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"
EXAMPLES = sorted(p.name for p in GENERATED.iterdir() if (p / "plan.json").is_file())


def _layout(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(k, tuple(v.shape), v.dtype) for k, v in module.state_dict().items()]


def _tree(module: torch.nn.Module) -> list[tuple[str, str, str]]:
    """Every submodule's name, type and settings (kernel, stride, padding, sizes)."""
    return [(name, type(m).__name__, m.extra_repr()) for name, m in module.named_modules() if name]


def _small_input(shape: tuple[int, ...], pools: int, batch: int = 2) -> torch.Tensor:
    """An input the net accepts, with spatial sizes no larger than it needs (fast on big examples)."""
    side = [min(s, max(8, 2 ** pools)) for s in shape[1:]]
    return torch.randn((batch, shape[0], *side), generator=torch.Generator().manual_seed(5))


def _same_net(generated: torch.nn.Module, net: Any, x: torch.Tensor) -> None:
    rebuilt = build_net(net, "n")
    assert _layout(rebuilt) == _layout(generated)
    assert list(net_tensors(net).items()) == [(k, s) for k, s, _ in _layout(generated)]
    assert _tree(rebuilt) == _tree(generated)
    randomise(generated, 1)
    rebuilt.load_state_dict(generated.state_dict())
    generated.eval()
    rebuilt.eval()
    with torch.no_grad():
        want, got = generated(x), rebuilt(x)
    assert torch.isfinite(want).all() and float(want.abs().max()) > 0
    assert torch.equal(want, got)


def _pools(net: Any) -> int:
    return {"plain": len(net.blocks), "dense": len(net.blocks) - 1}.get(net.family, 0)


# ----------------------------------------------------------------------------- separate nets


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_net_is_rebuilt_exactly(example: str) -> None:
    folder = GENERATED / example
    plan = read_plan(json.loads((folder / "plan.json").read_text()), "plan.json")
    models = load_models((folder / "models.py").read_text(), f"mncompile_test_{example}")
    assert sorted(models.MODELS) == sorted(plan.nets)  # every member and MotherNet is described
    for name, cls in models.MODELS.items():
        net = read_net(net_to_data(describe_net(plan.nets[name], plan.input, plan.classes)), "e.pt", name)
        x = torch.randn(2, *plan.input) if net.family == "mlp" else _small_input(plan.input, _pools(net))
        _same_net(cls(), net, x)


CASES = [("plain", 1), ("plain", 2), ("residual", 1), ("residual", 2), ("dense", 1), ("dense", 2),
         ("mlp", 0), ("mlp", 1), ("mlp", 2)]


@pytest.mark.parametrize(("family", "rank"), CASES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_nets_of_every_family_are_rebuilt_exactly(family: str, rank: int, data: st.DataObject) -> None:
    e = data.draw(ensembles(families=(family,), rank=rank, max_nets=3))
    out = compile_ensemble(e)
    plan = read_plan(json.loads(out.files["plan.json"]), "plan.json")
    models = load_models(out.files["models.py"])
    x = torch.randn((3, *e.input), generator=torch.Generator().manual_seed(2))
    for name, cls in models.MODELS.items():
        net = read_net(net_to_data(describe_net(plan.nets[name], plan.input, plan.classes)), "e.pt", name)
        assert net.family == family
        _same_net(cls(), net, x)


# ----------------------------------------------------------------------------- Shared-MotherNets


def _through_a_file(value: Any) -> Any:
    """What torch.save then torch.load(weights_only=True) make of `value`."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_shared_mothernet_is_rebuilt_exactly(example: str) -> None:
    shared = load_models((GENERATED / example / "shared.py").read_text(), f"mncompile_test_shared_{example}")
    assert shared.SHARED
    for cls in shared.SHARED.values():
        desc = read_shared(_through_a_file(shared_to_data(describe_shared(cls))), "e.pt")
        assert desc == describe_shared(cls)  # tuples, dicts and ints survive the file
        generated, generic = cls(), GenericSharedNet(desc)
        assert _layout(generic) == _layout(generated)
        assert shared_tensors(desc) == {k: s for k, s, _ in _layout(generated)}
        assert _tree(generic) == _tree(generated)
        randomise(generated, 3)
        generic.load_state_dict(generated.state_dict())
        pools = sum(1 for s in desc.steps if s["op"] in ("pool", "avgpool"))
        x = torch.randn(2, *desc.input) if len(desc.input) == 1 else _small_input(desc.input, pools)
        if any(s["op"] == "flatten" for s in desc.steps):
            x = torch.randn(2, *desc.input)
        generated.eval()
        generic.eval()
        with torch.no_grad():
            want, got = generated(x), generic(x)
        assert want.shape == (2, len(desc.members), desc.classes) and float(want.abs().max()) > 0
        assert torch.equal(want, got)


SHARED_CASES = [("plain", 1), ("plain", 2), ("residual", 1), ("residual", 2), ("dense", 1), ("dense", 2),
                ("mlp", 0), ("mlp", 1)]


@pytest.mark.parametrize(("family", "rank"), SHARED_CASES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_shared_mothernets_are_rebuilt_exactly(family: str, rank: int, data: st.DataObject) -> None:
    e = data.draw(clusters(family, rank))
    sp, members, _, shared_module, _ = _build(e)
    if isinstance(sp, Refusal):
        return
    cls = shared_module.SHARED[sp.mother]
    generated = cls()
    generated.load_state_dict(consolidate(generated, members))
    generic = GenericSharedNet(read_shared(_through_a_file(shared_to_data(describe_shared(cls))), "e.pt"))
    # consolidate fills the generic module as it fills the generated one
    state = consolidate(generic, members)
    assert all(torch.equal(state[k], v) for k, v in generated.state_dict().items())
    generic.load_state_dict(_through_a_file(state))
    x = torch.randn((5, *e.input), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(generated.eval()(x), generic.eval()(x))
        if sp.exact:
            scale = 1 + max(float(m.eval()(x).abs().max()) for m in members.values())
            assert verify_shared(generic, members, x) <= 1e-4 * scale
        # train mode (batch statistics) on copies: it moves the running statistics
        assert torch.equal(copy.deepcopy(generated).train()(x), copy.deepcopy(generic).train()(x))


# ----------------------------------------------------------------------------- a trained run

SPEC = """ensemble s { input 1x16 classes 3
    net a plain { block { 3:4 } block { 3:6 } dense 8 }
    net b plain { block { 5:4 3:4 } block { 3:8 } dense 8 8 }
    net c plain { block { 3:6 } block { 3:6 } block { 3:6 } }
    net d residual { stem 3:4 block { 3:4 } } net e residual { stem 3:4 block { 3:4 x2 } } }"""
OTHER = """ensemble s { input 1x16 classes 3
    net a plain { block { 3:5 } block { 3:6 } dense 8 }
    net d mlp { dense 7 } }"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One mixed run (a Shared-MotherNet beside separate members), and the members it saved."""
    import mncompile.runtime.ensemble as ensemble_module

    work = tmp_path_factory.mktemp("run")
    spec = work / "s.mnet"
    spec.write_text(SPEC)
    captured: dict[str, Any] = {}
    real = ensemble_module.save_ensemble

    def spy(path: Any, plan: Any, members: Any, models: Any, method: str, excluded: Any = (),
            temperature: Any = None) -> str | None:
        captured.update(members=dict(members), excluded=list(excluded))
        return real(path, plan, members, models, method, excluded, temperature)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ensemble_module, "save_ensemble", spy)
            argv = ["run", str(spec), "-o", str(work / "gen"), "--out", str(work / "out"), *TINY,
                    "--method", "shared-mothernets"]
            assert cli_main(argv) == 0
    finally:
        torch.set_num_threads(before)
    x = torch.randn((20, 1, 16), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits = {m: net.eval()(x) for m, net in captured["members"].items()}
    yield {"work": work, "out": work / "out", "gen": work / "gen", "x": x, "logits": logits}


def _predicts_what_the_run_did(path: Path, run: dict[str, Any]) -> None:
    ens = load_ensemble(path)
    assert ens.kind == "mixed" and ens.members == ["a", "b", "c", "d", "e"]
    got = ens.logits(run["x"])
    assert torch.equal(got, torch.stack([run["logits"][m] for m in ens.members], 1))
    doc = json.loads((run["out"] / "results.json").read_text())
    assert ens.method == doc["method"] == "shared-mothernets"


def test_a_run_loads_without_its_generated_folder(run: dict[str, Any], tmp_path: Path) -> None:
    work, gen = run["work"], run["gen"]
    payload = torch.load(run["out"] / FILE_NAME, weights_only=True)
    assert payload["version"] == 2 and "folder" not in payload
    assert str(work) not in json.dumps({k: v for k, v in payload.items() if k not in ("separate", "shared")})
    assert len(payload["plan_digest"]) == 64 and payload["ensemble"] == "s"
    _predicts_what_the_run_did(run["out"], run)
    # the folder overwritten by another spec's compile (v1 files: a KeyError), then moved, then deleted
    other = work / "other.mnet"
    other.write_text(OTHER)
    assert cli_main([str(other), "-o", str(gen), "--force"]) == 0
    assert "from other.mnet" in (gen / "models.py").read_text() and not (gen / "shared.py").exists()
    _predicts_what_the_run_did(run["out"], run)
    moved = work / "gen-moved"
    gen.rename(moved)
    _predicts_what_the_run_did(run["out"] / FILE_NAME, run)
    shutil.rmtree(moved)
    _predicts_what_the_run_did(run["out"], run)
    # the run's folder itself moved
    copied = tmp_path / "elsewhere"
    shutil.copytree(run["out"], copied)
    _predicts_what_the_run_did(copied, run)
    # what it loads saves again: the same file
    ens = load_ensemble(copied)
    members: dict[str, torch.nn.Module] = dict(ens.separate)
    members.update({m: shared_member(s, m) for s in ens.shared for m in s.MEMBERS})
    plan = PlanFile(ensemble="s", input=(1, 16), classes=3, g=None, seed=None, members=(), clusters=(),
                    digest=payload["plan_digest"])
    assert save_ensemble(tmp_path / "again.pt", plan, members, None, ens.method) is None
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again["checksum"] == payload["checksum"]


# ----------------------------------------------------------------------------- damaged and foreign files


def _copy(run: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the run's folder (results.json beside ensemble.pt); its ensemble.pt's path."""
    out = tmp_path / "out"
    shutil.copytree(run["out"], out, ignore=shutil.ignore_patterns("ckpt"))
    return out / FILE_NAME


def _rewrite(path: Path, change: Any, checksum: bool = True) -> None:
    """Load the file, `change(payload)`, save it again: with a new checksum, or the old one."""
    payload = torch.load(path, weights_only=True)
    change(payload)
    if checksum:
        payload["checksum"] = digest({k: v for k, v in payload.items() if k != "checksum"})
    torch.save(payload, path)


def _refused(path: Path, match: str, **kwargs: Any) -> MNError:
    with pytest.raises(MNError, match=match) as err:
        load_ensemble(path, **kwargs)
    assert str(path) in err.value.message
    return err.value


def _first_weight(payload: dict[str, Any]) -> torch.Tensor:
    state = payload["separate"]["a"]["state"]
    return state["block1.layer1.conv.weight"]


def test_a_flipped_weight_byte_is_caught(run: dict[str, Any], tmp_path: Path) -> None:
    path = _copy(run, tmp_path)
    original = path.read_bytes()

    def flip(payload: dict[str, Any]) -> None:
        w = _first_weight(payload)
        w.view(-1).view(torch.uint8)[1] ^= 0x10

    _rewrite(path, flip, checksum=False)
    _refused(path, "do not match the checksum")
    # the same in the file's bytes: inside a stored tensor's record
    with zipfile.ZipFile(io.BytesIO(original)) as z:
        records = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 16]
        info = records[len(records) // 2]
    data = bytearray(original)
    # the record's data follows its local header: 30 bytes, the name, the extra field
    at = info.header_offset
    name_length, extra_length = struct.unpack("<HH", original[at + 26:at + 30])
    start = at + 30 + name_length + extra_length
    data[start + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(path, "do not match the checksum")
    path.write_bytes(original)
    assert load_ensemble(path).members == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(("change", "match"), [
    (lambda p: p["members"].__setitem__(0, "z"), "stores member 'a', which its members do not name"),
    (lambda p: p["members"].append("z"), "no stored module computes member 'z'"),
    (lambda p: p["separate"].__setitem__("z", p["separate"].pop("a")), "stores member 'z'"),
    (lambda p: p["nets"]["a"]["dense"].__setitem__(0, 9), "does not have the tensors its architecture has"),
    (lambda p: p["nets"]["a"]["dense"].__setitem__(0, 999_999), "does not have the tensors"),
    (lambda p: p["nets"]["a"]["dense"].__setitem__(0, 10 ** 15), r"outside 1\.\.999999"),
    (lambda p: p["nets"]["a"]["blocks"].__setitem__(0, [[3, 4]] * (MAX_LAYERS + 1)), "more than 10000"),
    (lambda p: p["nets"]["a"]["blocks"][0][0].__setitem__(0, 4), "kernel 4; a kernel is odd"),
    (lambda p: p["nets"]["a"].__setitem__("family", "transformer"), "has family 'transformer'"),
    (lambda p: p["nets"]["a"]["blocks"].extend([[[3, 4]]] * 4), "pools an input of size 1"),
    (lambda p: p["nets"]["a"].__setitem__("classes", True), "not a whole number"),
    (lambda p: p.__setitem__("folder", "/elsewhere"), "has the fields"),
    (lambda p: p["separate"]["a"]["state"].__setitem__("block1.layer1.conv.weight", torch.zeros(4, 1, 3,
                                                        dtype=torch.int32)), "of type torch.int32"),
    (lambda p: p["separate"]["a"]["state"].pop("head.out.bias"), "missing head.out.bias"),
    (lambda p: _step(p, 0).__setitem__("kernel", 4), "kernel 4; a kernel is odd"),
    (lambda p: _step(p, 0).__setitem__("makes", (999,)), "GROUPS does not have"),
    (lambda p: _step(p, 0).__setitem__("op", "exec"), "is not a step"),
    (lambda p: _step(p, 0)["parts"][0].__setitem__("member", "a"), "not a member"),
    (lambda p: _read_more(_step(p, 0), max(_shared(p)["groups"])), "not live"),
    (lambda p: _shared(p)["groups"].__setitem__(0, (None, 2)), "the live groups have 2 channels"),
    (lambda p: _shared(p)["groups"].__setitem__(1, (None, 10 ** 9)), "outside"),
    (lambda p: _shared(p).__setitem__("members", ["e", "d"]), "logits for each member in order"),
    (lambda p: _shared(p).__setitem__("steps", _shared(p)["steps"][:-1]), "logits for each member"),
])
def test_an_altered_file_is_refused_before_anything_is_built(
        run: dict[str, Any], tmp_path: Path, change: Any, match: str) -> None:
    path = _copy(run, tmp_path)
    # as it is: the checksum catches it
    _rewrite(path, lambda p: change(p), checksum=False)
    _refused(path, "do not match the checksum")
    # with a checksum that fits: the checks of every value catch it
    shutil.copy(run["out"] / FILE_NAME, path)
    _rewrite(path, change)
    _refused(path, match)


def _shared(payload: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = payload["shared"]["mothernet2"]
    return entry


def _step(payload: dict[str, Any], i: int) -> dict[str, Any]:
    steps = list(_shared(payload)["steps"])
    steps[i] = dict(steps[i])
    steps[i]["parts"] = tuple(dict(p) for p in steps[i]["parts"])
    _shared(payload)["steps"] = tuple(steps)
    return steps[i]


def _wider_with_repeated_entries(payload: dict[str, Any]) -> None:
    """Net a's hidden width made 999,999, its tensors stored as one repeated zero: a tiny file."""
    payload["nets"]["a"]["dense"][0] = 999_999
    state = payload["separate"]["a"]["state"]
    for key in ("head.fc1.weight", "head.fc1.bias", "head.out.weight"):
        shape = list(state[key].shape)
        shape[1 if key == "head.out.weight" else 0] = 999_999
        state[key] = torch.zeros(()).expand(shape)


def test_a_file_standing_for_more_than_it_holds_is_refused(run: dict[str, Any], tmp_path: Path) -> None:
    path = _copy(run, tmp_path)
    for checksum in (False, True):
        shutil.copy(run["out"] / FILE_NAME, path)
        _rewrite(path, _wider_with_repeated_entries, checksum=checksum)
        assert path.stat().st_size < 100_000
        _refused(path, "without all of its entries stored")
    # values nested deeper than any ensemble file nests them (the checks and the checksum recurse)
    deep: list[Any] = []
    for _ in range(100):
        deep = [deep]
    shutil.copy(run["out"] / FILE_NAME, path)
    _rewrite(path, lambda p: p.__setitem__("excluded", deep), checksum=False)
    _refused(path, "nest more than 16 levels")
    torch.save({"format": "mncompile-ensemble", "version": 2, "nets": {1j: "x"}}, path)
    _refused(path, "Python object|not a plain value")


def _read_more(step: dict[str, Any], group: int) -> None:
    step["reads"] = (*step["reads"], group)


class _Shell:
    """Unpickling this runs a shell command: what a file read as data must never do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / FILE_NAME
    torch.save({"format": "mncompile-ensemble", "version": 2, "members": _Shell(marker)}, path)
    err = _refused(path, r"holds a Python object \((posix|nt)\.system\)")
    assert "weights_only" not in str(err)
    # a plain pickle (torch's legacy format) too
    path.write_bytes(pickle.dumps({"format": "mncompile-ensemble", "x": _Shell(marker)}, protocol=2))
    _refused(path, "Python object|corrupt")
    assert not marker.exists()
    # the check can fail: the payload does run when unpickled without restriction
    pickle.loads(pickle.dumps(_Shell(marker)))
    assert marker.exists()


def test_a_truncated_or_foreign_file_is_refused(run: dict[str, Any], tmp_path: Path) -> None:
    path = _copy(run, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "corrupt or truncated")
    path.write_bytes(b"")
    _refused(path, "corrupt or truncated")
    torch.save({"format": "mncompile-checkpoint"}, path)
    _refused(path, "not an mncompile ensemble file")
    path.write_bytes(data)
    _rewrite(path, lambda p: p.__setitem__("version", 3))
    _refused(path, "version 3")


def _random_file(spec: str, tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A generated folder of `spec` and an ensemble file of its members with random weights."""
    from mncompile.api import loads
    from mncompile.runtime.folder import load_folder
    from mncompile.writer import write_folder

    gen = tmp_path / f"gen-{name}"
    write_folder(gen, compile_ensemble(loads(spec)).files)
    models, plan, _ = load_folder(gen)
    members = {m: models.MODELS[m]() for m in plan.member_names}
    path = tmp_path / f"{name}.pt"
    assert save_ensemble(path, plan, members, models, "full-data") is None
    return gen, path


def test_a_file_of_another_spec_or_run_is_refused(run: dict[str, Any], tmp_path: Path) -> None:
    gen_other, other = _random_file(OTHER, tmp_path, "other")
    gen_same, _ = _random_file(SPEC, tmp_path, "same")
    path = _copy(run, tmp_path)
    # folder= checks that the folder's plan is the one the file was trained from (reading JSON only)
    assert load_ensemble(path, folder=gen_same).members == ["a", "b", "c", "d", "e"]
    _refused(path, "was trained from another plan", folder=gen_other)
    assert load_ensemble(other, folder=gen_other).members == ["a", "d"]
    # another run's file copied beside this run's results.json
    shutil.copy(other, path)
    err = _refused(path, "is not the ensemble of the run beside it")
    assert "'shared-mothernets' run" in err.message and "'full-data' run" in err.message
    # the stale file a later run that wrote none leaves beside its results.json
    shutil.copy(run["out"] / FILE_NAME, path)
    results = path.parent / "results.json"
    doc = json.loads(results.read_text())
    results.write_text(json.dumps({**doc, "method": "treenet"}))
    _refused(path, "is not the ensemble of the run beside it")
    results.unlink()
    assert load_ensemble(path).method == "shared-mothernets"


def test_version_1_files_load_only_from_a_folder_given(tmp_path: Path) -> None:
    gen, _ = _random_file(OTHER, tmp_path, "v1")
    from mncompile.runtime.folder import load_folder

    models, plan, _ = load_folder(gen)
    nets = {m: models.MODELS[m]().eval() for m in plan.member_names}
    v1 = {"format": "mncompile-ensemble", "version": 1, "method": "full-data", "folder": str(gen),
          "members": list(nets), "excluded": [], "shared": {},
          "separate": {m: {"arch": m, "state": net.state_dict()} for m, net in nets.items()}}
    path = tmp_path / "v1.pt"
    torch.save(v1, path)
    ens = load_ensemble(path, folder=gen)
    x = torch.randn(4, 1, 16)
    with torch.no_grad():
        assert torch.equal(ens.logits(x), torch.stack([nets[m](x) for m in ens.members], 1))
    # without folder= nothing is imported, not even from the folder the file names
    evil = tmp_path / "evil"
    shutil.copytree(gen, evil)
    marker = tmp_path / "ran"
    (evil / "models.py").write_text(f"open({str(marker)!r}, 'w').close()\nMODELS = {{}}\n")
    torch.save({**v1, "folder": str(evil)}, path)
    _refused(path, "version-1 ensemble file")
    assert not marker.exists()
    # the old path still explains a folder that does not fit
    _refused(path, "cannot load|does not match", folder=tmp_path / "nowhere")


def test_what_cannot_be_saved_is_said(tmp_path: Path) -> None:
    from mncompile.api import loads
    from mncompile.runtime.folder import load_folder
    from mncompile.writer import write_folder

    gen = tmp_path / "gen"
    write_folder(gen, compile_ensemble(loads(OTHER)).files)
    models, plan, _ = load_folder(gen)
    members = {m: models.MODELS[m]() for m in plan.member_names}
    why = save_ensemble(tmp_path / "e.pt", gen, {**members, "d": torch.nn.Sequential()}, models, "x")
    assert why is not None and "member 'd' is a Sequential" in why
    # a plan.json written before members had their layers in it
    data = json.loads((gen / "plan.json").read_text())
    for m in data["members"]:
        for key in ("family", "stem", "blocks", "dense"):
            del m[key]
    old = read_plan(data, "plan.json")
    why = save_ensemble(tmp_path / "e.pt", old, members, models, "x")
    assert why is not None and "compile the spec again" in why and not (tmp_path / "e.pt").exists()
    # a member whose tensors are not those plan.json describes
    wrong = copy.deepcopy(members)
    wrong["a"] = models.MODELS["d"]()
    wrong["a"].__class__ = type(members["a"])
    why = save_ensemble(tmp_path / "e.pt", plan, wrong, models, "x")
    assert why is not None and "does not have the tensors" in why
    assert save_ensemble(tmp_path / "e.pt", gen, members, models, "x") is None


def test_an_api_error_names_no_pseudo_source() -> None:
    """load_ensemble('missing') once said '<input>: error: ...' though no input was parsed."""
    from mncompile.diagnostics import MNError
    from mncompile.runtime import load_ensemble

    with pytest.raises(MNError) as err:
        load_ensemble("no/such/run")
    assert str(err.value).startswith("error: 'no/such/run' does not exist")
    assert "<input>" not in str(err.value)
