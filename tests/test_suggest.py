"""One "did you mean" rule for the parser and the checks (mncompile.suggest), with its hints pinned."""

from __future__ import annotations

import pytest

from mncompile import parse
from mncompile.api import loads
from mncompile.diagnostics import MNError
from mncompile.passes import check
from mncompile.suggest import suggest

H = "ensemble e {\n  input 3x32x32\n  classes 10\n"
NET = "  net ok plain { block { 3:16 } }\n"
ITEMS = "an ensemble holds input, classes, data, train { ... } and net NAME FAMILY { ... }"
PARTS = "a net holds stem K:F, block { K:F ... } and dense W ..."
DATASETS = ("known datasets: mnist1d, digits, cifar10, cifar100, svhn, synthetic "
            "(other data: train.py --data npz:PATH)")

# (spec text, message, hint): the parser's and the checks' hints, as they read before and after
# the two helpers became one
HINTS = [
    ("ensemble e {\n  input 40\n  clases 10\n}\n", "unknown item 'clases' in the ensemble",
     f"did you mean 'classes'? {ITEMS}"),
    ("ensemble e { input 40 classes 10 ne a mlp { dense 4 } }\n", "unknown item 'ne' in the ensemble",
     f"did you mean 'net'? {ITEMS}"),
    (H + "  net a plain {\n    blok { 3:64 }\n  }\n}\n", "unknown part 'blok' in a net",
     f"did you mean 'block'? {PARTS}"),
    ("ensemble e {\n  input 40\n  classes 10\n  net a mlp { dense 4 x2 }\n}\n", "unknown part 'x2' in a net",
     PARTS),
    (H + "  net a plian {\n    block { 3:64 }\n  }\n}\n", "unknown family 'plian'",
     "did you mean 'plain'? a net's family is one of: plain, residual, dense, mlp"),
    (H + "  net plain {\n  }\n}\n", "unknown family '{'",
     "a net's family is one of: plain, residual, dense, mlp"),
    ("ensembl e {\n  input 40\n  classes 10\n}\n", "unexpected 'ensembl'",
     "did you mean 'ensemble'? (expected 'ensemble')"),
    (H + "  train {\n    momentun 0.9\n  }\n" + NET + "}\n", "unknown training setting 'momentun'",
     "did you mean 'momentum'? valid keys: batch, lr, hatched_lr, momentum, weight_decay, patience, "
     "max_epochs, hatched_max_epochs, noise, schedule, seed"),
    (H + "  data cifar01\n" + NET + "}\n", "unknown dataset 'cifar01'",
     f"did you mean 'cifar10'? {DATASETS}"),
    (H + "  data imagenet\n" + NET + "}\n", "unknown dataset 'imagenet'", DATASETS),
]


@pytest.mark.parametrize(("text", "message", "hint"), HINTS, ids=[m for _, m, _ in HINTS])
def test_hints_are_pinned(text: str, message: str, hint: str) -> None:
    with pytest.raises(MNError) as info:
        loads(text)
    assert (info.value.message, info.value.hint) == (message, hint)


def test_the_rule_allows_a_third_of_the_option_rounded_up_from_two_thirds() -> None:
    assert suggest("inptu", ["input"]) == "input"  # 2 edits of 5
    assert suggest("inpxyz", ["input"]) is None  # 3 edits
    assert suggest("nt", ["net"]) == "net" and suggest("n", ["net"]) is None  # 1 is always allowed
    assert suggest("lr", ["lr", "hatched_lr"]) == "lr"
    assert suggest("ab", ["ac", "aa"]) == "aa"  # ties: the first in sort order
    assert suggest("anything", []) is None


def test_words_only_refuses_what_is_not_a_word() -> None:
    assert suggest("{", ["x"]) == "x"
    assert suggest("{", ["x"], words_only=True) is None
    assert suggest("3x", ["x"], words_only=True) is None and suggest("x_", ["x"], words_only=True) == "x"


def test_parser_and_checks_share_the_one_helper() -> None:
    assert check.suggest is suggest and parse.suggest is suggest
    assert not hasattr(parse, "_close_word")
