"""The package's shape, read from its source: imports only go down, one epoch loop, neutral formats.

The import graph counts every `import` statement, those inside functions too, and leaves out
the ones under `if TYPE_CHECKING:` (never executed). docs/architecture.md draws the layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "mncompile"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, *, type_checking: bool) -> Iterator[tuple[ast.stmt, str, list[str]]]:
    """(statement, module, names) of every import; under TYPE_CHECKING only when asked for."""
    def walk(node: ast.AST) -> Iterator[tuple[ast.stmt, str, list[str]]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                if type_checking:
                    yield from walk(child)
                for other in child.orelse:
                    yield from walk(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield child, alias.name, []
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child, child.module, [a.name for a in child.names]
            yield from walk(child)

    yield from walk(tree)


def _edges(module: str, *, type_checking: bool = False) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    out = set()
    for _, target, names in _imports(tree, type_checking=type_checking):
        if not target.startswith("mncompile"):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        out.update(subs or [target])
        if subs and len(subs) < len(names):
            out.add(target)
    out.discard(module)
    return {m for m in out if m in MODULES}


def _cycle() -> list[str] | None:
    graph = {m: _edges(m) for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_walk_sees_imports_inside_functions_and_skips_type_checking() -> None:
    pipeline = _edges("mncompile.runtime.pipeline")
    # imported inside execute(), and at the top
    assert {"mncompile.runtime.data", "mncompile.runtime.methods"} <= pipeline
    assert "mncompile.runtime.ray_engine" in _edges("mncompile.runtime.engines")  # inside a function
    assert "mncompile.runtime.results" not in _edges("mncompile.runtime.context")  # TYPE_CHECKING only
    assert "mncompile.runtime.results" in _edges("mncompile.runtime.context", type_checking=True)


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


def test_a_cycle_would_be_found(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _edges

    def with_back_edge(module: str, *, type_checking: bool = False) -> set[str]:
        extra = {"mncompile.runtime.pipeline"} if module == "mncompile.runtime.train" else set()
        return real(module, type_checking=type_checking) | extra

    monkeypatch.setitem(globals(), "_edges", with_back_edge)
    assert _cycle() is not None


def _all_imports(prefix: str) -> dict[str, set[str]]:
    return {m: {t for _, t, _ in _imports(ast.parse(p.read_text(encoding="utf-8")), type_checking=True)}
            for m, p in MODULES.items() if m == prefix or m.startswith(prefix + ".")}


def test_the_runtime_imports_nothing_of_the_compiler() -> None:
    """The runtime reads the emitted files through mncompile.formats, never the IR or the passes."""
    compiler = ("mncompile.passes", "mncompile.ir", "mncompile.parse")
    bad = {m: sorted(t for t in targets if t.startswith(compiler))
           for m, targets in _all_imports("mncompile.runtime").items()}
    assert not {m: t for m, t in bad.items() if t}


def test_the_formats_import_neither_torch_nor_the_compiler() -> None:
    for m, targets in _all_imports("mncompile.formats").items():
        assert not [t for t in targets if t.split(".")[0] == "torch"
                    or t.startswith(("mncompile.passes", "mncompile.ir", "mncompile.runtime"))], m


def _functions_calling(attr: str, prefix: str) -> list[str]:
    out = []
    for m, path in MODULES.items():
        if not m.startswith(prefix):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = [c for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                     and c.func.attr == attr and not c.args]
            # a nested function's calls are its own, not its parent's
            nested = [c for inner in ast.walk(fn) if inner is not fn
                      and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)) for c in ast.walk(inner)]
            if [c for c in calls if c not in nested]:
                out.append(f"{m}.{fn.name}")
    return out


def test_one_function_steps_the_optimizers() -> None:
    assert _functions_calling("step", "mncompile.runtime") == ["mncompile.runtime.train.fit"]


def test_the_ray_engine_uses_no_private_name_of_the_loop() -> None:
    tree = ast.parse(MODULES["mncompile.runtime.ray_engine"].read_text(encoding="utf-8"))
    private = [n for _, t, names in _imports(tree, type_checking=True) if t == "mncompile.runtime.train"
               for n in names if n.startswith("_")]
    assert private == []


@pytest.mark.slow
def test_mypy_is_clean_on_the_package() -> None:
    """The configuration is pyproject.toml's [tool.mypy]; mypy comes with the dev extra."""
    api = pytest.importorskip("mypy.api")
    out, err, status = api.run(["--no-incremental", str(PKG)])
    assert status == 0, out + err
