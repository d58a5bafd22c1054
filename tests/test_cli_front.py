"""The front-end commands through the real entry point: help, version, --debug, check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mncompile import __version__, cli
from mncompile.api import load
from mncompile.cli import main
from mncompile.diagnostics import MNError
from mncompile.ir import Net
from mncompile.shapes import infer_net, layer_count
from mncompile.table import human

ROOT = Path(__file__).resolve().parent.parent
V5 = ROOT / "examples" / "v5.mnet"
BAD = "ensemble e {\n  input 3x32x32\n  classes 10\n  net a plain { block { 4:8 } }\n}\n"


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mncompile")
    for mod in cli.COMMANDS:
        assert f"    {mod.NAME} " in out, mod.NAME
    assert "check" in out and "fmt" in out
    assert "--debug" in out and "--version" in out


def test_no_arguments_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "usage: mncompile" in captured.out + captured.err
    assert "Traceback" not in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mncompile {__version__}"


def test_subcommand_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_debug_raises_the_error_in_process(tmp_path: Path) -> None:
    spec = tmp_path / "bad.mnet"
    spec.write_text(BAD)
    with pytest.raises(MNError) as info:
        main(["--debug", "check", str(spec)])
    assert "kernel sizes must be odd" in info.value.message


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "bad.mnet"
    spec.write_text(BAD)
    plain = subprocess.run([sys.executable, "-m", "mncompile.cli", "check", str(spec)],
                           capture_output=True, text=True, timeout=60)
    debug = subprocess.run([sys.executable, "-m", "mncompile.cli", "--debug", "check", str(spec)],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "MNError" in debug.stderr and "kernel sizes must be odd" in debug.stderr


def _vgg_params(net: Net, channels: int, classes: int) -> int:
    """Parameters of a plain net counted by hand: conv (no bias) + BN affine, then linears."""
    total, c = 0, channels
    for block in net.blocks:
        for layer in block.layers:
            total += layer.kernel * layer.kernel * c * layer.filters + 2 * layer.filters
            c = layer.filters
    for width in net.widths:
        total += c * width + width
        c = width
    return total + c * classes + classes


def test_check_prints_the_table_for_v5(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(V5)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{V5}: ensemble 'v5' is valid: 5 nets, input 3x32x32, 10 classes"
    header = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["net"])
    assert lines[header].split() == ["net", "family", "blocks", "layers", "params", "MACs"]
    rows = {ln.split()[0]: ln.split() for ln in lines[header + 2 : header + 7]}
    e = load(V5)
    assert list(rows) == [n.name for n in e.nets]
    for net in e.nets:
        s = infer_net(net, e.input, e.classes)
        assert s.params == _vgg_params(net, 3, 10)
        assert rows[net.name] == [net.name, "plain", "5", str(layer_count(net)), human(s.params),
                                  human(s.macs)]
    # VGG-13 on CIFAR with a 512 head, counted by hand: convolutions 9,402,048, BatchNorm 5,888,
    # the hidden linear 262,656 and the output 5,130: 9,675,722 (shown as 9.68M)
    assert rows["vgg13"][4] == "9.68M" and infer_net(e.net("vgg13"), e.input, 10).params == 9_675_722
    assert rows["vgg13"][3] == "12"  # 10 convolutions + 1 hidden linear + the output layer
    total = sum(infer_net(n, e.input, e.classes).params for n in e.nets)
    assert f"total: {human(total)} parameters" in out


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--json", str(V5)]) == 0
    data = json.loads(capsys.readouterr().out)
    e = load(V5)
    assert data["ensemble"] == "v5" and data["input"] == [3, 32, 32] and data["classes"] == 10
    assert [r["net"] for r in data["nets"]] == [n.name for n in e.nets]
    for row, net in zip(data["nets"], e.nets, strict=True):
        s = infer_net(net, e.input, e.classes)
        assert row == {"net": net.name, "family": "plain", "blocks": 5, "layers": layer_count(net),
                       "params": s.params, "macs": s.macs}
        assert row["params"] == _vgg_params(net, 3, 10)


@pytest.mark.parametrize("name", ["r10", "d5", "mlp", "mnist1d", "digits", "wrn6", "v25"])
def test_check_json_every_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "examples" / f"{name}.mnet"
    assert main(["check", "--json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    e = load(path)
    assert [(r["net"], r["params"]) for r in data["nets"]] == [
        (n.name, infer_net(n, e.input, e.classes).params) for n in e.nets]


def test_check_json_error_is_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.mnet"
    spec.write_text(BAD)
    assert main(["check", "--json", str(spec)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{spec}:4:25: error: kernel sizes must be odd")
