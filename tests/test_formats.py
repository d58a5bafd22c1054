"""mncompile.formats: the file formats both sides read, importable without torch or the compiler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mncompile.diagnostics import MNError
from mncompile.formats import hatch_table
from mncompile.formats.hatch_table import HatchTable, load_table, table_dumps, table_to_json
from mncompile.formats.share_plan import ADD_STEP_FIELDS, LAYER_STEP_FIELDS, OPS, PART_FIELDS, read_part
from mncompile.passes import hatch_plan


def _loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", ["mncompile.formats", "mncompile.formats.hatch_table",
                                    "mncompile.formats.share_plan"])
def test_formats_import_neither_torch_nor_the_compiler(module: str) -> None:
    loaded = _loaded_after(f"import {module}")
    assert module in loaded
    assert not {"torch", "pydantic", "lark", "jinja2", "mncompile.ir"} & loaded
    assert not [m for m in loaded if m.startswith("mncompile.passes")]


def test_runtime_hatching_reads_tables_without_the_compiler() -> None:
    loaded = _loaded_after("import mncompile.runtime.hatching")
    assert "mncompile.formats.hatch_table" in loaded
    assert not {"mncompile.ir", "pydantic"} & loaded
    assert not [m for m in loaded if m.startswith("mncompile.passes")]


def test_the_compiler_re_exports_the_formats_objects() -> None:
    for name in ("HatchTable", "Entry", "WidenMap", "Segment", "table_to_json", "table_from_json",
                 "table_dumps", "load_table", "SCHEMA_VERSION", "BN_EPS", "INITS"):
        assert getattr(hatch_plan, name) is getattr(hatch_table, name), name


def _table() -> HatchTable:
    from mncompile.ir import Linear, Net

    return hatch_plan.plan_hatching(Net(name="m", family="mlp", dense=(Linear(width=2),)),
                                    Net(name="n", family="mlp", dense=(Linear(width=3),)), (4,), 2)


def test_load_table_reads_files_dicts_and_tables(tmp_path: Path) -> None:
    t = _table()
    path = tmp_path / "n.json"
    path.write_text(table_dumps(t))
    assert load_table(path) == t and load_table(str(path)) == t
    assert load_table(table_to_json(t)) == t
    assert load_table(t) is t


def test_load_table_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(MNError, match="'.*missing.json' does not exist"):
        load_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(MNError, match="'.*bad.json' is not valid JSON"):
        load_table(bad)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**table_to_json(_table()), "schema_version": 0}))
    with pytest.raises(MNError, match="schema_version 0"):
        load_table(old)


def test_table_dumps_writes_one_line_per_entry_map_and_tensor() -> None:
    t = _table()
    lines = table_dumps(t).splitlines()
    for e in table_to_json(t)["entries"]:
        assert f"  {json.dumps(e, sort_keys=True)}," in lines or f"  {json.dumps(e, sort_keys=True)}" in lines
    assert sum(line.startswith('  "') for line in lines) == len(t.maps) + len(t.mother_tensors)


def test_emitted_hatch_files_are_diffable_table_dumps() -> None:
    from mncompile.api import load
    from mncompile.compiler import compile_ensemble

    spec = Path(__file__).resolve().parent.parent / "examples" / "mlp.mnet"
    out = compile_ensemble(load(spec), source_name=spec.name)
    paths = sorted(p for p in out.files if p.startswith("hatch/"))
    assert paths and len(paths) == len(out.tables)
    for member, t in out.tables.items():
        text = out.files[f"hatch/{member}.json"]
        assert text == table_dumps(t) and load_table(json.loads(text)) == t
        # one line per entry, map and MotherNet tensor, plus the table's other fields
        assert len(text.splitlines()) >= len(t.entries) + len(t.maps) + len(t.mother_tensors)


def _steps(shared_py: str) -> dict[str, tuple[dict, ...]]:
    """Each Shared-MotherNet class's STEPS literal, read without running the file (no torch)."""
    import ast

    out = {}
    for node in ast.parse(shared_py).body:
        if isinstance(node, ast.ClassDef) and node.name != "SharedNet":
            for item in node.body:
                names = [t.id for t in getattr(item, "targets", ()) if isinstance(t, ast.Name)]
                if isinstance(item, ast.Assign) and names == ["STEPS"]:
                    out[node.name] = ast.literal_eval(item.value)
    return out


@pytest.mark.parametrize("example", ["mlp", "digits", "r10"])
def test_generated_steps_have_exactly_the_formats_fields(example: str) -> None:
    from mncompile.golden import GENERATED

    classes = _steps((GENERATED / example / "shared.py").read_text())
    assert classes
    ops, parts = set(), 0
    for steps in classes.values():
        for step in steps:
            ops.add(step["op"])
            assert step["op"] in OPS
            if step["op"] in ("conv", "linear", "norm"):
                assert tuple(step) == LAYER_STEP_FIELDS
                for part in step["parts"]:
                    assert tuple(part) == PART_FIELDS and read_part(part) == part
                    assert set(part["rows"]) <= set(step["makes"]) and set(part["cols"]) <= set(step["reads"])
                    parts += 1
            elif step["op"] == "add":
                assert tuple(step) == ADD_STEP_FIELDS
            else:
                assert tuple(step) == ("op",)
    assert parts and "linear" in ops
    assert {"conv", "gap"} <= ops if example != "mlp" else ops == {"flatten", "linear"}
    assert ("add" in ops) == (example in ("digits", "r10"))


def test_read_part_refuses_positional_and_renamed_parts() -> None:
    from mncompile.diagnostics import MNError

    part = dict(zip(PART_FIELDS, ("a", "fc", None, None, (1,), (0,), None), strict=True))
    assert read_part(part) == part and read_part(part) is not part
    with pytest.raises(MNError, match="is a tuple where this mncompile reads a dict"):
        read_part(tuple(part.values()))  # type: ignore[arg-type]
    with pytest.raises(MNError, match=r"has the fields \[.*'width'\]"):
        read_part({**{k: v for k, v in part.items() if k != "kernel"}, "width": 3})
