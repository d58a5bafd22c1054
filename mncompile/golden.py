"""The golden record: `generated/<name>/` holds the compiled output of every spec in examples/.

Regenerate all of it after changing the compiler (run from the repository root)::

    python -m mncompile.golden

tests/test_golden.py compiles every example again and fails on any difference, so the record
always shows what the current compiler writes. Default options: one MotherNet per architecture
class, seed 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mncompile.api import load
from mncompile.compiler import compile_ensemble
from mncompile.writer import write_folder

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GENERATED = ROOT / "generated"


def example_specs(examples: Path = EXAMPLES) -> list[Path]:
    """The example specs, in name order."""
    return sorted(examples.glob("*.mnet"))


def golden_files(spec: Path) -> tuple[str, dict[str, str]]:
    """The ensemble name and the files the record holds for one spec."""
    e = load(spec)
    return e.name, compile_ensemble(e, clusters=None, seed=0, source_name=spec.name).files


def regenerate(examples: Path = EXAMPLES, generated: Path = GENERATED) -> list[Path]:
    """Compile every example into `generated/<name>/`; returns the folders written."""
    written = []
    for spec in example_specs(examples):
        name, files = golden_files(spec)
        write_folder(generated / name, files)
        written.append(generated / name)
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
