"""A corpus of malformed specs: every error the language contract lists, with its position.

Each case is (id, spec text, a distinctive piece of the message, line, column). Every case
is run twice: through the library (`mncompile.api.loads`), where the span, message and hint
are asserted, and through the real CLI entry point (`mncompile.cli.main`), where the exit
status, the `file:line:col:` prefix, the quoted source line and its caret are asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mncompile.api import loads
from mncompile.cli import main
from mncompile.diagnostics import MNError

# an ensemble header whose items end on line 3: the line under test is line 4 or later
H = "ensemble e {\n  input 3x32x32\n  classes 10\n"
# a valid conv net to keep ensembles otherwise complete
NET = "  net ok plain { block { 3:16 } }\n"

CASES: list[tuple[str, str, str, int, int]] = [
    # --- syntax errors ------------------------------------------------------------------
    ("missing_close_brace", H + "  net a plain {\n    block { 3:64 }\n}\n",
     "is never closed", 6, 2),
    ("missing_open_brace", "ensemble e\n  input 40\n  classes 10\n}\n", "unexpected 'input'", 2, 3),
    ("extra_close_brace", H + "  net a plain { block { 3:64 } } }\n  net b plain { block { 3:64 } }\n}\n",
     "after the end of the ensemble", 5, 3),
    ("stray_character", H + NET + "  @\n}\n", "unexpected character '@'", 5, 3),
    ("stray_token", H + "  net a plain { block { 3:64 } 64 }\n}\n", "unexpected '64'", 4, 32),
    ("double_colon", H + "  net a plain {\n    block { 3::64 }\n  }\n}\n", "unexpected ':'", 5, 15),
    ("fractional_classes", "ensemble e {\n  input 40\n  classes 1.5\n}\n",
     "'1.5' is not a whole number", 3, 11),
    ("fractional_kernel", H + "  net a plain { block { 3.0:64 } }\n}\n",
     "'3.0' is not a whole number", 4, 25),
    ("number_with_suffix", H + "  net a plain {\n    block { 3:64k }\n  }\n}\n",
     "'64k' is not a whole number", 5, 15),
    ("bad_setting_number", H + "  train {\n    lr 0.1.2\n  }\n" + NET + "}\n",
     "'0.1.2' is not a number", 5, 8),
    ("eof_after_name", "ensemble e", "unexpected end of file", 1, 11),
    ("eof_inside_train", "ensemble e {\n  train {\n    lr 0.1\n", "line 2, column 9 is never closed", 3, 11),
    ("empty_file", "", "the file is empty", 1, 1),
    ("only_comments", "# nothing\n# here\n", "the file is empty", 2, 7),
    ("second_ensemble_after", H + NET + "}\nensemble f {\n}\n", "after the end of the ensemble", 6, 1),
    ("junk_after_semicolon", H + NET + "};\nnet b mlp { }\n", "after the end of the ensemble", 6, 1),
    ("nested_ensemble", H + NET + "  ensemble f { }\n}\n", "a second 'ensemble'", 5, 3),
    ("too_many_dims", "ensemble e {\n  input 3x32x32x3\n  classes 10\n}\n",
     "at most three dimensions", 2, 16),
    ("two_repeats", H + "  net a plain {\n    block { 3:64 x2x3 }\n  }\n}\n", "one repeat count", 5, 20),
    ("empty_block", H + "  net a plain {\n    block { }\n  }\n}\n", "at least one layer", 5, 13),
    ("empty_dense", H + "  net a plain {\n    block { 3:8 }\n    dense\n  }\n}\n",
     "at least one width", 7, 3),
    ("equals_in_train", H + "  train {\n    lr = 0.1\n  }\n" + NET + "}\n", "unexpected '='", 5, 8),
    ("comma_in_dense", H + "  net a mlp {\n    dense 512, 256\n  }\n}\n", "unexpected ','", 5, 14),
    ("quoted_data", H + "  data \"cifar10\"\n" + NET + "}\n", "unexpected quote", 4, 8),
    ("setting_without_value", H + "  train {\n    lr\n  }\n" + NET + "}\n", "'lr' has no value", 5, 5),
    ("missing_net_name", H + "  net plain {\n  }\n}\n", "unknown family '{'", 4, 13),
    ("data_number", H + "  data 10\n" + NET + "}\n", "takes a dataset name", 4, 8),
    # --- unknown keys ---------------------------------------------------------------------
    ("unknown_item", H + "  optimizer sgd\n" + NET + "}\n", "unknown item 'optimizer'", 4, 3),
    ("misspelt_item", "ensemble e {\n  input 40\n  clases 10\n}\n", "unknown item 'clases'", 3, 3),
    ("unknown_part", H + "  net a plain {\n    blok { 3:64 }\n  }\n}\n", "unknown part 'blok'", 5, 5),
    ("net_inside_net", H + "  net a plain {\n    block { 3:4 }\n  net b plain { block { 3:4 } }\n}\n",
     "is the '}' that closes net 'a' missing?", 6, 3),
    ("unknown_family", H + "  net a vgg {\n    block { 3:64 }\n  }\n}\n", "unknown family 'vgg'", 4, 9),
    ("unknown_train_key", H + "  train {\n    batch 64\n    lrate 0.1\n  }\n" + NET + "}\n",
     "unknown training setting 'lrate'", 6, 5),
    ("misspelt_train_key", H + "  train {\n    momentun 0.9\n  }\n" + NET + "}\n",
     "unknown training setting 'momentun'", 5, 5),
    # --- duplicates -----------------------------------------------------------------------
    ("duplicate_input", H + "  input 3x32x32\n" + NET + "}\n", "'input' is given twice", 4, 3),
    ("duplicate_classes", H + NET + "  classes 10\n}\n", "'classes' is given twice", 5, 3),
    ("duplicate_data", H + "  data cifar10\n  data cifar10\n" + NET + "}\n", "'data' is given twice", 5, 3),
    ("duplicate_train", H + "  train { lr 0.1 }\n  train { batch 64 }\n" + NET + "}\n",
     "'train' is given twice", 5, 3),
    ("duplicate_train_key", H + "  train {\n    lr 0.1\n    lr 0.2\n  }\n" + NET + "}\n",
     "'lr' is given twice", 6, 5),
    ("duplicate_net", H + NET + "  net ok plain { block { 3:32 } }\n}\n", "net 'ok' is defined twice", 5, 7),
    # --- invalid names --------------------------------------------------------------------
    ("keyword_net_class", H + "  net class plain { block { 3:64 } }\n}\n", "'class' cannot be used", 4, 7),
    ("keyword_net_None", H + NET + "  net None plain { block { 3:64 } }\n}\n", "'None' cannot be used", 5, 7),
    ("keyword_ensemble", "# a comment first\nensemble def {\n  input 40\n  classes 10\n"
     "  net a mlp { dense 8 }\n}\n", "'def' cannot be used as an ensemble name", 2, 10),
    ("dash_in_name", H + "  net vgg-16 plain { block { 3:64 } }\n}\n", "'-' cannot appear in a name", 4, 10),
    ("name_starts_with_digit", H + "  net 16vgg plain { block { 3:64 } }\n}\n", "expected a name", 4, 7),
    ("non_ascii_name", H + "  net café plain { block { 3:64 } }\n}\n", "unexpected character 'é'", 4, 10),
    # --- zero, negative and too large sizes ---------------------------------------------
    ("kernel_zero", H + "  net a plain {\n    block { 0:64 }\n  }\n}\n",
     "kernel size must be a positive", 5, 13),
    ("filters_zero", H + "  net a plain {\n    block { 3:64 3:0 }\n  }\n}\n",
     "filter count must be a positive", 5, 18),
    ("dense_zero", H + "  net a plain {\n    block { 3:64 }\n    dense 512 0\n  }\n}\n",
     "dense width must be a positive", 6, 15),
    ("input_dim_zero", "ensemble e {\n  classes 10\n  input 3x0x32\n}\n",
     "input dimension must be a positive", 3, 11),
    ("repeat_zero", H + "  net a plain {\n    block { 3:64 x0 }\n  }\n}\n", "at least 1, got x0", 5, 18),
    ("classes_zero", "ensemble e {\n  input 40\n  classes 0\n  net a mlp { dense 8 }\n}\n",
     "'classes' must be at least 2", 3, 11),
    ("classes_one", "ensemble e {\n  input 40\n  classes 1\n  net a mlp { dense 8 }\n}\n",
     "'classes' must be at least 2, got 1", 3, 11),
    ("negative_filters", H + "  net a plain {\n    block { 3:-64 }\n  }\n}\n", "negative numbers", 5, 15),
    ("negative_dense", H + "  net a plain {\n    block { 3:64 }\n    dense -5\n  }\n}\n",
     "negative numbers", 6, 11),
    ("negative_classes", "ensemble e {\n  input 40\n  classes -3\n}\n", "negative numbers", 3, 11),
    ("huge_filters", H + "  net a plain {\n    block { 3:99999999999 }\n  }\n}\n",
     "filter count 99999999999 is too large", 5, 15),
    ("huge_input", "ensemble e {\n  input 3x" + "9" * 5000 + "\n}\n", "input dimension", 2, 11),
    ("huge_repeat", H + "  net a residual {\n    stem 3:16\n    block { 3:16 x2000000000 }\n  }\n}\n",
     "deeper than 10000 layers", 6, 18),
    ("too_many_layers", H + "".join(f"  net n{i} plain {{ block {{ 3:8 x10000 }} }}\n" for i in range(11))
     + "}\n", "more than 100000 layers in all its nets", 14, 27),
    ("even_kernel", H + "  net a plain {\n    block { 3:64 4:64 }\n  }\n}\n",
     "kernel sizes must be odd, got 4", 5, 18),
    ("even_stem_kernel", H + "  net a residual {\n    stem 2:16\n    block { 3:16 }\n  }\n}\n",
     "kernel sizes must be odd, got 2 in the stem", 5, 10),
    # --- family / part mismatches -------------------------------------------------------
    ("block_in_mlp", H + "  net a mlp {\n    block { 3:64 }\n    dense 10\n  }\n}\n",
     "'block' is not allowed in an mlp", 5, 5),
    ("stem_in_mlp", H + "  net a mlp {\n    stem 3:16\n    dense 10\n  }\n}\n",
     "'stem' is not allowed in an mlp", 5, 5),
    ("stem_in_plain", H + "  net a plain {\n    stem 3:16\n    block { 3:16 }\n  }\n}\n",
     "'stem' is not used by plain nets", 5, 5),
    ("residual_without_stem", H + "  net res residual {\n    block { 3:16 }\n  }\n}\n",
     "needs a 'stem'", 4, 7),
    ("dense_without_stem", H + NET + "  net dn dense {\n    block { 3:12 x4 }\n  }\n}\n",
     "needs a 'stem'", 5, 7),
    ("conv_on_flat_input", "ensemble e {\n  input 40\n  classes 10\n  net a plain { block { 3:16 } }\n}\n",
     "needs an image or sequence input", 4, 9),
    ("plain_without_blocks", H + "  net a plain {\n    dense 10\n  }\n}\n", "at least one block", 4, 7),
    ("stem_after_block", H + "  net a residual {\n    block { 3:16 }\n    stem 3:16\n  }\n}\n",
     "'stem' must come before", 6, 5),
    ("head_before_block", H + "  net a plain {\n    dense 128\n    block { 3:16 }\n  }\n}\n",
     "'block' after the dense head", 6, 5),
    ("two_stems", H + "  net a dense {\n    stem 3:16\n    stem 3:16\n    block { 3:12 }\n  }\n}\n",
     "second 'stem'", 6, 5),
    ("two_heads", H + "  net a plain {\n    block { 3:16 }\n    dense 64\n    dense 32\n  }\n}\n",
     "second dense head", 7, 5),
    ("stem_with_repeat", H + "  net a residual {\n    stem 3:16 x2\n    block { 3:16 }\n  }\n}\n",
     "takes no repeat", 5, 10),
    ("residual_widths", H + "  net a residual {\n    stem 3:16\n    block { 3:16 3:16 3:32 }\n  }\n}\n",
     "must have the same width", 6, 23),
    # --- pooling that shrinks the input below 1 -------------------------------------------
    ("pool_plain_2d", "ensemble e {\n  input 3x8x8\n  classes 10\n  net a plain {\n"
     "    block { 3:8 }\n    block { 3:8 }\n    block { 3:8 }\n    block { 3:8 }\n  }\n}\n",
     "pooling shrinks the input below 1: block 4", 8, 5),
    ("pool_plain_1d", "ensemble e {\n  input 1x4\n  classes 10\n  net a plain {\n"
     "    block { 3:8 } block { 3:8 } block { 3:8 }\n  }\n}\n", "block 3 of net 'a' gets 1", 5, 33),
    ("pool_dense_2d", "ensemble e {\n  input 3x4x4\n  classes 10\n  net a dense {\n    stem 3:8\n"
     "    block { 3:4 }\n    block { 3:4 }\n    block { 3:4 }\n    block { 3:4 }\n  }\n}\n",
     "transition's 2x average pool", 8, 5),
    ("pool_dense_1d", "ensemble e {\n  input 2x3\n  classes 10\n  net a dense {\n    stem 3:8\n"
     "    block { 3:4 }\n    block { 3:4 }\n    block { 3:4 }\n  }\n}\n", "block 2 of net 'a' gets 1", 7, 5),
    # --- dataset ------------------------------------------------------------------------------
    ("unknown_dataset", H + "  data cifar11\n" + NET + "}\n", "unknown dataset 'cifar11'", 4, 3),
    ("dataset_shape", H + "  data mnist1d\n" + NET + "}\n", "dataset 'mnist1d' has inputs of shape", 4, 3),
    ("dataset_classes", H + "  data cifar100\n" + NET + "}\n", "has 100 classes", 4, 3),
    # --- training settings ---------------------------------------------------------------------
    ("unknown_schedule", H + "  train {\n    schedule step\n  }\n" + NET + "}\n",
     "unknown schedule 'step'", 5, 14),
    ("numeric_schedule", H + "  train {\n    schedule 1\n  }\n" + NET + "}\n", "unknown schedule 1", 5, 14),
    ("fractional_batch", H + "  train {\n    batch 1.5\n  }\n" + NET + "}\n",
     "'batch' takes a whole number", 5, 11),
    ("word_batch", H + "  train {\n    batch big\n  }\n" + NET + "}\n", "'batch' takes a number", 5, 11),
    ("zero_batch", H + "  train {\n    batch 0\n  }\n" + NET + "}\n", "'batch' must be at least 1", 5, 11),
    ("momentum_one", H + "  train {\n    momentum 1\n  }\n" + NET + "}\n",
     "'momentum' must be below 1", 5, 14),
    ("momentum_above_one", H + "  train {\n    momentum 1.5\n  }\n" + NET + "}\n", "must be below 1", 5, 14),
    ("negative_lr", H + "  train {\n    lr -0.1\n  }\n" + NET + "}\n", "negative numbers", 5, 8),
    ("zero_lr", H + "  train {\n    hatched_lr 0\n  }\n" + NET + "}\n",
     "'hatched_lr' must be positive", 5, 16),
    ("infinite_lr", H + "  train {\n    lr 1e999\n  }\n" + NET + "}\n", "must be a finite number", 5, 8),
    ("zero_patience", H + "  train {\n    patience 0\n  }\n" + NET + "}\n",
     "'patience' must be at least 1", 5, 14),
    ("huge_seed", H + "  train {\n    seed 99999999999\n  }\n" + NET + "}\n",
     "'seed' must be at most", 5, 10),
    ("fractional_epochs", H + "  train {\n    max_epochs 2.5\n  }\n" + NET + "}\n",
     "takes a whole number", 5, 16),
    # --- missing items ---------------------------------------------------------------------------
    ("missing_input", "ensemble e {\n  classes 10\n  net a mlp { dense 8 }\n}\n", "has no 'input'", 1, 1),
    ("missing_classes", "ensemble e {\n  input 40\n  net a mlp { dense 8 }\n}\n", "has no 'classes'", 1, 1),
    ("no_nets", "ensemble e {\n  input 40\n  classes 10\n}\n", "has no nets", 1, 1),
    # --- layout: tabs and CRLF line endings keep columns honest -----------------------------------
    ("tab_indented",
     "ensemble e {\n\tinput 3x32x32\n\tclasses 10\n\tnet a plain {\n\t\tblock { 4:8 }\n\t}\n}\n",
     "kernel sizes must be odd", 5, 11),
    ("crlf_lines",
     "ensemble e {\r\n  input 3x32x32\r\n  classes 10\r\n  net a plain { block { 3:0 } }\r\n}\r\n",
     "filter count must be a positive", 4, 25),
]

IDS = [c[0] for c in CASES]


def test_corpus_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 45
    assert len(set(IDS)) == len(IDS)


def _source_line(text: str, line: int) -> str:
    return text.split("\n")[line - 1].rstrip("\r").expandtabs(1)


@pytest.mark.parametrize(("name", "text", "message", "line", "column"), CASES, ids=IDS)
def test_error_through_the_library(name: str, text: str, message: str, line: int, column: int) -> None:
    with pytest.raises(MNError) as info:
        loads(text, "spec.mnet")
    err = info.value
    assert message in err.message, err
    assert err.span is not None
    assert (err.span.line, err.span.column) == (line, column), str(err)
    assert err.hint, f"no hint saying what would be valid:\n{err}"
    shown = str(err).split("\n")
    assert shown[0].startswith(f"spec.mnet:{line}:{column}: error: ")
    # the quoted source line (a window of it when long), then the caret under the reported column
    src = _source_line(text, line)
    quoted = shown[1].split(" | ", 1)[1]
    caret = shown[2].split(" | ", 1)[1]
    assert shown[1].startswith(f" {line} | ")
    if len(src) <= 160:
        assert quoted == src
        assert caret.startswith(" " * (column - 1) + "^")
    else:
        assert len(quoted) <= 166
    assert set(caret.strip()) == {"^"}
    at = len(caret) - len(caret.lstrip(" "))
    assert quoted[at:].startswith(src[column - 1 : column + 4]) or column > len(src)
    assert shown[-1].startswith("  = help: ")


@pytest.mark.parametrize(("name", "text", "message", "line", "column"), CASES, ids=IDS)
def test_error_through_the_cli(
    name: str, text: str, message: str, line: int, column: int, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = tmp_path / "spec.mnet"
    spec.write_bytes(text.encode("utf-8"))
    assert main(["check", str(spec)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # nothing is printed (or written) for a bad spec
    assert err.startswith(f"{spec}:{line}:{column}: error: ")
    assert message in err
    assert "\n " in err and "^" in err.split("\n")[2]
    assert "Traceback" not in err
    assert "= help: " in err


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_long_lines_are_quoted_as_a_window() -> None:
    widths = "8 " * 300 + "0 " + "8 " * 300
    text = "ensemble e {\n  input 40\n  classes 10\n  net a mlp { dense " + widths + "}\n}\n"
    with pytest.raises(MNError) as info:
        loads(text, "long.mnet")
    _, quoted, caret, _ = str(info.value).split("\n")
    assert quoted.startswith(" 4 | ...") and quoted.endswith("...") and len(quoted) < 180
    at = caret.index("^")
    assert quoted[at - 2 : at + 3] == "8 0 8" and caret.split(" | ", 1)[1].strip() == "^"


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nope.mnet"
    rc, out, err = _run(["check", str(path)], capsys)
    assert rc == 2 and out == ""
    assert err.startswith(f"{path}: error: no such file")
    assert "= help: " in err and "Traceback" not in err


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(["check", str(tmp_path)], capsys)
    assert rc == 2
    assert err.startswith(f"{tmp_path}: error: ") and "directory" in err


def test_non_utf8_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "latin1.mnet"
    spec.write_bytes("ensemble e {\n  input 40\n  classes 10 # café\n}\n".encode("latin-1"))
    rc, _, err = _run(["check", str(spec)], capsys)
    assert rc == 2
    assert err.startswith(f"{spec}:3:19: error: the file is not UTF-8 text: byte 0xe9")
    assert "^" in err and "= help: " in err and "Traceback" not in err


def test_nul_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "nul.mnet"
    spec.write_bytes(b"ensemble e {\n  input 40\n  classes 10\x00\n}\n")
    rc, _, err = _run(["check", str(spec)], capsys)
    assert rc == 2
    assert err.startswith(f"{spec}:3:13: error: unexpected NUL byte")
    assert "= help: " in err and "Traceback" not in err


def test_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bom.mnet"
    spec.write_bytes(b"\xef\xbb\xbfensemble e { input 40 classes 10 net a mlp { dense 8 } }\n")
    rc, out, _ = _run(["check", str(spec)], capsys)
    assert rc == 0 and "is valid" in out


def test_errors_do_not_write_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fmt -w` on a bad spec leaves it byte for byte as it was."""
    spec = tmp_path / "bad.mnet"
    text = H + "  net a plain { block { 4:8 } }\n}\n"
    spec.write_text(text)
    rc, out, err = _run(["fmt", "-w", str(spec)], capsys)
    assert rc == 2 and out == ""
    assert spec.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mnet"]
