"""The namer: valid, unique, predictable identifiers; safe literals and comments."""

from __future__ import annotations

import ast
import builtins
import keyword

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mncompile.naming import (
    MODULE_NAMES,
    Namespace,
    comment_text,
    py_str,
    to_camel,
    to_identifier,
)


@pytest.mark.parametrize(("name", "camel"), [
    ("vgg16a", "Vgg16a"),
    ("mothernet1", "Mothernet1"),
    ("vgg16_v001", "Vgg16V001"),
    ("wrn28_10", "Wrn28_10"),
    ("wrn28_10_w1", "Wrn28_10W1"),
    ("densenet40_k12", "Densenet40K12"),
    ("_x__y_", "XY"),
    ("MODELS", "MODELS"),
])
def test_to_camel(name: str, camel: str) -> None:
    assert to_camel(name) == camel


def test_suffixes_are_predictable_and_in_request_order() -> None:
    ns = Namespace()
    assert [ns.create_name("a") for _ in range(3)] == ["a", "a_1", "a_2"]
    # a name that already looks suffixed does not steal a later suffix
    ns2 = Namespace()
    assert [ns2.create_name(n) for n in ("b_1", "b", "b")] == ["b_1", "b", "b_2"]


def test_reserved_keywords_and_builtins_are_avoided() -> None:
    ns = Namespace(MODULE_NAMES)
    for reserved in ("None", "True", "class", "match", "print", "Exception", "int", "nn", "torch",
                     "F", "MODELS", "Head", "ConvBN"):
        got = ns.create_name(reserved)
        assert got == reserved + "_1"
        assert not keyword.iskeyword(got) and got not in dir(builtins)


def test_class_names_of_hostile_spec_names() -> None:
    ns = Namespace(MODULE_NAMES)
    names = ["vgg", "Vgg", "none", "true", "head", "f", "nn", "models", "MODELS", "exception"]
    got = [ns.class_name(n) for n in names]
    assert got == ["Vgg", "Vgg_1", "None_1", "True_1", "Head_1", "F_1", "Nn", "Models",
                   "MODELS_1", "Exception_1"]
    assert len(set(got)) == len(got)


def test_same_object_same_name() -> None:
    ns = Namespace()
    assert ns.create_name("x", obj="net-x") == ns.create_name("x", obj="net-x") == "x"
    assert ns.create_name("x", obj="other") == "x_1"


def test_casefold_namespace_for_file_names() -> None:
    ns = Namespace(casefold=True)
    assert [ns.create_name(n) for n in ("Vgg", "vgg", "VGG")] == ["Vgg", "vgg_1", "VGG_2"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=8))
def test_any_text_gives_unique_valid_identifiers(names: list[str]) -> None:
    ns = Namespace(MODULE_NAMES)
    got = [ns.class_name(n) for n in names] + [ns.create_name(n) for n in names]
    assert len(set(got)) == len(got)
    for g in got:
        assert g.isidentifier() and g.isascii()
        assert not keyword.iskeyword(g) and g not in dir(builtins) and g not in MODULE_NAMES
    assert all(to_identifier(n).isidentifier() for n in names)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_py_str_is_an_exact_literal(text: str) -> None:
    lit = py_str(text)
    assert ast.literal_eval(lit) == text
    assert "\n" not in lit


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_comment_text_cannot_escape_a_docstring_or_comment(text: str) -> None:
    safe = comment_text(text)
    assert safe.isascii() and "\n" not in safe and "\r" not in safe
    assert ast.literal_eval('"""' + safe + '"""') == text
    module = ast.parse(f'"""{safe}"""\n# {safe}\nx = 1\n')
    assert [type(n) for n in module.body] == [ast.Expr, ast.Assign]


def test_hatch_file_names_do_not_depend_on_the_interpreters_builtins(tmp_path, monkeypatch) -> None:
    """A notebook adds builtins such as `display`; generated file names must not change."""
    import builtins

    from mncompile.api import loads
    from mncompile.compiler import compile_ensemble

    e = loads("ensemble e { input 8 classes 2 net display mlp { dense 4 } net input mlp { dense 6 }"
              " net Input mlp { dense 7 } }")
    before = sorted(compile_ensemble(e).files)
    monkeypatch.setattr(builtins, "display", print, raising=False)
    import mncompile.naming as naming

    monkeypatch.setattr(naming, "PYTHON_NAMES", naming.PYTHON_NAMES | {"display"})
    assert sorted(compile_ensemble(e).files) == before
    assert {"hatch/display.json", "hatch/input.json", "hatch/Input_1.json"} <= set(before)
