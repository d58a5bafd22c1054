"""A generated folder as the runtime reads it: models.py, plan.json and the hatch tables, checked.

No torch at import; executing models.py imports it.
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from mncompile.diagnostics import MNError

if TYPE_CHECKING:
    from mncompile.formats.hatch_table import HatchTable
    from mncompile.formats.plan_file import PlanFile


def load_generated_module(path: Path, kind: str, key: Path) -> ModuleType:
    """Execute a generated file as a fresh module named after `kind` and `key` (not in sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"mncompile_{kind}_{zlib.crc32(str(key).encode())}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    hint = "the generated folder was edited or is out of date: compile the spec again"
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise MNError(f"'{path}' has a syntax error at line {err.lineno}: {err.msg}", hint=hint) from None
    except Exception as err:  # noqa: BLE001 - whatever an edited file raises, it is not ours to show
        raise MNError(f"'{path}' fails when it is loaded: {type(err).__name__}: {err}", hint=hint) from None
    return module


def tensor_shapes(cls: type, where: str) -> dict[str, tuple[int, ...]]:
    """Each state_dict key of a generated class with its shape, built on the meta device (no memory)."""
    import torch

    try:
        with torch.device("meta"):
            model = cls()
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}
    except Exception as err:  # noqa: BLE001 - an edited models.py may raise anything here
        name = getattr(cls, "__name__", cls)
        raise MNError(f"{where}: building '{name}' fails: {type(err).__name__}: {err}",
                      hint="the generated folder was edited or is out of date: compile the spec again",
                      ) from None


def load_folder(folder: Path) -> tuple[ModuleType, PlanFile, dict[str, HatchTable]]:
    """models.py (as a fresh module), plan.json and the hatch tables of a generated folder, checked."""
    from mncompile.formats.hatch_table import load_table
    from mncompile.formats.plan_file import read_plan

    folder = Path(folder)
    plan_path, models_path = folder / "plan.json", folder / "models.py"
    for path in (plan_path, models_path):
        if not path.is_file():
            raise MNError(f"'{path}' does not exist",
                          hint="compile the spec again: mncompile SPEC -o " + str(folder))
    try:
        data = json.loads(plan_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise MNError(f"'{plan_path}' is not a plan this mncompile can read ({err})",
                      hint="compile the spec again") from None
    plan = read_plan(data, str(plan_path))
    members = list(plan.member_names)
    clusters = [(c.mother.name, list(c.members)) for c in plan.clusters]
    models = load_generated_module(models_path, "models", folder)
    known = getattr(models, "MODELS", {})
    needed = members + [mother for mother, ms in clusters if len(ms) > 1]
    missing = [n for n in needed if n not in known]
    if missing:
        raise MNError(f"'{models_path}' has no class for '{missing[0]}', which plan.json names",
                      hint="the folder is out of date: compile the spec again")
    tables: dict[str, HatchTable] = {}
    hatch_dir = folder / "hatch"
    for path in sorted(hatch_dir.glob("*.json")) if hatch_dir.is_dir() else []:
        table = load_table(path)
        tables[table.member] = table
    from mncompile.runtime.hatching import check_table

    for mother, ms in clusters:
        if len(ms) < 2:
            continue
        mother_shapes = tensor_shapes(known[mother], str(models_path))
        for m in ms:
            if m not in tables:
                raise MNError(f"member '{m}' has no hatch table in '{hatch_dir}'",
                              hint="the folder is out of date: compile the spec again")
            if tables[m].mother != mother:
                raise MNError(f"the hatch table of '{m}' is for MotherNet '{tables[m].mother}', but "
                              f"plan.json puts it under '{mother}'", hint="compile the spec again")
            # before anything trains: hatching through this table cannot index out of range or
            # load a tensor of the wrong shape into the member
            check_table(tables[m], tensor_shapes(known[m], str(models_path)), mother_shapes,
                        f"hatch table '{hatch_dir / (m + '.json')}'")
    return models, plan, tables
