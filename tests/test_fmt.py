"""`mncompile fmt`: the canonical text means what the spec means, and is a fixed point.

Properties, over hypothesis-generated ensembles (with random names and training settings)
and over every example:

- round trip: parse(fmt(e)) == e, spans aside;
- idempotence: fmt(parse(fmt(e))) == fmt(e);
- canonical: however a spec is laid out (whitespace, comments, ';', `x 3` or repeated layers,
  settings in any order), fmt gives the same text.

And the command itself: printing, `--check` and `-w`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.api import load, loads
from mncompile.cli import main
from mncompile.fmt import format_ensemble, format_layers
from mncompile.ir import INT_KEYS, TRAIN_DEFAULTS, Ensemble, Layer, Setting, strip_spans
from mncompile.parse import is_valid_name, parse_text
from mncompile.passes.check import check_ensemble
from tests.strategies import ensembles

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.mnet"))

# names that look like the language's own words: the lexer must still read them as names
NAME_POOL = ["e", "a", "b2", "_", "_x", "x", "x3", "input", "classes", "data", "train", "net", "stem",
             "block", "dense", "plain", "residual", "mlp", "ensemble", "cosine", "match", "type",
             "vgg16", "ResNet_110", "Z"]
NAMES = st.one_of(st.sampled_from(NAME_POOL),
                  st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True).filter(is_valid_name))


def _value(key: str) -> st.SearchStrategy[float | int | str]:
    if key == "schedule":
        return st.sampled_from(["cosine", "constant"])
    if key in INT_KEYS:
        low = 0 if key in ("seed", "hatched_max_epochs") else 1
        return st.integers(low, 2**31 - 1)
    if key == "momentum":
        return st.floats(0, 1, exclude_max=True)
    finite = st.floats(min_value=0, max_value=1e300, allow_nan=False, allow_infinity=False)
    if key in ("lr", "hatched_lr"):
        finite = finite.filter(lambda v: v > 0)
    # a float key may be written as an integer: 'lr 1' is the int 1 in the IR
    return st.one_of(finite, st.integers(1, 1000))


@st.composite
def train_settings(draw: st.DrawFn) -> tuple[Setting, ...]:
    keys = [k for k in TRAIN_DEFAULTS if draw(st.booleans())]
    return tuple(Setting(key=k, value=draw(_value(k))) for k in keys)


@st.composite
def full_ensembles(draw: st.DrawFn) -> Ensemble:
    """`tests.strategies.ensembles()` with random names, data and training settings added."""
    e = draw(ensembles(max_nets=4))
    names = draw(st.lists(NAMES, min_size=len(e.nets), max_size=len(e.nets), unique=True))
    nets = tuple(n.model_copy(update={"name": name}) for n, name in zip(e.nets, names, strict=True))
    return e.model_copy(update={
        "name": draw(NAMES),
        "nets": nets,
        "data": draw(st.sampled_from([None, "synthetic"])),
        "train": draw(train_settings()),
    })


@settings(max_examples=120, deadline=None)
@given(full_ensembles())
def test_round_trip_and_idempotence(e: Ensemble) -> None:
    check_ensemble(e)  # the generated ensemble is itself valid
    text = format_ensemble(e)
    again = parse_text(text)
    assert strip_spans(again) == strip_spans(e)
    assert check_ensemble(again) is again
    assert format_ensemble(again) == text


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Ensemble, str]:
    """An ensemble and one of the many texts that spell it."""
    e = draw(full_ensembles())
    words: list[str] = []

    def semi() -> None:
        if draw(st.booleans()):
            words.append(";")

    words += ["ensemble", e.name, "{"]
    items: list[list[str]] = [
        ["input"] + " x ".join(map(str, e.input)).split(" ") if draw(st.booleans())
        else ["input", "x".join(map(str, e.input))],
        ["classes", str(e.classes)],
    ]
    if e.data is not None:
        items.append(["data", e.data])
    if e.train:
        body = [[s.key, _spell(s.value)] for s in e.train]
        body = draw(st.permutations(body))
        train = ["train", "{"]
        for kv in body:
            train += kv + ([";"] if draw(st.booleans()) else [])
        items.append(train + ["}"])
    # input, classes, data and train may come in any order, before or between the nets
    items = list(draw(st.permutations(items)))
    after = 0  # nets keep their order; the other items may fall between them
    for net in e.nets:
        part = ["net", net.name, net.family, "{"]
        if net.stem is not None:
            part += ["stem", f"{net.stem.kernel}:{net.stem.filters}"] + ([";"] if draw(st.booleans()) else [])
        for b in net.blocks:
            part += ["block", "{"]
            for layer, count in _runs(b.layers):
                spell = draw(st.sampled_from(["expand", "x", "x "]))
                if spell == "expand" or count == 1:
                    part += [f"{layer.kernel}:{layer.filters}"] * count
                else:
                    repeat = "x" + ("" if spell == "x" else " ") + str(count)
                    part += [f"{layer.kernel}:{layer.filters}", repeat]
            part += ["}"] + ([";"] if draw(st.booleans()) else [])
        if net.dense:
            part += ["dense"] + [str(w) for w in net.widths]
        part.append("}")
        after = draw(st.integers(after, len(items)))
        items.insert(after, part)
        after += 1
    for item in items:
        words += item
        semi()
    words.append("}")
    seps = st.sampled_from([" ", "\n", "  ", "\t", " # a comment } {\n", "\r\n", "\n\n"])
    text = draw(seps).lstrip("\r\n ") + "".join(w + draw(seps) for w in words)
    return e, text


def _spell(v: float | int | str) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def _runs(layers: tuple[Layer, ...]) -> list[tuple[Layer, int]]:
    out: list[tuple[Layer, int]] = []
    for layer in layers:
        if out and (out[-1][0].kernel, out[-1][0].filters) == (layer.kernel, layer.filters):
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((layer, 1))
    return out


@settings(max_examples=120, deadline=None)
@given(layouts())
def test_any_layout_formats_to_the_same_text(case: tuple[Ensemble, str]) -> None:
    e, text = case
    parsed = loads(text, "layout.mnet")
    assert strip_spans(parsed) == strip_spans(e)
    assert format_ensemble(parsed) == format_ensemble(e)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_round_trip(path: Path) -> None:
    e = load(path)
    text = format_ensemble(e)
    again = parse_text(text)
    assert strip_spans(again) == strip_spans(e)
    assert format_ensemble(again) == text
    # fmt keeps every net and every layer: the meaning, not just the outline
    assert [n.name for n in again.nets] == [n.name for n in e.nets]
    assert sum(len(b.layers) for n in again.nets for b in n.blocks) == sum(
        len(b.layers) for n in e.nets for b in n.blocks)


def test_fold_repeats() -> None:
    pairs = [(3, 64), (3, 64), (1, 64), (3, 64), (3, 64), (3, 64)]
    layers = tuple(Layer(kernel=k, filters=f) for k, f in pairs)
    assert format_layers(layers) == "3:64 x2 1:64 3:64 x3"


def test_settings_keep_their_types() -> None:
    e = loads("ensemble e { input 40 classes 10 train { seed 1e3 lr 1 weight_decay 5e-4 momentum .9 }"
              " net a mlp { dense 8 } }")
    text = format_ensemble(e)
    assert "    lr 1\n" in text and "    seed 1000\n" in text
    assert "    weight_decay 0.0005\n" in text and "    momentum 0.9\n" in text
    # the documented key order, whatever order the spec used
    assert text.index("lr 1") < text.index("momentum") < text.index("weight_decay") < text.index("seed")
    assert e.config.seed == 1000 and isinstance(e.config.seed, int)


# --- the command ------------------------------------------------------------------------------

MESSY = "# a comment\nensemble  tiny{input 40;classes 10\n net a mlp{dense 8 8};net b mlp { dense 16 } }\n"
CANONICAL = """ensemble tiny {
  input 40
  classes 10

  net a mlp {
    dense 8 8
  }

  net b mlp {
    dense 16
  }
}
"""


def test_fmt_prints_canonical_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.mnet"
    spec.write_text(MESSY)
    assert main(["fmt", str(spec)]) == 0
    assert capsys.readouterr().out == CANONICAL
    assert spec.read_text() == MESSY  # printing leaves the file alone


def test_fmt_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.mnet"
    spec.write_text(MESSY)
    assert main(["fmt", "--check", str(spec)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{spec}: not in canonical form (run 'mncompile fmt -w {spec}')\n"
    assert spec.read_text() == MESSY
    spec.write_text(CANONICAL)
    assert main(["fmt", "--check", str(spec)]) == 0
    assert capsys.readouterr() == ("", "")
    # a canonical spec with a comment is not canonical: fmt drops comments
    spec.write_text("# hi\n" + CANONICAL)
    assert main(["fmt", "--check", str(spec)]) == 1


def test_fmt_check_and_write_exclude_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.mnet"
    spec.write_text(MESSY)
    with pytest.raises(SystemExit) as info:
        main(["fmt", "--check", "-w", str(spec)])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
    assert spec.read_text() == MESSY


def test_fmt_write_through_a_symlink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real.mnet"
    real.write_text(MESSY)
    link = tmp_path / "link.mnet"
    link.symlink_to(real)
    assert main(["fmt", "-w", "--drop-comments", str(link)]) == 0
    assert link.is_symlink() and real.read_text() == CANONICAL


def test_fmt_write_leaves_canonical_files_untouched(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.mnet"
    spec.write_text(CANONICAL)
    os.utime(spec, (1_000_000_000, 1_000_000_000))
    assert main(["fmt", "-w", str(spec)]) == 0
    assert spec.stat().st_mtime == 1_000_000_000


def test_fmt_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "tiny.mnet"
    spec.write_text(MESSY)
    os.chmod(spec, 0o640)
    assert main(["fmt", "-w", str(spec)]) == 2  # MESSY has comments: kept unless asked
    assert "--drop-comments" in capsys.readouterr().err and spec.read_text() == MESSY
    assert main(["fmt", "-w", "--drop-comments", str(spec)]) == 0
    assert spec.read_text() == CANONICAL
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640  # the rewrite keeps the permissions
    assert capsys.readouterr().out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mnet"]  # no temporary left behind
    assert main(["fmt", "--check", str(spec)]) == 0
    assert main(["fmt", "--write", str(spec)]) == 0
    assert spec.read_text() == CANONICAL


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_fmt_write_examples_then_check(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    assert main(["fmt", "-w", "--drop-comments", str(copy)]) == 0
    assert main(["fmt", "--check", str(copy)]) == 0
    assert strip_spans(load(copy)) == strip_spans(load(path))
    capsys.readouterr()


def test_fmt_refuses_bad_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.mnet"
    spec.write_text("ensemble e {\n  input 40\n  classes 10\n  net a mlp { dense 0 }\n}\n")
    assert main(["fmt", "--check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{spec}:4:21: error: a dense width must be a positive integer")
