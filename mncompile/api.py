"""The library entry points that the CLI and the tests call: loading a spec.

`load` and `loads` parse and check a spec, keeping its text so that errors quote it; the
passes after that, in order, are `mncompile.compiler.PIPELINE` (`compile_ensemble`), whose
first pass repeats the check on the IR it is given.

>>> from mncompile.api import load
>>> e = load("examples/mlp.mnet")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble
from mncompile.parse import parse_text, read_spec
from mncompile.passes.check import MAX_NET_PARAMS, check_ensemble
from mncompile.quiet_gc import paused_gc


def load(path: str | Path, max_params: int | None = MAX_NET_PARAMS) -> Ensemble:
    """Parse and check a `.mnet` file; raises `MNError` (with file, line and caret) on bad input.

    `max_params`: the most trainable parameters a net may have (the ensemble: ten times that);
    None lifts the limits (`--max-params none`).
    """
    # read once: a pipe or FIFO cannot be read again to quote the offending line
    text = read_spec(path)
    with paused_gc():
        e = parse_text(text, source=Path(path).name, display=str(path))
        try:
            return check_ensemble(e, max_params)
        except MNError as err:
            raise err.with_source(str(path), text) from None


def loads(text: str, source: str = "<string>", max_params: int | None = MAX_NET_PARAMS) -> Ensemble:
    """Parse and check spec text (`max_params` as in `load`)."""
    with paused_gc():
        e = parse_text(text, source=source)
        try:
            return check_ensemble(e, max_params)
        except MNError as err:
            raise err.with_source(source, text) from None
