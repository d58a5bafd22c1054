"""The library entry points that the CLI and the tests call.

>>> from mncompile.api import load
>>> e = load("examples/mlp.mnet")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.parse import parse_file, parse_text
from mncompile.passes.check import check_ensemble


def load(path: str | Path) -> Ensemble:
    """Parse and check a `.mnet` file; raises `MNError` (with file, line and caret) on bad input."""
    e = parse_file(path)
    try:
        return check_ensemble(e)
    except MNError as err:
        raise err.with_source(str(path), Path(path).read_text(encoding="utf-8")) from None


def loads(text: str, source: str = "<string>") -> Ensemble:
    """Parse and check spec text."""
    e = parse_text(text, source=source)
    try:
        return check_ensemble(e)
    except MNError as err:
        raise err.with_source(source, text) from None
