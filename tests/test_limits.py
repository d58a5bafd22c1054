"""Safe by default: the limits on layers, widths, parameters and names, through the real CLI.

Each refusal is one positioned message with a caret and a hint, exit status 2, and nothing
written; `--max-params` moves the parameter limit on check, plan, compile and run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from mncompile.api import load, loads
from mncompile.cli import main
from mncompile.commands.run import _PARSER as RUN_PARSER
from mncompile.commands.run import command_line
from mncompile.diagnostics import MNError
from mncompile.parse import MAX_LAYERS, MAX_TOTAL_LAYERS
from mncompile.passes.check import (
    ENSEMBLE_PARAMS_FACTOR,
    MAX_NAME_LENGTH,
    MAX_NET_PARAMS,
    MAX_WIDTH,
    check_ensemble,
)
from mncompile.shapes import infer_net
from mncompile.validators import count_or_none
from mncompile.zoo import vgg16_variants

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.mnet"))
HEAD = "ensemble e {\n  input 3x32x32\n  classes 10\n"


def spec(tmp_path: Path, text: str, name: str = "s.mnet") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expect the one-message refusal (status 2, nothing on stdout); its stderr."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert ": error: " in err.splitlines()[0] and "^" in err and "\n  = help: " in err, err
    return err


def position(err: str) -> tuple[int, int]:
    """(line, column) of the first line, `file:line:column: error: ...`."""
    where = err.split(": error: ")[0]
    line, column = where.rsplit(":", 2)[1:]
    return int(line), int(column)


# --- dense widths count as layers -----------------------------------------------------------


def test_dense_widths_count_toward_the_layer_limit(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ok = spec(tmp_path, HEAD + "  net a mlp { dense " + "1 " * MAX_LAYERS + "}\n}\n", "ok.mnet")
    assert main(["check", str(ok)]) == 0
    capsys.readouterr()
    line = "  net a mlp { dense " + "1 " * (MAX_LAYERS + 5) + "}"
    err = refused(capsys, ["check", str(spec(tmp_path, HEAD + line + "\n}\n"))])
    assert f"this net has more than {MAX_LAYERS} layers" in err
    assert "repeats and dense widths included" in err
    # the caret is on the first width past the limit
    assert position(err) == (4, line.index("dense ") + len("dense ") + 2 * MAX_LAYERS + 1)


def test_repeats_and_dense_widths_add_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = f"  net a plain {{ block {{ 3:8 x{MAX_LAYERS - 1} }} dense 4 4 }}"
    err = refused(capsys, ["check", str(spec(tmp_path, HEAD + line + "\n}\n"))])
    assert f"this net has more than {MAX_LAYERS} layers" in err
    assert position(err) == (4, line.rindex("4") + 1)


def test_a_huge_dense_list_stops_at_the_limit_not_at_the_end(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Refused while lexing: the syntax error at the very end is never reached, and a million
    widths cost what ten thousand do (building them all took a minute and gigabytes)."""
    text = HEAD + "  net a mlp { dense " + "1 " * 1_000_000 + "} } }  }\n"
    start = time.perf_counter()
    err = refused(capsys, ["check", str(spec(tmp_path, text))])
    assert time.perf_counter() - start < 20
    assert f"more than {MAX_LAYERS} layers" in err and position(err)[0] == 4


def test_dense_widths_count_toward_the_ensemble_limit(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    per_net = MAX_LAYERS - 1
    nets = MAX_TOTAL_LAYERS // per_net + 1
    lines = [f"  net n{i} mlp {{ dense " + "1 " * per_net + "}" for i in range(nets)]
    err = refused(capsys, ["check", str(spec(tmp_path, HEAD + "\n".join(lines) + "\n}\n"))])
    assert f"the ensemble has more than {MAX_TOTAL_LAYERS} layers" in err
    line = MAX_TOTAL_LAYERS // per_net  # the net holding the 100 001st layer
    assert position(err)[0] == 4 + line


# --- widths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("part", "what"), [
    ("dense 1000000 1000000", "a dense width"),  # the 10^12-parameter spec of the report
    (f"dense 16 {MAX_WIDTH + 1}", "a dense width"),
])
def test_dense_width_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str], part: str, what: str) -> None:
    line = f"  net a mlp {{ {part} }}"
    err = refused(capsys, ["check", str(spec(tmp_path, HEAD + line + "\n}\n"))])
    assert f"{what} must be at most {MAX_WIDTH}, got" in err
    bad = next(w for w in part.split()[1:] if int(w) > MAX_WIDTH)
    assert position(err) == (4, line.index(f" {bad}") + 2)


def test_filter_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = f"  net a plain {{ block {{ 3:16 1:{MAX_WIDTH + 1} }} }}"
    err = refused(capsys, ["check", str(spec(tmp_path, HEAD + line + "\n}\n"))])
    assert f"a filter count must be at most {MAX_WIDTH}, got {MAX_WIDTH + 1}" in err
    assert position(err) == (4, line.index("1:") + 1)


def test_the_widest_layer_is_accepted() -> None:
    e = loads(f"ensemble e {{ input 8 classes 2 net a mlp {{ dense {MAX_WIDTH} }} }}")
    assert e.nets[0].widths == (MAX_WIDTH,)


# --- parameters -----------------------------------------------------------------------------

BIG = HEAD + "  net small mlp { dense 8 }\n  net huge mlp { dense 40000 40000 }\n}\n"
HUGE_PARAMS = 3072 * 40000 + 40000 + 40000 * 40000 + 40000 + 40000 * 10 + 10


def test_a_net_over_the_parameter_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, ["check", str(spec(tmp_path, BIG))])
    assert (f"net 'huge' has 1.72G trainable parameters ({HUGE_PARAMS}), more than the 1G a net "
            "may have") in err
    assert position(err) == (5, 7)
    assert "--max-params 2G" in err


@pytest.mark.parametrize("limit", ["2G", "2e9", "2000000000", "none", "None"])
def test_max_params_lets_it_through(tmp_path: Path, capsys: pytest.CaptureFixture[str], limit: str) -> None:
    assert main(["check", str(spec(tmp_path, BIG)), "--max-params", limit]) == 0
    assert "is valid" in capsys.readouterr().out


def test_the_limit_can_be_lowered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = spec(tmp_path, HEAD + "  net a mlp { dense 64 }\n}\n")
    params = 3072 * 64 + 64 + 64 * 10 + 10
    assert main(["check", str(small), "--max-params", str(params)]) == 0
    capsys.readouterr()
    err = refused(capsys, ["check", str(small), "--max-params", str(params - 1)])
    assert f"net 'a' has {params // 1000}k trainable parameters ({params})" in err


def test_the_ensemble_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # each net 0.46G, under the 1G of one net; the 22nd brings the ensemble past 10G
    each = 3072 * 20000 + 20000 + 20000 * 20000 + 20000 + 20000 * 10 + 10
    crossing = ENSEMBLE_PARAMS_FACTOR * MAX_NET_PARAMS // each  # 0-based: the 22nd net
    nets = "".join(f"  net n{i} mlp {{ dense 20000 20000 }}\n" for i in range(30))
    path = spec(tmp_path, HEAD + nets + "}\n")
    err = refused(capsys, ["check", str(path)])
    total = (crossing + 1) * each
    assert (f"with net 'n{crossing}', the ensemble's nets have {total / 1e9:.3g}G trainable parameters "
            f"({total}) in all, more than the 10G an ensemble may have ({ENSEMBLE_PARAMS_FACTOR} x the 1G of "
            "one net)") in err
    assert position(err) == (4 + crossing, 7)
    assert main(["check", str(path), "--max-params", "2G"]) == 0


def test_bad_limits_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = spec(tmp_path, BIG)
    for bad in ("0", "-1", "1.5", "lots", "1e30"):
        with pytest.raises(SystemExit) as info:
            main(["check", str(path), "--max-params", bad])
        assert info.value.code == 2
        assert f"argument --max-params: expected a whole number such as 1000000000, 1e9 or 1G (or " \
               f"'none'), got '{bad}'" in capsys.readouterr().err
    with pytest.raises(MNError, match="at least 1"):
        check_ensemble(loads("ensemble e { input 8 classes 2 net a mlp { } }"), max_params=0)


@pytest.mark.parametrize(("text", "value"), [("1G", 10**9), ("2.5g", 2_500_000_000), ("1e9", 10**9),
                                             ("7", 7), ("12k", 12_000), ("3M", 3 * 10**6),
                                             ("1T", 10**12), ("none", None), ("NONE", None)])
def test_count_or_none(text: str, value: int | None) -> None:
    assert count_or_none(text) == value


def test_compile_and_plan_take_the_limit_and_write_nothing_when_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = spec(tmp_path, BIG)
    refused(capsys, [str(path)])
    refused(capsys, ["compile", str(path), "-o", "out"])
    refused(capsys, ["plan", str(path)])
    refused(capsys, ["run", str(path), "--data", "synthetic"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mnet"]
    assert main(["plan", str(path), "--max-params", "2G", "--clusters", "2"]) == 0
    assert main([str(path), "-o", "out", "--max-params", "none"]) == 0
    assert (tmp_path / "out" / "models.py").is_file() and (tmp_path / "out" / "hatch" / "huge.json").is_file()


def test_run_takes_the_limit_and_its_resume_line_keeps_it() -> None:
    args = RUN_PARSER.parse_args(["s.mnet", "--max-params", "none"])
    assert args.max_params is None
    argv = command_line(args)
    assert argv[:2] == ["run", "s.mnet"] and "--max-params" in argv
    again = RUN_PARSER.parse_args(argv[1:])
    assert again.max_params is None
    default = RUN_PARSER.parse_args(["s.mnet"])
    assert default.max_params == MAX_NET_PARAMS and "--max-params" not in command_line(default)
    assert RUN_PARSER.parse_args(["s.mnet", "--max-params", "3G"]).max_params == 3 * 10**9


def test_the_library_takes_the_limit_too() -> None:
    with pytest.raises(MNError, match="more than the 1G a net may have"):
        loads(BIG)
    assert loads(BIG, max_params=None).nets[1].name == "huge"
    from mncompile.compiler import compile_ensemble

    e = loads(BIG, max_params=None)
    with pytest.raises(MNError, match="more than the 1G a net may have"):
        compile_ensemble(e)  # the pipeline's check_spec applies the default limit again
    assert "models.py" in compile_ensemble(e, clusters=2, max_params=None).files


def test_the_defaults_admit_every_example_with_room() -> None:
    """The largest real specs (the paper's V25, V100, WRN) are far below the limits."""
    specs = {p.name: load(p) for p in EXAMPLES}
    specs["v100"] = loads(vgg16_variants(100))
    for name, e in specs.items():
        params = [infer_net(n, e.input, e.classes).params for n in e.nets]
        assert max(params) * 10 <= MAX_NET_PARAMS, name
        assert sum(params) * 4 <= ENSEMBLE_PARAMS_FACTOR * MAX_NET_PARAMS, name
        widths = [w for n in e.nets for w in n.widths]
        widths += [x.filters for n in e.nets for b in n.blocks for x in b.layers]
        assert max(widths) * 10 <= MAX_WIDTH, name
        assert max(len(n.name) for n in e.nets) * 4 <= MAX_NAME_LENGTH, name


# --- names ----------------------------------------------------------------------------------


def test_a_long_net_name_is_refused_at_check_time(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "n" * 300
    path = spec(tmp_path, HEAD + f"  net {name} mlp {{ dense 8 }}\n  net b mlp {{ dense 4 }}\n}}\n")
    err = refused(capsys, ["check", str(path)])
    assert f"a net name may have at most {MAX_NAME_LENGTH} characters, this one has 300" in err
    assert position(err) == (4, 7)
    refused(capsys, [str(path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mnet"]


def test_a_long_ensemble_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = spec(tmp_path, "ensemble " + "e" * (MAX_NAME_LENGTH + 1) + " { input 8 classes 2 "
                "net a mlp { } }")
    err = refused(capsys, ["check", str(path)])
    assert f"an ensemble name may have at most {MAX_NAME_LENGTH} characters, this one has " \
           f"{MAX_NAME_LENGTH + 1}" in err


def test_the_longest_names_compile_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names at the limit fit every file mncompile makes of them, mother names included."""
    long = "m" * MAX_NAME_LENGTH
    text = (f"ensemble {'e' * MAX_NAME_LENGTH} {{ input 8 classes 2 net {long} mlp {{ dense 8 }} "
            f"net {long[:-1]}b mlp {{ dense 6 }} }}")
    out = tmp_path / "out"
    assert main([str(spec(tmp_path, text)), "-o", str(out)]) == 0
    assert (out / "hatch" / f"{long}.json").is_file()
    assert max(len(p.name) for p in out.rglob("*")) <= MAX_NAME_LENGTH + 5


def test_a_name_at_the_limit_is_accepted() -> None:
    e = loads(f"ensemble e {{ input 8 classes 2 net {'a' * MAX_NAME_LENGTH} mlp {{ }} }}")
    assert len(e.nets[0].name) == MAX_NAME_LENGTH


def test_the_limits_reach_argparse_help() -> None:
    for command in ("check", "plan", "compile"):
        p = argparse.ArgumentParser()
        from mncompile.cli import COMMANDS

        mod = next(m for m in COMMANDS if m.NAME == command)
        mod.add_arguments(p)
        assert "--max-params" in p.format_help(), command
