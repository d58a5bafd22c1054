"""Every example and the contract's own example parse, check and format round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from mncompile.api import load, loads
from mncompile.fmt import format_ensemble
from mncompile.ir import Ensemble, strip_spans
from mncompile.parse import parse_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.mnet"))
CONTRACT = ROOT.parent / "shared" / "spec" / "mnet-language.md"


def test_all_requested_examples_exist() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"v5", "d5", "r10", "v25", "wrn6", "mnist1d", "digits", "mlp"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_checks_and_round_trips(path: Path) -> None:
    e = load(path)
    assert e.nets
    again = parse_text(format_ensemble(e))
    assert strip_spans(again) == strip_spans(e)
    assert Ensemble.model_validate_json(e.model_dump_json()) == e


def test_contract_example_means_what_it_says() -> None:
    if not CONTRACT.exists():
        pytest.skip("the language contract is not beside this checkout")
    text = CONTRACT.read_text().split("```")[1]
    e = loads(text, "v3.mnet")
    assert e.input == (3, 32, 32) and e.classes == 10 and e.data == "cifar10"
    cfg = e.config
    assert (cfg.batch, cfg.lr, cfg.weight_decay, cfg.schedule) == (256, 0.1, 5e-4, "cosine")
    vgg11 = e.net("vgg11")
    assert [len(b.layers) for b in vgg11.blocks] == [1, 1, 2, 2, 2]
    assert vgg11.blocks[2].layers[1].filters == 256
    assert e.net("vgg13_wide").widths == (512, 512)
    assert e.net("vgg11_c").blocks[2].layers[1].kernel == 1


def test_semicolons_and_spaced_repeats() -> None:
    a = loads("ensemble e { input 3x8x8; classes 10; train { lr 0.1; batch 64 };"
              " net r residual { stem 3:16; block { 3:16 x 3 }; }; }")
    b = loads("ensemble e {\n input 3 x 8 x 8\n classes 10\n train { batch 64 lr 1e-1 }\n"
              " net r residual { stem 3:16 block { 3:16 3:16 3:16 } }\n}")
    assert strip_spans(a) == strip_spans(b)


def test_readme_spec_is_valid() -> None:
    text = (ROOT / "README.md").read_text()
    block = next(b for b in text.split("```") if b.lstrip().startswith("ensemble"))
    e = loads(block, "README.md")
    assert [n.family for n in e.nets] == ["plain", "residual", "dense", "mlp"]
