"""Generated models.py: imports, builds, matches shapes.infer_net key by key, runs, lints clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from mncompile.api import load, loads
from mncompile.diagnostics import MNError
from mncompile.emit import load_models, models_source
from mncompile.ir import Block, Ensemble, Layer, Linear, Net
from mncompile.shapes import infer_net
from tests.strategies import ensembles

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.joinpath("examples").glob("*.mnet"))
SMALL = ("digits", "mnist1d", "mlp")
RUFF = [sys.executable, "-m", "ruff", "check", "--isolated", "--line-length", "110",
        "--select", "E,F,W,I,B,UP", "--target-version", "py310"]


def _keys_and_shapes(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _expected(net: Net, e: Ensemble) -> list[tuple[str, tuple[int, ...]]]:
    return [(t.name, t.shape) for t in infer_net(net, e.input, e.classes).tensors]


def _check_module(module: torch.nn.Module, net: Net, e: Ensemble) -> None:
    assert _keys_and_shapes(module) == _expected(net, e), net.name
    shape = infer_net(net, e.input, e.classes)
    assert sum(p.numel() for p in module.parameters()) == shape.params
    params = {n for n, _ in module.named_parameters()}
    assert params == {t.name for t in shape.tensors if t.kind == "param"}
    buffers = {n for n, _ in module.named_buffers()}
    assert buffers == {t.name for t in shape.tensors if t.kind == "buffer"}


def _run(module: torch.nn.Module, cls: type, batch: int = 3) -> None:
    x = torch.randn(batch, *cls.INPUT_SHAPE)
    for train in (True, False):
        module.train(train)
        with torch.no_grad():
            y = module(x)
        assert y.shape == (batch, cls.NUM_CLASSES)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_modules_match_infer_net(path: Path) -> None:
    e = load(path)
    m = load_models(models_source(e, e.nets))
    assert list(m.MODELS) == [n.name for n in e.nets]
    for net in e.nets:
        cls = m.MODELS[net.name]
        assert cls.INPUT_SHAPE == e.input and cls.NUM_CLASSES == e.classes
        # the meta device builds even DenseNet-100 and WRN-28-10 without allocating memory
        with torch.device("meta"):
            module = cls()
        _check_module(module, net, e)


@pytest.mark.parametrize("stem", SMALL)
def test_small_examples_run_forward_in_train_and_eval(stem: str) -> None:
    e = load(next(p for p in EXAMPLES if p.stem == stem))
    m = load_models(models_source(e, e.nets))
    torch.manual_seed(0)
    for cls in m.MODELS.values():
        _run(cls(), cls)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ensembles(max_nets=4))
def test_hypothesis_ensembles(e: Ensemble) -> None:
    m = load_models(models_source(e, e.nets))
    assert list(m.MODELS) == [n.name for n in e.nets]
    for net in e.nets:
        cls = m.MODELS[net.name]
        module = cls()
        _check_module(module, net, e)
        _run(module, cls, batch=2)


def _forward_functions(source: str) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)
            and n.name == "forward"]


def test_generated_code_is_ruff_clean_and_has_no_control_flow_in_forward(tmp_path: Path) -> None:
    paths = []
    for path in EXAMPLES:
        e = load(path)
        source = models_source(e, e.nets, source_name=path.name)
        out = tmp_path / f"{path.stem}_models.py"
        out.write_text(source, encoding="utf-8")
        paths.append(str(out))
        forwards = _forward_functions(source)
        assert forwards
        for fn in forwards:
            flow = [n for n in ast.walk(fn) if isinstance(n, (ast.If, ast.IfExp, ast.While, ast.For))]
            assert not flow, f"{path.stem}: control flow in forward at line {fn.lineno}"
        imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for imp in imports:
            mods = [a.name for a in imp.names] if isinstance(imp, ast.Import) else [imp.module or ""]
            assert all(mod.split(".")[0] == "torch" for mod in mods), mods
    proc = subprocess.run([*RUFF, *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_torch_compile_fullgraph_has_no_graph_breaks() -> None:
    e = load(next(p for p in EXAMPLES if p.stem == "digits"))
    m = load_models(models_source(e, e.nets))
    torch.manual_seed(0)
    for name in ("res_b", "dense_b"):
        cls = m.MODELS[name]
        module = cls().eval()
        x = torch.randn(2, *cls.INPUT_SHAPE)
        compiled = torch.compile(module, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), module(x))


def test_mlp_on_a_spatial_input_flattens() -> None:
    e = loads("ensemble e { input 2x4x4; classes 3; net a mlp { dense 5 }; "
              "net b plain { block { 3:4 } dense 6 } }")
    m = load_models(models_source(e, e.nets))
    for net in e.nets:
        cls = m.MODELS[net.name]
        module = cls()
        _check_module(module, net, e)
        _run(module, cls)
    assert m.MODELS["a"]().head.out.in_features == 5
    assert m.MODELS["a"]().head.fc1.in_features == 32


def test_residual_shortcuts_and_strides_follow_the_contract() -> None:
    e = loads("ensemble e { input 3x8x8; classes 2; net r residual { stem 3:4; "
              "block { 3:4 x2 }; block { 3:4 x2 }; block { 5:6 x2 } } }")
    r = load_models(models_source(e, e.nets)).MODELS["r"]()
    # same width, first stage: identity; same width but stride 2: projection; wider: projection
    assert isinstance(r.block1.unit1.shortcut, torch.nn.Identity)
    assert r.block2.unit1.conv1.stride == (2, 2) and hasattr(r.block2.unit1.shortcut, "conv")
    assert r.block2.unit2.conv1.stride == (1, 1) and isinstance(r.block2.unit2.shortcut, torch.nn.Identity)
    assert r.block3.unit1.conv1.padding == (2, 2)
    assert r(torch.randn(2, 3, 8, 8)).shape == (2, 2)


def test_forward_computes_the_contract_by_hand() -> None:
    """Plain, dense and residual nets against the contract's formulas in torch.nn.functional."""
    F = torch.nn.functional
    e = loads("ensemble e { input 2x8; classes 3; net p plain { block { 3:4 } dense 5 }; "
              "net d dense { stem 1:3; block { 3:2 }; block { 1:2 } } }")
    m = load_models(models_source(e, e.nets))
    torch.manual_seed(0)
    x = torch.randn(4, 2, 8)
    p = m.MODELS["p"]().eval()
    s = {k: v for k, v in p.state_dict().items()}

    def bn(t: torch.Tensor, pre: str) -> torch.Tensor:
        return F.batch_norm(t, s[pre + ".running_mean"], s[pre + ".running_var"],
                            s[pre + ".weight"], s[pre + ".bias"])

    h = F.max_pool1d(F.relu(bn(F.conv1d(x, s["block1.layer1.conv.weight"], padding=1),
                               "block1.layer1.bn")), 2)
    h = F.relu(F.linear(h.mean(-1), s["head.fc1.weight"], s["head.fc1.bias"]))
    torch.testing.assert_close(p(x), F.linear(h, s["head.out.weight"], s["head.out.bias"]))

    d = m.MODELS["d"]().eval()
    s = {k: v for k, v in d.state_dict().items()}
    h = F.relu(bn(F.conv1d(x, s["stem.conv.weight"]), "stem.bn"))
    h = torch.cat([h, F.conv1d(F.relu(bn(h, "block1.layer1.bn")), s["block1.layer1.conv.weight"],
                               padding=1)], 1)
    h = F.avg_pool1d(F.conv1d(F.relu(bn(h, "transition1.bn")), s["transition1.conv.weight"]), 2)
    h = torch.cat([h, F.conv1d(F.relu(bn(h, "block2.layer1.bn")), s["block2.layer1.conv.weight"])], 1)
    h = F.relu(bn(h, "head.bn")).mean(-1)
    torch.testing.assert_close(d(x), F.linear(h, s["head.out.weight"], s["head.out.bias"]))

    e = loads("ensemble e { input 2x8; classes 3; net r residual { stem 1:3; block { 3:3 }; "
              "block { 5:4; 3:4 } } }")
    r = load_models(models_source(e, e.nets)).MODELS["r"]().eval()
    s = {k: v for k, v in r.state_dict().items()}
    h = F.relu(bn(F.conv1d(x, s["stem.conv.weight"]), "stem.bn"))

    def unit(t: torch.Tensor, pre: str, stride: int, pad: int, project: bool) -> torch.Tensor:
        out = F.relu(bn(F.conv1d(t, s[pre + ".conv1.weight"], stride=stride, padding=pad), pre + ".bn1"))
        out = bn(F.conv1d(out, s[pre + ".conv2.weight"], padding=pad), pre + ".bn2")
        short = (bn(F.conv1d(t, s[pre + ".shortcut.conv.weight"], stride=stride), pre + ".shortcut.bn")
                 if project else t)
        return F.relu(out + short)

    h = unit(h, "block1.unit1", 1, 1, False)
    h = unit(h, "block2.unit1", 2, 2, True)
    h = unit(h, "block2.unit2", 1, 1, False).mean(-1)
    torch.testing.assert_close(r(x), F.linear(h, s["head.out.weight"], s["head.out.bias"]))


HOSTILE = ["MODELS", "nn", "torch", "F", "f", "head", "Head", "ConvBN", "vgg", "Vgg", "none",
           "print", "Exception", "int", "self", "x", "forward", "super"]


def test_hostile_names_cannot_shadow_or_collide() -> None:
    body = " ".join(f"net {n} mlp {{ dense {i + 1} }}" for i, n in enumerate(HOSTILE))
    e = loads(f"ensemble hostile {{ input 4; classes 2; {body} }}")
    m = load_models(models_source(e, e.nets))
    assert list(m.MODELS) == HOSTILE
    assert len({id(c) for c in m.MODELS.values()}) == len(HOSTILE)
    assert m.nn is torch.nn and m.torch is torch
    assert getattr(m, "F", torch.nn.functional) is torch.nn.functional
    assert m.Head.__module__ == m.__name__ and issubclass(m.Head, torch.nn.Sequential)
    assert isinstance(m.MODELS, dict)
    for i, n in enumerate(HOSTILE):
        module = m.MODELS[n]()
        assert module.head.fc1.out_features == i + 1
        _run(module, m.MODELS[n], batch=2)
    assert m.MODELS["vgg"].__name__ == "Vgg" and m.MODELS["Vgg"].__name__ == "Vgg_1"
    assert m.MODELS["MODELS"].__name__ == "MODELS_1"


def test_names_built_outside_the_grammar_stay_inert() -> None:
    """IR built by hand can hold any string; it must not inject code into the module."""
    evil = ['a"""; import os #', "b\nMODELS = {}", "c\\", "d'\"", "é"]
    nets = tuple(Net(name=n, family="mlp", dense=(Linear(width=2),)) for n in evil)
    e = Ensemble(name='ens"""\n', input=(3,), classes=2, nets=nets, source='/abs/dir/we"ird\n.mnet')
    source = models_source(e, e.nets)
    assert "/abs/dir" not in source
    m = load_models(source)
    assert list(m.MODELS) == evil
    assert "os" not in vars(m)
    tree = ast.parse(source)
    assert [type(n).__name__ for n in tree.body].count("Import") == 1


def test_duplicate_names_are_an_error() -> None:
    net = Net(name="a", family="mlp")
    e = Ensemble(name="e", input=(3,), classes=2, nets=(net,))
    with pytest.raises(MNError, match="both named 'a'"):
        models_source(e, [net, net])


def test_conv_net_on_flat_input_is_an_error() -> None:
    net = Net(name="c", family="plain", blocks=(Block(layers=(Layer(kernel=3, filters=2),)),))
    e = Ensemble(name="e", input=(3,), classes=2, nets=(net,))
    with pytest.raises(MNError, match="flat"):
        models_source(e, [net])


def test_models_source_is_deterministic() -> None:
    path = next(p for p in EXAMPLES if p.stem == "r10")
    first, second = load(path), load(path)
    assert first is not second
    assert models_source(first, first.nets) == models_source(second, second.nets)


# ---------------------------------------------------------------------------------------------
# `mncompile SPEC`: the folder, through the real entry point


def _spec(stem: str) -> Path:
    return next(p for p in EXAMPLES if p.stem == stem)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _main(*argv: str) -> int:
    from mncompile.cli import main

    return main(list(argv))


def test_compile_writes_the_default_folder_and_prints_a_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert _main(str(_spec("mnist1d")), "--clusters", "2") == 0
    out = capsys.readouterr().out
    folder = tmp_path / "generated" / "mnist1d"
    import json

    plan = json.loads((folder / "plan.json").read_text())
    hatched = {f"hatch/{m}.json" for c in plan["clusters"] if len(c["members"]) > 1 for m in c["members"]}
    files = set(_tree(folder))
    assert {".mncompile", "README.md", "models.py", "plan.json"} <= files
    assert {f for f in files if f.startswith("hatch/")} == hatched and hatched
    assert files - hatched == {".mncompile", "README.md", "models.py", "plan.json", "shared.py", "train.py"}
    assert "wrote generated/mnist1d/" in out
    assert "mothernet1" in out and "mothernet2" in out and "c32k7" in out and "MotherNet" in out
    readme = (folder / "README.md").read_text()
    assert "mncompile mnist1d.mnet --clusters 2 --seed 0" in readme
    for name in ("README.md", "models.py", "plan.json"):
        assert str(tmp_path) not in (folder / name).read_text(), f"{name} holds an absolute path"
    assert not [p for p in (tmp_path / "generated").iterdir() if p.name.startswith(".")]


def test_compiled_folder_agrees_with_plan_json_and_infer_net(tmp_path: Path) -> None:
    import json

    assert _main(str(_spec("digits")), "-o", str(tmp_path / "out"), "--clusters", "4") == 0
    folder = tmp_path / "out"
    plan = json.loads((folder / "plan.json").read_text())
    m = load_models((folder / "models.py").read_text())
    e = load(_spec("digits"))
    mothers = {c["mother"]["name"]: c for c in plan["clusters"]}
    assert list(m.MODELS) == [*mothers, *(n.name for n in e.nets)]
    for name, c in mothers.items():
        module = m.MODELS[name]()
        assert sum(p.numel() for p in module.parameters()) == c["mother"]["params"]
        assert m.MODELS[name].__doc__ and all(member in m.MODELS[name].__doc__ for member in c["members"])
        _run(module, m.MODELS[name], batch=2)
    for row in plan["members"]:
        module = m.MODELS[row["name"]]()
        _check_module(module, e.net(row["name"]), e)
        assert sum(p.numel() for p in module.parameters()) == row["params"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ensembles(max_nets=4))
def test_compiled_hypothesis_ensembles_build_and_count(e: Ensemble) -> None:
    """Through the planner: every MotherNet's class matches its IR and plan.json's count."""
    import json

    from mncompile.compiler import compile_ensemble

    out = compile_ensemble(e, clusters=None, seed=0)
    plan = json.loads(out.files["plan.json"])
    m = load_models(out.files["models.py"])
    for c in plan["clusters"]:
        mother = next(cl.mother for cl in out.plan.clusters if cl.mother.name == c["mother"]["name"])
        module = m.MODELS[mother.name]()
        _check_module(module, mother, e)
        assert sum(p.numel() for p in module.parameters()) == c["mother"]["params"]
        _run(module, m.MODELS[mother.name], batch=2)
    assert list(m.MODELS) == [c.mother.name for c in out.plan.clusters] + [n.name for n in e.nets]


def test_compile_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    spec = str(_spec("r10"))
    assert _main(spec, "-o", str(tmp_path / "a"), "--clusters", "3", "--seed", "1") == 0
    assert _main(spec, "-o", str(tmp_path / "b"), "--clusters", "3", "--seed", "1") == 0
    first = _tree(tmp_path / "a")
    assert first == _tree(tmp_path / "b")
    # compiling again over a generated folder replaces it with the same bytes
    assert _main(spec, "-o", str(tmp_path / "a"), "--clusters", "3", "--seed", "1") == 0
    assert _tree(tmp_path / "a") == first
    assert json_sorted(first["plan.json"])


def json_sorted(data: bytes) -> bool:
    import json

    text = data.decode()
    return text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_compile_refuses_a_folder_it_did_not_generate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    assert _main(str(_spec("mlp")), "-o", str(dest)) == 2
    err = capsys.readouterr().err
    assert "was not generated by mncompile" in err and "--force" in err and "Traceback" not in err
    assert _tree(dest) == {"notes.txt": b"keep me"}
    assert _main(str(_spec("mlp")), "-o", str(dest), "--force") == 0
    assert "notes.txt" not in _tree(dest) and "models.py" in _tree(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_compile_refuses_dangerous_destinations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "specs" / "m.mnet"
    spec.parent.mkdir()
    spec.write_bytes(_spec("mlp").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert _main(str(spec), "-o", ".", "--force") == 2
    assert _main(str(spec), "-o", str(spec.parent), "--force") == 2
    assert _main(str(spec), "-o", str(spec), "--force") == 2
    (tmp_path / "file").write_text("x")
    assert _main(str(spec), "-o", "file", "--force") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "Traceback" not in err
    assert spec.read_bytes() == _spec("mlp").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "specs"]


def test_compile_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mnet"
    bad.write_text("ensemble e { input 3x8x8; classes 2; net a plain { block { 4:8 } } }\n")
    assert _main(str(bad), "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "bad.mnet:1:" in err and "^" in err
    assert _main(str(_spec("mlp")), "-o", str(tmp_path / "out"), "--clusters", "99") == 2
    assert "clusters" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _main(str(_spec("mlp")), "-o", str(tmp_path / "out"), "--clusters", "0")
    assert exit_info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mnet"]


def test_a_failed_swap_leaves_the_old_folder_untouched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import mncompile.writer as writer

    dest = tmp_path / "out"
    assert _main(str(_spec("mlp")), "-o", str(dest)) == 0
    before = _tree(dest)
    real_replace = writer.os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(str(dst)) == dest and ".tmp" in Path(str(src)).name:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(writer.os, "replace", failing_replace)
    assert _main(str(_spec("mnist1d")), "-o", str(dest), "--force") == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_compile_never_imports_torch_and_ignores_hash_seeds(tmp_path: Path) -> None:
    """Two fresh interpreters with different hash seeds write the same bytes, without torch."""
    import os

    trees = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        code = ("import sys; from mncompile.cli import main; "
                f"rc = main([{str(_spec('digits'))!r}, '-o', {str(out)!r}, '--clusters', '4']); "
                "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'")
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        trees.append(_tree(out))
    assert trees[0] == trees[1]


def test_long_blocks_wrap_within_the_line_length(tmp_path: Path) -> None:
    plain = " ".join(f"{3 + 2 * (i % 2)}:{4 + i}" for i in range(30))
    stage = " ".join(f"{1 + 2 * (i % 3)}:6" for i in range(25))
    dense = " ".join(f"{1 + 2 * (i % 2)}:{1 + i % 3}" for i in range(30))
    e = loads(f"ensemble e {{ input 2x4x4; classes 2; net p plain {{ block {{ {plain} }} }} "
              f"net r residual {{ stem 3:6; block {{ {stage} }} }} "
              f"net d dense {{ stem 1:2; block {{ {dense} }} }} }}")
    source = models_source(e, e.nets)
    assert max(len(line) for line in source.splitlines()) <= 110
    assert "    + [" in source
    m = load_models(source)
    for net in e.nets:
        cls = m.MODELS[net.name]
        module = cls()
        _check_module(module, net, e)
        _run(module, cls, batch=2)
    path = tmp_path / "models.py"
    path.write_text(source)
    proc = subprocess.run([*RUFF, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
