"""A name in a Python file the user points at: `FILE.py:NAME` (`--data`, `mncompile import`).

Importing the file runs it: the only code mncompile runs that it did not write, and only when the
user names the file. Errors are `MNError`s naming the file and the name; an exception the file (or
the name, when called) raises is kept as the error's `detail`, whose traceback `--debug` prints.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from mncompile.diagnostics import MNError


def is_file_name(text: str) -> bool:
    """Whether `text` reads as FILE.py:NAME."""
    path, sep, name = text.rpartition(":")
    return bool(sep) and path.endswith(".py") and bool(name)


def with_detail(error: MNError, detail: BaseException) -> MNError:
    error.detail = detail
    return error


def load_name(text: str, flag: str, hint: str) -> Any:
    """The object NAME of FILE.py for `text` = FILE.py:NAME; `flag` starts every message."""
    path_text, _, name = text.rpartition(":")
    path = Path(path_text)
    if not path_text.endswith(".py") or not name:
        raise MNError(f"{flag} {text}: expected FILE.py:NAME", hint=hint)
    if not path.is_file():
        raise MNError(f"{flag} {text}: {path} is not a file" + (" (it is a folder)" if path.is_dir() else ""),
                      hint=hint)
    if not name.isidentifier():
        raise MNError(f"{flag} {text}: '{name}' is not a Python name", hint=hint)
    module_name = f"_mncompile_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MNError(f"{flag} {text}: cannot import {path}", hint=hint)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        error = MNError(f"{flag} {text}: importing {path} raised {type(err).__name__}: {err}",
                        hint="fix the file (mncompile --debug ... shows the traceback)")
        raise with_detail(error, err) from err
    obj = getattr(module, name, None)
    if obj is None:
        names = sorted(n for n, v in vars(module).items() if (inspect.isfunction(v) or inspect.isclass(v))
                       and not n.startswith("_") and getattr(v, "__module__", None) == module_name)
        raise MNError(f"{flag} {text}: {path} has no '{name}'",
                      hint="it defines: " + (", ".join(names) or "nothing"))
    return obj


def call(obj: Any, text: str, flag: str) -> Any:
    """`obj()`, an exception it raises turned into an MNError (its traceback kept for --debug)."""
    name = text.rpartition(":")[2]
    try:
        return obj()
    except Exception as err:
        error = MNError(f"{flag} {text}: {name}() raised {type(err).__name__}: {err}",
                        hint="fix it (mncompile --debug ... shows the traceback)")
        raise with_detail(error, err) from err
