"""The golden record: `generated/<name>/` holds the compiled output of every spec in examples/.

Regenerate all of it after changing the compiler (run from the repository root)::

    python -m mncompile.golden

tests/test_golden.py compiles every example again and fails on any difference, so the record
always shows what the current compiler writes. Default options: one MotherNet per architecture
class, seed 0. The index `generated/.mncompile-golden.json` names each folder's spec, g and
seed, so that a compile into one with other options (`mncompile examples/mnist1d.mnet --clusters 2` in the
repository) is refused instead of rewriting the record.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mncompile.api import load
from mncompile.compiler import compile_ensemble
from mncompile.writer import GOLDEN, golden_index, write_folder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GENERATED = ROOT / "generated"


def example_specs(examples: Path = EXAMPLES) -> list[Path]:
    """The example specs, in name order."""
    return sorted(examples.glob("*.mnet"))


def golden_files(spec: Path) -> tuple[str, dict[str, str], dict[str, object]]:
    """The ensemble name, the files the record holds for one spec, and its entry in the index."""
    e = load(spec)
    out = compile_ensemble(e, clusters=None, seed=0, source_name=spec.name)
    return e.name, out.files, {"spec": spec.name, "g": out.plan.g, "seed": 0}


def regenerate(examples: Path = EXAMPLES, generated: Path = GENERATED) -> list[Path]:
    """Compile every example into `generated/<name>/`; returns the folders written."""
    written = []
    index: dict[str, dict[str, object]] = {}
    for spec in example_specs(examples):
        name, files, index[name] = golden_files(spec)
        # the record may be rewritten whatever it held: it is this command's own output
        write_folder(generated / name, files, force=True)
        written.append(generated / name)
    (generated / GOLDEN).write_text(golden_index(index), encoding="utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mncompile.golden", description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=Path, default=EXAMPLES, help="folder of .mnet specs")
    p.add_argument("--generated", type=Path, default=GENERATED, help="folder of the record")
    args = p.parse_args(argv)
    for folder in regenerate(args.examples, args.generated):
        print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
