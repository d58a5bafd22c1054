"""`mncompile import`: the nearest .mnet net to a PyTorch module, with its differences named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mncompile.api import load, loads
from mncompile.cli import main as cli_main
from mncompile.fmt import format_net

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "tests" / "data" / "modules" / "zoo.py"


def _import(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> tuple[int, str, str]:
    rc = cli_main(["import", target, *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _counts(err: str) -> tuple[int, int]:
    m = re.search(r"([\d,]+) parameters in the module, ([\d,]+) in the imported net", err)
    assert m, err
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


@pytest.mark.parametrize("spec", ["v5_1d", "d5_1d", "r10_1d", "digits", "mlp"])
def test_every_generated_net_imports_back_to_itself(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A module in the family contract's conventions (our own generated ones) imports to its own net."""
    folder = ROOT / "generated" / spec
    plan = json.loads((folder / "plan.json").read_text())
    source = (folder / "models.py").read_text()
    origin = re.search(r"from ([\w.-]+\.mnet)", source)
    assert origin
    nets = {n.name: n for n in load(ROOT / "examples" / origin.group(1)).nets}
    inp = "x".join(map(str, plan["input"]))
    checked = 0
    for key, cls in re.findall(r'^    "(\w+)": (\w+),', source, re.M):
        rc, out, err = _import(capsys, f"{folder / 'models.py'}:{cls}", "--input", inp, "--name", key)
        assert rc == 0, err
        theirs, ours = _counts(err)
        assert theirs == ours and len(err.strip().splitlines()) == 1, err  # no difference to note
        if key in nets:  # a member: the spec's own text (MotherNets are not in the spec)
            body = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
            assert body.strip() == format_net(nets[key], indent="").strip()
            checked += 1
    assert checked == len(nets)


@pytest.mark.parametrize("target, family, text", [
    ("vgg16_cifar", "plain", "block { 3:64 x2 } block { 3:128 x2 } block { 3:256 x3 } block { 3:512 x3 } "
                             "block { 3:512 x3 } dense 512"),
    ("resnet20", "residual", "stem 3:16 block { 3:16 x3 } block { 3:32 x3 } block { 3:64 x3 }"),
    ("densenet16", "dense", "stem 3:24 block { 3:12 x4 } block { 3:12 x4 } block { 3:12 x4 }"),
])
def test_modules_in_the_family_conventions_import_with_the_same_parameter_count(
        target: str, family: str, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _import(capsys, f"{ZOO}:{target}", "--input", "3x32x32")
    assert rc == 0, err
    theirs, ours = _counts(err)
    assert theirs == ours and "note:" in err and len(err.strip().splitlines()) == 1
    e = loads(f"ensemble t {{ input 3x32x32 classes 10 net n {family} {{ {text} }} }}")
    body = " ".join(line for line in out.splitlines() if not line.startswith("#")).split()
    assert body[2:] == format_net(e.nets[0], indent="").split()[2:]  # past "net NAME"


def test_an_mlp_imports_from_its_first_linear(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _import(capsys, f"{ZOO}:MLP")
    assert rc == 0 and "# input 40, classes 10" in out and "dense 256 128" in out
    assert _counts(err)[0] == _counts(err)[1]


def test_torchvision_style_vgg_imports_to_the_nearest_net_with_each_difference(
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _import(capsys, f"{ZOO}:vgg11_torchvision", "--input", "3x32x32")
    assert rc == 0
    theirs, ours = _counts(err)
    assert theirs == 128_812_810 and ours < theirs
    for expected in ("features.0: has a bias", "adaptive pooling to (7, 7)", "takes 25088 inputs, ours 512",
                     "dropout"):
        assert expected in err
    assert "dense 4096 4096" in out and "block { 3:256 x2 }" in out


def test_option_a_shortcuts_and_huang_s_densenet_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _import(capsys, f"{ZOO}:resnet20_option_a", "--input", "3x32x32")
    assert rc == 0 and err.count("parameter-free shortcut (option A") == 2
    theirs, ours = _counts(err)
    assert ours - theirs == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # the two 1x1 conv + BN projections
    rc, _, err = _import(capsys, f"{ZOO}:densenet16_huang", "--input", "3x32x32")
    assert rc == 0 and err.count("(compression)") == 2 and "the stem has no BatchNorm" in err


def test_add_makes_a_whole_spec_that_compiles(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _import(capsys, f"{ZOO}:resnet20", "--input", "3x32x32", "--add", f"{ZOO}:vgg16_cifar",
                           "--add", f"{ZOO}:resnet20", "--ensemble", "mine")
    assert rc == 0, err
    e = loads(out)
    assert e.name == "mine" and [n.name for n in e.nets] == ["resnet20", "vgg16_cifar", "resnet20_2"]
    assert cli_main(["check", str(_write(tmp_path, out))]) == 0


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.mnet"
    path.write_text(text)
    return path


@pytest.mark.parametrize("target, args, message", [
    ("WithLSTM", ["--input", "1x40"], "layer 'rnn' (LSTM) does not fit"),
    ("EvenKernel", ["--input", "3x32x32"], "its kernel 4 is even"),
    ("NOT_A_MODULE", [], "got int, not a torch.nn.Module"),
    ("resnet20", [], "needs --input"),
    ("resnet20", ["--input", "1x40"], "does not fit the first convolution"),
    ("MLP", ["--input", "3x32x32"], "has 3072 features, but the first Linear takes 40"),
    ("nothing_here", [], "has no 'nothing_here'"),
    ("resnet20", ["--input", "3xx32"], "expected N, CxL or CxHxW"),
])
def test_what_does_not_fit_is_a_clear_error(target: str, args: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _import(capsys, f"{ZOO}:{target}", *args)
    assert rc == 2 and message in err and "Traceback" not in err and out == ""
