"""Fuzzing the front end through the real CLI: whatever the bytes, `mncompile check` exits 0
or 2, never with an exception, and a refusal names the file first.

Three sources of input: arbitrary text and bytes, soups of the language's own tokens (which
get much deeper into the grammar than random text does), and mutations of the valid
examples (deleted, duplicated, swapped tokens, numbers turned to 0, even, huge, junk
inserted). Accepted mutants must also survive `fmt` unchanged in meaning.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mncompile.api import loads
from mncompile.cli import main
from mncompile.fmt import format_ensemble
from mncompile.ir import strip_spans
from mncompile.parse import parse_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "examples").glob("*.mnet"))}

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def run_check(workdir: Path, data: bytes, name: str = "fuzz.mnet") -> tuple[int, str, str]:
    """`mncompile check` in-process on `data`; any exception other than SystemExit escapes."""
    spec = workdir / name
    spec.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["check", str(spec)])
    return rc, out.getvalue(), err.getvalue()


def assert_clean_outcome(workdir: Path, data: bytes) -> int:
    rc, out, err = run_check(workdir, data)
    spec = workdir / "fuzz.mnet"
    assert rc in (0, 2), (rc, data, err)
    assert "Traceback" not in err
    if rc == 2:
        assert out == ""
        assert err.startswith(f"{spec}:"), err
        assert ": error: " in err.split("\n")[0]
        assert "\n  = help: " in err  # every refusal says what would be valid
    else:
        assert "is valid" in out
        if err:
            # a valid spec may hatch inexactly: each warning and its help line, then one note
            *pairs, note = err.rstrip("\n").split("\n")
            assert note.startswith("note: ") and pairs and len(pairs) % 2 == 0, err
            for warning, hint in zip(pairs[::2], pairs[1::2], strict=True):
                assert warning.startswith(f"{spec}") and ": warning: member '" in warning, err
                assert hint.startswith("  = help: "), err
    return rc


# --- arbitrary input -------------------------------------------------------------------------


@FUZZ
@given(st.text())
def test_random_text(workdir: Path, text: str) -> None:
    assert_clean_outcome(workdir, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(workdir: Path, data: bytes) -> None:
    assert_clean_outcome(workdir, data)


# --- soups of the language's tokens ---------------------------------------------------------

KEYWORDS = ["ensemble", "input", "classes", "data", "train", "net", "stem", "block", "dense",
            "plain", "residual", "mlp", "x"]
NAMES = ["e", "a", "b", "net1", "class", "None", "cifar10", "mnist1d", "lr", "batch", "schedule",
         "cosine", "step", "momentum", "seed", "x3", "_", "inptu"]
NUMBERS = ["0", "1", "2", "3", "4", "10", "64", "3x32x32", "1x40", "3:64", "4:8", "3:16 x3",
           "1.5", "5e-4", "1e999", ".5", "99999999999", "9" * 40, "-1", "0x10"]
PUNCT = ["{", "}", ";", ":", "{", "}", "#", "=", ",", "-", ".", "\x00", "é"]
TOKEN = st.sampled_from(KEYWORDS + NAMES + NUMBERS + PUNCT)
SEP = st.sampled_from([" ", " ", "\n", "", "\t", "\r\n"])


@st.composite
def soups(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(TOKEN, max_size=40))
    head = draw(st.sampled_from(["", "ensemble e {", "ensemble e { input 3x32x32 classes 10 "]))
    tail = draw(st.sampled_from(["", "}", "} }"]))
    parts = [head]
    for tok in tokens:
        parts.append(draw(SEP))
        parts.append(tok)
    parts.append(" " + tail)
    return "".join(parts)


@FUZZ
@given(soups())
def test_token_soups(workdir: Path, text: str) -> None:
    assert_clean_outcome(workdir, text.encode("utf-8"))


# --- mutations of the valid examples ----------------------------------------------------------

TOKEN_RE = re.compile(r"#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\S")
JUNK = ["{", "}", ";", ":", "x", "x2", "0", "-", "block", "stem", "dense", "net", "class", "1.5",
        "99999999999", "3:0", "4:8", "\n", "@", "data", "input 2"]


NUMBER_SWAPS = ["0", "1", "2", "4", "6", "64", "2147483647", "2147483648", "99999999999", "1.5", "1e3"]


@st.composite
def line_mutants(draw: st.DrawFn) -> str:
    """Whole lines deleted, duplicated, swapped or renumbered: mostly still parseable, so these
    reach the checker's rules (duplicates, part order, widths, pooling) rather than the parser."""
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    lines = [ln for ln in EXAMPLES[name].split("\n") if not ln.lstrip().startswith("#")]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "number"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            numbers = list(re.finditer(r"[0-9]+", lines[i]))
            if numbers:
                m = draw(st.sampled_from(numbers))
                lines[i] = lines[i][: m.start()] + draw(st.sampled_from(NUMBER_SWAPS)) + lines[i][m.end():]
    return "\n".join(lines)


@st.composite
def token_mutants(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    tokens = [m.group() for m in TOKEN_RE.finditer(EXAMPLES[name]) if not m.group().startswith("#")]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "insert"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "number":
            numbers = [k for k, t in enumerate(tokens) if t[0].isdigit()]
            k = draw(st.sampled_from(numbers))
            tokens[k] = draw(st.sampled_from(NUMBER_SWAPS))
        else:
            tokens.insert(i, draw(st.sampled_from(JUNK)))
        if not tokens:
            break
    # tokens are re-joined with spaces: '3 : 64' and '3:64' mean the same
    return " ".join(tokens)


mutants = st.one_of(line_mutants(), token_mutants())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants)
def test_mutated_examples(workdir: Path, text: str) -> None:
    rc = assert_clean_outcome(workdir, text.encode("utf-8"))
    if rc == 0:
        # an accepted mutant is a real spec: its canonical form means the same
        e = loads(text)
        again = parse_text(format_ensemble(e))
        assert strip_spans(again) == strip_spans(e)


def test_unmutated_examples_pass(workdir: Path) -> None:
    """The mutation base itself is valid once re-joined with spaces (else every mutant fails)."""
    for name, text in EXAMPLES.items():
        tokens = [m.group() for m in TOKEN_RE.finditer(text) if not m.group().startswith("#")]
        assert assert_clean_outcome(workdir, " ".join(tokens).encode()) == 0, name


# --- pathological sizes: refused or handled, quickly ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # the largest sizes the language takes: pure arithmetic, no allocation
        "ensemble e { input 3x2147483647x2147483647 classes 2147483647 net a plain { "
        + "block { 31:2147483647 } " * 30 + "dense 2147483647 } }",
        # 10 000 layers in one net, the most a net may have (the ensemble-wide bound of
        # 100 000 costs ten times this; about 4 s on a 2-core machine)
        "ensemble e { input 3x32x32 classes 10 net n0 residual { stem 3:16 block { 3:16 x9999 } } }",
        # past those limits: refused before anything is expanded
        "ensemble e { input 3x32x32 classes 10 net a plain { block { 3:16 x2147483647 } } }",
        "ensemble e { input 3x32x32 classes 10 net a plain { block { 3:" + "9" * 100000 + " } } }",
        "ensemble e { input 3x32x32 classes 10 train { seed " + "9" * 100000 + " } "
        "net a plain { block { 3:16 } } }",
        "ensemble e { input 3x32x32 classes 10 "
        + "".join(f"net n{i} plain {{ block {{ 3:16 x10000 }} }} " for i in range(11)) + "}",
    ],
    ids=["max_sizes", "max_layers", "huge_repeat", "huge_filters", "huge_seed", "too_many_layers"],
)
def test_pathological_sizes_are_quick(workdir: Path, text: str) -> None:
    start = time.perf_counter()
    assert_clean_outcome(workdir, text.encode())
    assert time.perf_counter() - start < 10.0


# --- the installed console script ---------------------------------------------------------------


def _console_script() -> Path:
    script = Path(sysconfig.get_path("scripts")) / "mncompile"
    if not script.exists():
        script = Path(sys.executable).parent / "mncompile"
    if not script.exists():
        pytest.skip("the mncompile console script is not installed")
    return script


@pytest.mark.parametrize(
    ("text", "rc", "first"),
    [
        (EXAMPLES["mlp.mnet"], 0, "is valid"),
        ("ensemble e {\n  input 3x32x32\n  classes 10\n  net a plain { block { 4:8 } }\n}\n", 2,
         ":4:25: error: kernel sizes must be odd"),
        ("ensemble e {\n  input 40\n  classes 10\n  net a mlp { dense 8 \n", 2,
         ":4:22: error: unexpected end of file"),
    ],
    ids=["valid", "even_kernel", "eof"],
)
def test_console_script(tmp_path: Path, text: str, rc: int, first: str) -> None:
    spec = tmp_path / "s.mnet"
    spec.write_text(text, encoding="utf-8")
    proc = subprocess.run([str(_console_script()), "check", str(spec)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stderr
    if rc == 0:
        assert first in proc.stdout and proc.stderr == ""
    else:
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"{spec}{first}")
        assert "^" in proc.stderr and "= help:" in proc.stderr
