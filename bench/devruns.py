"""What the development benches (stop_rule.py, shared_loss.py, recipe.py) share: compile a spec
into a folder, run the pipeline on it quietly, start a run from another run's trained MotherNets,
and print mean +- std over seeds.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mncompile.api import load  # noqa: E402
from mncompile.compiler import compile_ensemble  # noqa: E402
from mncompile.ir import Ensemble  # noqa: E402
from mncompile.runtime.pipeline import build_parser, execute  # noqa: E402
from mncompile.writer import write_folder  # noqa: E402


def compile_spec(root: Path, spec_path: str) -> tuple[Ensemble, Path, dict[str, Any]]:
    """The spec, its generated folder under `root/code`, and the defaults train.py would pass."""
    e = load(spec_path)
    folder = root / "code" / e.name
    write_folder(folder, compile_ensemble(e, source_name=Path(spec_path).name).files, force=True)
    return e, folder, {"ensemble": e.name, "data": e.data, "train": e.config.model_dump()}


def run(folder: Path, defaults: dict[str, Any], argv: Sequence[str], *,
        quiet_errors: bool = True) -> dict[str, Any]:
    """One pipeline run of train.py's options `argv`, its output (and notes) swallowed; its results.json."""
    args = build_parser(defaults).parse_args(list(argv))
    err = io.StringIO() if quiet_errors else sys.stderr
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        return execute(folder, defaults, args)


def from_mothernets(base: Path | None, out: Path, method: str) -> list[str]:
    """Start `out` from the trained MotherNets of the run in `base` (their checkpoints copied,
    not the run record): the options that resume it. With no `base`, a fresh run (`--force`)."""
    if base is None:
        return ["--force"]
    shutil.rmtree(out, ignore_errors=True)
    phase = Path("ckpt") / method / "mothernets"
    shutil.copytree(base / phase, out / phase)
    return ["--resume"]


def mean_sd(xs: Sequence[float], digits: int = 2) -> str:
    """'mean +- std' over seeds (std 0 for one seed)."""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} +- {sd:.{digits}f}"
