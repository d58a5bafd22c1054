"""Parse `.mnet` text into the IR (`mncompile.ir`), keeping a source span on every node.

>>> e = parse_text("ensemble tiny { input 40; classes 10; net a mlp { dense 64 32 } }")
>>> e.nets[0].widths
(64, 32)

Syntax errors and the structural rules that the IR cannot express (an item given twice,
two stems, a head before a block) raise `MNError` with a span. Everything the IR can
express is checked afterwards by `mncompile.passes.check`.
"""

from __future__ import annotations

import functools
import keyword
from pathlib import Path
from typing import Any

import Levenshtein
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from mncompile.diagnostics import MNError
from mncompile.ir import (
    FAMILIES,
    TRAIN_DEFAULTS,
    Block,
    Ensemble,
    Layer,
    Linear,
    Net,
    Setting,
    Span,
)
from mncompile.resources import grammar_path

KEY_ORDER = {k: i for i, k in enumerate(TRAIN_DEFAULTS)}

_HUMAN_TERMINALS = {
    "NAME": "a name",
    "INT": "an integer",
    "NUMBER": "a number",
    "FAMILY": "a family (plain, residual, dense or mlp)",
    "_X": "'x' (a repeat such as x3)",
    "_SEMI": "';'",
    "$END": "the end of the file",
}


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The one LALR parser, built from `grammar/mnet.lark` (cached)."""
    return Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


def parse_file(path: str | Path) -> Ensemble:
    """Parse a `.mnet` file. Errors name the file by the path as given."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise MNError(f"no such file: {path}", hint="give the path of a .mnet spec") from None
    except IsADirectoryError:
        raise MNError(f"{path} is a directory, not a .mnet file") from None
    except OSError as exc:
        raise MNError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MNError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start})",
            hint="a .mnet spec is plain text",
        ) from None
    return parse_text(text, source=p.name, display=str(path))


def parse_text(text: str, source: str = "<string>", display: str | None = None) -> Ensemble:
    """Parse spec text. `source` is recorded in the IR; `display` names it in messages."""
    shown = display or source
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        col = text.index("\x00") - (text.rfind("\n", 0, text.index("\x00")) + 1) + 1
        raise MNError(
            "unexpected NUL byte: this is not a text file",
            Span(line=line, column=col, end_line=line, end_column=col + 1),
        ).with_source(shown, text)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text).with_source(shown, text) from None
    try:
        return _Builder(source).ensemble(tree.children[0])
    except MNError as err:
        raise err.with_source(shown, text) from None


# --- syntax errors -------------------------------------------------------------------


def _describe(name: str) -> str:
    if name in _HUMAN_TERMINALS:
        return _HUMAN_TERMINALS[name]
    try:
        term = parser().get_terminal(name)
    except KeyError:
        return name.lower()
    value = term.pattern.value
    if term.pattern.type == "re" and value.endswith(r"\b"):
        value = value[:-2]
    return repr(value)


def _keywords(expected: set[str]) -> list[str]:
    words = []
    for name in expected:
        try:
            pattern = parser().get_terminal(name).pattern
        except KeyError:
            continue
        value = pattern.value
        if pattern.type == "re" and value.endswith(r"\b"):
            value = value[:-2]
        if value.isalpha():
            words.append(value)
    if "FAMILY" in expected:
        words.extend(FAMILIES)
    return sorted(words)


def _expected_text(expected: set[str]) -> str:
    names = sorted({_describe(e) for e in expected if not e.startswith("__")})
    if not names:
        return ""
    if len(names) == 1:
        return f"expected {names[0]}"
    return "expected one of: " + ", ".join(names)


def _syntax_error(exc: UnexpectedInput, text: str) -> MNError:
    line, column = exc.line, exc.column
    expected: set[str] = set()
    if isinstance(exc, UnexpectedToken):
        expected = set(exc.expected)
        tok = exc.token
        if tok.type == "$END":
            line, column = _end_position(text)
            return MNError(
                "unexpected end of file",
                Span(line=line, column=column, end_line=line, end_column=column + 1),
                hint=_expected_text(expected) or None,
            )
        span = _token_span(tok)
        word = str(tok)
        hint = _expected_text(expected)
        kws = _keywords(expected)
        if kws and word.isidentifier():
            close = min(kws, key=lambda k: (Levenshtein.distance(word, k), k))
            if Levenshtein.distance(word, close) <= max(1, len(close) // 3):
                hint = f"did you mean '{close}'? ({hint})"
        if "FAMILY" in expected and tok.type != "FAMILY":
            return MNError(f"unknown family '{word}'", span, hint=hint)
        return MNError(f"unexpected '{word}'", span, hint=hint or None)
    if isinstance(exc, UnexpectedCharacters):
        char = exc.char
        expected = set(exc.allowed or ())
        span = Span(line=line, column=column, end_line=line, end_column=column + 1)
        if char == "-":
            return MNError(
                "negative numbers are not allowed here",
                span,
                hint="sizes, kernels, counts and settings are positive numbers",
            )
        if char == ".":
            return MNError(
                "unexpected '.': a whole number is needed here",
                span,
                hint="sizes, kernels and counts are integers such as 64",
            )
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
        return MNError(f"unexpected character {shown}", span, hint=_expected_text(expected) or None)
    if isinstance(exc, UnexpectedEOF):
        line, column = _end_position(text)
        return MNError(
            "unexpected end of file",
            Span(line=line, column=column, end_line=line, end_column=column + 1),
            hint=_expected_text(set(exc.expected)) or None,
        )
    return MNError(str(exc))  # pragma: no cover - lark raises only the three above


def _end_position(text: str) -> tuple[int, int]:
    stripped = text.rstrip()
    if not stripped:
        return 1, 1
    line = stripped.count("\n") + 1
    last = stripped.split("\n")[-1]
    return line, len(last) + 1


def _token_span(tok: Token) -> Span:
    line = tok.line or 1
    column = tok.column or 1
    end_line = tok.end_line or line
    end_column = tok.end_column or column + max(1, len(str(tok)))
    return Span(line=line, column=column, end_line=end_line, end_column=end_column)


def _tree_span(tree: Tree) -> Span:
    m = tree.meta
    if getattr(m, "empty", True):
        return Span.none()
    return Span(line=m.line, column=m.column, end_line=m.end_line, end_column=m.end_column)


def _head_span(tree: Tree) -> Span:
    """The span of a tree's first line only: carets stay on one line."""
    s = _tree_span(tree)
    if s.end_line == s.line:
        return s
    return Span(line=s.line, column=s.column, end_line=s.line, end_column=s.column + 1)


# --- tree -> IR ----------------------------------------------------------------------


def _number(tok: Token) -> float | int:
    text = str(tok)
    if text.isdigit():
        return int(text)
    value = float(text)
    return value


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

    def ensemble(self, tree: Tree) -> Ensemble:
        name_tok = tree.children[0]
        assert isinstance(name_tok, Token)
        seen: dict[str, Span] = {}
        fields: dict[str, Any] = {}
        nets: list[Net] = []
        settings: list[Setting] = []
        for item in tree.children[1:]:
            assert isinstance(item, Tree)
            kind = str(item.data)
            span = _head_span(item)
            if kind == "net":
                nets.append(self.net(item))
                continue
            if kind in seen:
                prev = seen[kind]
                raise MNError(
                    f"'{kind}' is given twice (first at line {prev.line})",
                    span,
                    hint=f"keep one '{kind}' per ensemble",
                )
            seen[kind] = span
            if kind == "input":
                dims = item.children[0]
                assert isinstance(dims, Tree)
                fields["input"] = tuple(int(str(t)) for t in dims.children)
                fields["input_span"] = _tree_span(dims)
            elif kind == "classes":
                fields["classes"] = int(str(item.children[0]))
                fields["classes_span"] = _token_span(item.children[0])  # type: ignore[arg-type]
            elif kind == "data":
                fields["data"] = str(item.children[0])
            elif kind == "train":
                settings = self.train(item)
        where = _head_span(tree)
        for required, example in (("input", "input 3x32x32"), ("classes", "classes 10")):
            if required not in fields:
                raise MNError(
                    f"ensemble '{name_tok}' has no '{required}'",
                    where,
                    hint=f"add a line such as '{example}'",
                )
        if not nets:
            raise MNError(
                f"ensemble '{name_tok}' has no nets",
                where,
                hint="add at least one 'net NAME FAMILY { ... }'",
            )
        return Ensemble(
            name=str(name_tok),
            input=fields["input"],
            classes=fields["classes"],
            data=fields.get("data"),
            train=tuple(sorted(settings, key=lambda s: KEY_ORDER.get(s.key, len(KEY_ORDER)))),
            nets=tuple(nets),
            source=self.source,
            span=_token_span(name_tok),
            input_span=fields["input_span"],
            classes_span=fields["classes_span"],
            data_span=seen.get("data"),
        )

    def train(self, tree: Tree) -> list[Setting]:
        out: list[Setting] = []
        for setting in tree.children:
            assert isinstance(setting, Tree)
            key_tok, value_tree = setting.children
            assert isinstance(key_tok, Token) and isinstance(value_tree, Tree)
            vtok = value_tree.children[0]
            assert isinstance(vtok, Token)
            value: float | int | str
            value = _number(vtok) if value_tree.data == "number" else str(vtok)
            out.append(
                Setting(
                    key=str(key_tok),
                    value=value,
                    span=_tree_span(setting),
                    key_span=_token_span(key_tok),
                    value_span=_token_span(vtok),
                )
            )
        return out

    def layers(self, tree: Tree) -> list[Layer]:
        kernel, filters = (int(str(t)) for t in tree.children[:2])
        repeat = 1
        span = _tree_span(tree)
        if len(tree.children) == 3:
            rep = tree.children[2]
            assert isinstance(rep, Tree)
            repeat = int(str(rep.children[0]))
            if repeat < 1:
                raise MNError(
                    f"a repeat count must be at least 1, got x{repeat}",
                    _tree_span(rep),
                    hint=f"write '{kernel}:{filters}' for one layer, or x2, x3 ... for more",
                )
        layer = Layer(kernel=kernel, filters=filters, span=span)
        return [layer] * repeat

    def net(self, tree: Tree) -> Net:
        name_tok, fam_tok, *parts = tree.children
        assert isinstance(name_tok, Token) and isinstance(fam_tok, Token)
        stem: Layer | None = None
        stem_span: Span | None = None
        head: tuple[Linear, ...] | None = None
        head_span: Span | None = None
        blocks: list[Block] = []
        for part in parts:
            assert isinstance(part, Tree)
            kind = str(part.data)
            span = _head_span(part)
            if kind == "stem":
                if stem_span is not None:
                    raise MNError(
                        f"net '{name_tok}' has a second 'stem' (first at line {stem_span.line})",
                        span,
                        hint="a net has at most one stem",
                    )
                if blocks or head_span is not None:
                    raise MNError(
                        "'stem' must come before the blocks and the dense head",
                        span,
                        hint="move the stem to the top of the net",
                    )
                stem_span = span
                layers = self.layers(part.children[0])  # type: ignore[arg-type]
                if len(layers) != 1:
                    raise MNError(
                        "a stem is one layer and takes no repeat",
                        _tree_span(part.children[0]),  # type: ignore[arg-type]
                        hint="write 'stem 3:16'",
                    )
                stem = layers[0]
            elif kind == "block":
                if head_span is not None:
                    raise MNError(
                        "'block' after the dense head",
                        span,
                        hint=f"the dense head (line {head_span.line}) comes after every block",
                    )
                layers = []
                for lt in part.children:
                    layers.extend(self.layers(lt))  # type: ignore[arg-type]
                blocks.append(Block(layers=tuple(layers), span=span))
            else:
                if head_span is not None:
                    raise MNError(
                        f"net '{name_tok}' has a second dense head (first at line {head_span.line})",
                        span,
                        hint="list every hidden width in one 'dense' line: dense 512 256",
                    )
                head_span = span
                head = tuple(
                    Linear(width=int(str(t)), span=_token_span(t))  # type: ignore[arg-type]
                    for t in part.children
                )
        return Net(
            name=str(name_tok),
            family=str(fam_tok),  # type: ignore[arg-type]
            stem=stem,
            blocks=tuple(blocks),
            dense=head or (),
            span=_head_span(tree),
            name_span=_token_span(name_tok),
            family_span=_token_span(fam_tok),
            stem_span=stem_span,
        )


def is_valid_name(name: str) -> bool:
    """A NAME of the language: an identifier that is not a Python keyword."""
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)
