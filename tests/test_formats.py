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
from mncompile.passes import hatch_plan


def _loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `statement`."""
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


@pytest.mark.parametrize("module", ["mncompile.formats", "mncompile.formats.hatch_table"])
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
    from mncompile.emit import compile_ensemble

    spec = Path(__file__).resolve().parent.parent / "examples" / "mlp.mnet"
    out = compile_ensemble(load(spec), source_name=spec.name)
    paths = sorted(p for p in out.files if p.startswith("hatch/"))
    assert paths and len(paths) == len(out.tables)
    for member, t in out.tables.items():
        text = out.files[f"hatch/{member}.json"]
        assert text == table_dumps(t) and load_table(json.loads(text)) == t
        # one line per entry, map and MotherNet tensor, plus the table's other fields
        assert len(text.splitlines()) >= len(t.entries) + len(t.maps) + len(t.mother_tensors)
