"""Where the grammar and the templates live, in a source checkout and in an installed wheel.

The wheel carries them inside the package (`mncompile/grammar`, `mncompile/templates`);
a source checkout or an editable install keeps them at the repository's top level.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for base in (_PKG / name, _PKG.parent / name):
        if base.is_dir():
            return base
    raise FileNotFoundError(f"mncompile is missing its '{name}' folder (looked in {_PKG})")


def grammar_path() -> Path:
    """The path of `mnet.lark`."""
    return _find("grammar") / "mnet.lark"


def templates_dir() -> Path:
    """The folder of the jinja2 templates."""
    return _find("templates")
