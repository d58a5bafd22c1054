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
import re
from pathlib import Path
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from mncompile.diagnostics import MNError
from mncompile.ir import (
    FAMILIES,
    INT_KEYS,
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
from mncompile.suggest import suggest

KEY_ORDER = {k: i for i, k in enumerate(TRAIN_DEFAULTS)}

_HUMAN_TERMINALS = {
    "NAME": "a name",
    "INT": "an integer",
    "NUMBER": "a number",
    "FAMILY": "a family (plain, residual, dense or mlp)",
    "_X": "'x' (a repeat such as x3)",
    "_SEMI": "';'",
    "$END": "the end of the file",
    "<END-OF-FILE>": "the end of the file",  # what lark calls $END in some parser states
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
    return parse_text(read_spec(path), source=Path(path).name, display=str(path))


def read_spec(path: str | Path) -> str:
    """The text of a `.mnet` file (a leading byte-order mark dropped); clear errors otherwise."""
    p = Path(path)
    shown = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise MNError("no such file", hint="give the path of a .mnet spec", source=shown) from None
    except IsADirectoryError:
        raise MNError("this is a directory, not a .mnet file", hint="give the path of a .mnet spec",
                      source=shown) from None
    except OSError as exc:
        raise MNError(f"cannot read the file: {exc.strerror}", hint="check its permissions",
                      source=shown) from None
    try:
        # utf-8-sig: editors on Windows start files with a byte-order mark; it means nothing here
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        raise MNError(
            f"the file is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            "cannot be decoded",
            Span(line=line, column=column, end_line=line, end_column=column + 1),
            hint="a .mnet spec is plain UTF-8 text; save it as UTF-8",
            source=shown,
            text=raw.decode("utf-8", "replace"),
        ) from None
    return text


def parse_text(text: str, source: str = "<string>", display: str | None = None) -> Ensemble:
    """Parse spec text. `source` is recorded in the IR; `display` names it in messages."""
    shown = display or source
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        col = text.index("\x00") - (text.rfind("\n", 0, text.index("\x00")) + 1) + 1
        raise MNError(
            "unexpected NUL byte: this is not a text file",
            Span(line=line, column=col, end_line=line, end_column=col + 1),
            hint="a .mnet spec is plain UTF-8 text; this file looks binary or corrupted",
        ).with_source(shown, text)
    try:
        tree = _parse_bounded(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text).with_source(shown, text) from None
    except MNError as err:
        raise err.with_source(shown, text) from None
    root = tree.children[0]
    assert isinstance(root, Tree)
    try:
        return _Builder(source).ensemble(root)
    except MNError as err:
        raise err.with_source(shown, text) from None


def _parse_bounded(text: str) -> Tree:
    """`parser().parse(text)`, refusing a net or an ensemble with too many layers as it lexes.

    The builder counts layers exactly (repeats expanded), but only once lark has built the
    whole tree, and millions of dense widths or layers would cost minutes and gigabytes first.
    So the tokens are counted as they come: every layer has one ':' (`K:F`) and every dense
    width is one integer after `dense`; repeats only add to that, and are the builder's.
    """
    ip = parser().parse_interactive(text)
    in_net = total = 0
    in_dense = False
    last: Token | None = None
    try:
        for tok in ip.iter_parse():
            last = tok
            kind = tok.type
            if kind == "_NET":
                in_net = 0
            in_dense = kind == "_DENSE" or (in_dense and kind == "INT")
            if kind == "COLON" or (in_dense and kind == "INT"):
                in_net += 1
                total += 1
                if in_net > MAX_LAYERS:
                    raise _too_deep(_token_span(tok))
                if total > MAX_TOTAL_LAYERS:
                    raise _too_many_layers(_token_span(tok))
        tree = ip.feed_eof(last)
    except UnexpectedInput as exc:
        # what `parse` attaches: the parser's state where it stopped, read by the messages
        if getattr(exc, "interactive_parser", None) is None:
            exc.interactive_parser = ip
        raise
    assert isinstance(tree, Tree)
    return tree


def _too_deep(span: Span) -> MNError:
    return MNError(f"this net has more than {MAX_LAYERS} layers", span,
                   hint=f"a net has at most {MAX_LAYERS} layers, repeats and dense widths included")


def _too_many_layers(span: Span) -> MNError:
    return MNError(f"the ensemble has more than {MAX_TOTAL_LAYERS} layers in all its nets", span,
                   hint=f"an ensemble has at most {MAX_TOTAL_LAYERS} layers, repeats and dense widths "
                   "included; split it into several specs")


# --- syntax errors -------------------------------------------------------------------

#: what each construct may hold, for messages about a word that is not one of them
_ITEMS = "input, classes, data, train { ... } and net NAME FAMILY { ... }"
_PARTS = "stem K:F, block { K:F ... } and dense W ..."


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
        if value.isalpha() and value != "x":
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


def _context(stack: list[Any]) -> str:
    """Which construct the parser was inside when it failed, from its value stack.

    One of: top, ensemble-header, ensemble, input, classes, data, train-header, train,
    net-header, net, stem, block-header, block, dense. Reduced subtrees are finished
    constructs, so only the raw tokens left on the stack say where we are.
    """
    depth = 0
    skip_header = False
    for i in range(len(stack) - 1, -1, -1):
        el = stack[i]
        if not isinstance(el, Token):
            continue
        kind = el.type
        if kind == "RBRACE":
            depth += 1
            continue
        if kind == "LBRACE":
            if depth:
                depth -= 1
                skip_header = True
                continue
            prev = stack[i - 1] if i > 0 else None
            ptype = prev.type if isinstance(prev, Token) else ""
            return {"_BLOCK": "block", "_TRAIN": "train", "FAMILY": "net"}.get(ptype, "ensemble")
        if depth:
            continue
        if skip_header:
            if kind in ("_BLOCK", "_TRAIN", "_NET", "_ENSEMBLE"):
                skip_header = False
            continue
        named = {
            "_INPUT": "input", "_CLASSES": "classes", "_DATA": "data", "_STEM": "stem",
            "_DENSE": "dense", "_NET": "net-header", "_BLOCK": "block-header",
            "_TRAIN": "train-header", "_ENSEMBLE": "ensemble-header",
        }
        if kind in named:
            return named[kind]
    return "top"


def _open_net_name(stack: list[Any]) -> str:
    """The name of the net whose body the parser is in (NAME FAMILY '{' on the stack)."""
    for i in range(len(stack) - 1, 0, -1):
        el = stack[i]
        if isinstance(el, Token) and el.type == "FAMILY" and isinstance(stack[i - 1], Token):
            return str(stack[i - 1])
    return "?"  # pragma: no cover - only called inside a net body


def _innermost_open_brace(stack: list[Any]) -> Token | None:
    """The last '{' on the stack that no '}' after it closes."""
    depth = 0
    for el in reversed(stack):
        if isinstance(el, Token) and el.type == "RBRACE":
            depth += 1
        elif isinstance(el, Token) and el.type == "LBRACE":
            if depth == 0:
                return el
            depth -= 1
    return None


def _glued_number(stack: list[Any], tok: Token, text: str) -> tuple[str, Span, bool] | None:
    """`1.5`, `64k`, `3e2` where an integer belongs, `0.1x` where a number does: a number
    the lexer split from a tail it cannot take. The flag says whether an integer was due."""
    prev = stack[-1] if stack else None
    if not (isinstance(prev, Token) and prev.type in ("INT", "NUMBER")):
        return None
    if prev.end_pos != tok.start_pos or tok.type not in ("NUMBER", "NAME"):
        return None
    word = text[prev.start_pos : tok.end_pos]
    span = Span(line=prev.line or 1, column=prev.column or 1, end_line=tok.end_line or 1,
                end_column=tok.end_column or 1)
    return word, span, prev.type == "INT"


def _unexpected_token(exc: UnexpectedToken, text: str) -> MNError:
    expected = set(exc.expected)
    tok = exc.token
    ip = getattr(exc, "interactive_parser", None)
    stack: list[Any] = list(ip.parser_state.value_stack) if ip is not None else []
    where = _context(stack)
    hint = _expected_text(expected)
    if tok.type == "$END":
        line, column = _end_position(text)
        span = Span(line=line, column=column, end_line=line, end_column=column + 1)
        if not stack:
            return MNError("the file is empty: there is no ensemble in it", span,
                           hint="a spec is one 'ensemble NAME { input ...; classes ...; net ... }'")
        brace = _innermost_open_brace(stack)
        if brace is not None:
            return MNError(
                f"unexpected end of file: the '{{' at line {brace.line}, column {brace.column} "
                "is never closed",
                span,
                hint="add the missing '}' (every '{' needs a matching '}'); " + hint,
            )
        return MNError("unexpected end of file", span, hint=hint or None)
    span = _token_span(tok)
    word = str(tok)
    if expected <= {"_SEMI", "$END", "<END-OF-FILE>"}:
        closer = next((t for t in reversed(stack) if isinstance(t, Token) and t.type == "RBRACE"), None)
        at = f" (it was closed by the '}}' at line {closer.line}, column {closer.column})" if closer else ""
        return MNError(
            f"unexpected '{word}' after the end of the ensemble{at}",
            span,
            hint="a file holds exactly one ensemble; look for an extra '}' or a second 'ensemble'",
        )
    last = stack[-1] if stack and isinstance(stack[-1], Token) else None
    if where == "train" and last is not None and last.type == "NAME":
        return MNError(f"training setting '{last}' has no value", _token_span(last),
                       hint=f"write it as '{last} VALUE', such as 'lr 0.1'")
    if where == "block" and last is not None and last.type == "LBRACE" and tok.type == "RBRACE":
        return MNError("a block needs at least one layer", span,
                       hint="write layers as kernel:filters, such as block { 3:64 3:64 }")
    if where == "dense" and last is not None and last.type == "_DENSE":
        return MNError("'dense' needs at least one width", span,
                       hint="list the hidden widths, such as dense 512 or dense 512 256")
    if where == "stem" and last is not None and last.type == "_STEM":
        return MNError("'stem' needs one layer", span, hint="write it as kernel:filters, such as stem 3:16")
    if word == "ensemble" and "_NET" in expected:
        return MNError("a second 'ensemble' inside an ensemble", span,
                       hint="a file holds exactly one ensemble, and ensembles do not nest")
    after_int = bool(stack) and isinstance(stack[-1], Token) and stack[-1].type == "INT"
    if where in ("input", "block", "stem") and after_int and re.fullmatch(r"x[0-9]+", word):
        if where == "input":
            return MNError(
                "an input has at most three dimensions",
                span,
                hint="write C x H x W (3x32x32) for images, C x L (1x40) for sequences, "
                "N (40) for flat features",
            )
        return MNError(
            "a layer takes one repeat count",
            span,
            hint="write kernel:filters followed by one repeat, such as 3:64 x3",
        )
    glued = _glued_number(stack, tok, text)
    if glued is not None:
        number, gspan, whole = glued
        if whole:
            return MNError(f"'{number}' is not a whole number", gspan,
                           hint="sizes, kernels and counts are integers such as 64")
        return MNError(f"'{number}' is not a number", gspan,
                       hint="numbers are written like 64, 0.1, 5e-4 or 1e3")
    if tok.type == "NUMBER" and "INT" in expected:
        return MNError(f"'{word}' is not a whole number", span,
                       hint="sizes, kernels and counts are integers such as 64")
    if tok.type == "NAME" and "NAME" not in expected and ("_NET" in expected or "_BLOCK" in expected):
        options = _keywords(expected)
        close = suggest(word, options, words_only=True)
        guess = f"did you mean '{close}'? " if close else ""
        if "_NET" in expected:
            return MNError(f"unknown item '{word}' in the ensemble", span,
                           hint=guess + "an ensemble holds " + _ITEMS)
        if word in ("input", "classes", "data", "train", "net"):
            owner = _open_net_name(stack)
            return MNError(
                f"'{word}' inside net '{owner}': is the '}}' that closes net '{owner}' missing?",
                span,
                hint=f"'{word}' belongs to the ensemble; a net holds " + _PARTS,
            )
        return MNError(f"unknown part '{word}' in a net", span, hint=guess + "a net holds " + _PARTS)
    if "FAMILY" in expected and tok.type != "FAMILY":
        close = suggest(word, FAMILIES, words_only=True)
        guess = f"did you mean '{close}'? " if close else ""
        return MNError(f"unknown family '{word}'", span,
                       hint=guess + "a net's family is one of: " + ", ".join(FAMILIES))
    if where == "data" and "NAME" in expected:
        return MNError(f"'data' takes a dataset name, got '{word}'", span,
                       hint="such as: data cifar10")
    if expected == {"NAME"} and where in ("ensemble-header", "net-header"):
        form = "ensemble NAME { ... }" if where == "ensemble-header" else "net NAME FAMILY { ... }"
        return MNError(f"expected a name, got '{word}'", span,
                       hint=f"names are letters, digits and '_', not starting with a digit: {form}")
    close = suggest(word, _keywords(expected), words_only=True)
    if close is not None:
        hint = f"did you mean '{close}'? ({hint})"
    return MNError(f"unexpected '{word}'", span, hint=hint or None)


def _unexpected_character(exc: UnexpectedCharacters, text: str) -> MNError:
    char = exc.char
    span = Span(line=exc.line, column=exc.column, end_line=exc.line, end_column=exc.column + 1)
    pos = exc.pos_in_stream or 0
    word_before = re.search(r"[A-Za-z0-9_]*$", text[:pos])
    glued_word = pos > 0 and text[pos - 1] not in " \t\r\n"
    if char == "-":
        if glued_word and word_before and word_before.group() and not word_before.group().isdigit():
            return MNError(
                "'-' cannot appear in a name",
                span,
                hint="names are letters, digits and '_': write vgg_16, not vgg-16",
            )
        return MNError(
            "negative numbers are not allowed here",
            span,
            hint="sizes, kernels, counts and training settings are positive numbers",
        )
    if char == ".":
        return MNError(
            "unexpected '.': a whole number is needed here",
            span,
            hint="sizes, kernels and counts are integers such as 64",
        )
    if char == "=":
        return MNError("unexpected '='", span,
                       hint="write a setting as 'key value' without '=', such as 'lr 0.1'")
    if char == ",":
        return MNError("unexpected ','", span,
                       hint="separate numbers and layers with spaces, such as 'dense 512 256'")
    if char in "\"'":
        return MNError(f"unexpected quote {char}", span, hint="names and numbers are written without quotes")
    shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
    if char.isalpha() and not char.isascii():
        return MNError(f"unexpected character {shown}", span,
                       hint="names use ASCII letters, digits and '_' only")
    return MNError(f"unexpected character {shown}", span,
                   hint=_expected_text(set(exc.allowed or ())) or None)


def _syntax_error(exc: UnexpectedInput, text: str) -> MNError:
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, text)
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_character(exc, text)
    if isinstance(exc, UnexpectedEOF):  # pragma: no cover - the LALR parser reports $END tokens
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


#: The largest size, count or integer setting a spec may hold. Anything bigger fits no
#: int32, so no real network has it; refusing it here keeps every later stage (JSON readers,
#: torch index arithmetic, Python's 4300-digit limit on int()) on ordinary numbers.
MAX_INT = 2**31 - 1
#: The most layers (repeats expanded) one net may have. The deepest published nets have
#: about 1200; the bound keeps `3:16 x2000000000` from expanding into an out-of-memory.
MAX_LAYERS = 10_000
#: The most layers all nets of an ensemble may have together: fifty times the paper's V100
#: ensemble, and a bound on the work `check` does however the text multiplies its repeats.
MAX_TOTAL_LAYERS = 100_000


def _shorten(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def _int(tok: Token, what: str) -> int:
    """An INT token as an int, refusing values beyond `MAX_INT` before converting them."""
    text = str(tok).lstrip("0") or "0"
    if len(text) > len(str(MAX_INT)) or int(text) > MAX_INT:
        raise MNError(
            f"{what} {_shorten(str(tok))} is too large",
            _token_span(tok),
            hint=f"sizes and counts are at most {MAX_INT}",
        )
    return int(text)


def _number(tok: Token, key: str) -> float | int:
    text = str(tok)
    if text.isdigit() and len(text.lstrip("0")) <= 18:
        return int(text)
    # float() takes digit strings of any length (long ones become inf and are refused by the
    # checker); int() would raise on more than 4300 digits
    value = float(text)
    if key in INT_KEYS and value.is_integer():
        # `seed 1e3` means the integer 1000: keep integer settings integers in the IR
        return int(value) if abs(value) <= 2**63 else value
    return value


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.layer_count = 0  # layers of the net being built, repeats expanded
        self.total_layers = 0  # layers of the nets built so far

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
                values = []
                for t in dims.children:
                    assert isinstance(t, Token)
                    values.append(_int(t, "input dimension"))
                    if values[-1] < 1:
                        raise MNError(
                            f"every input dimension must be a positive integer, got {values[-1]}",
                            _token_span(t),
                            hint="such as input 3x32x32 (C x H x W), 1x40 (C x L) or 40 (flat)",
                        )
                fields["input"] = tuple(values)
                fields["input_span"] = _tree_span(dims)
            elif kind == "classes":
                fields["classes"] = _int(item.children[0], "the class count")  # type: ignore[arg-type]
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
            value = _number(vtok, str(key_tok)) if value_tree.data == "number" else str(vtok)
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
        ktok, ftok = tree.children[:2]
        assert isinstance(ktok, Token) and isinstance(ftok, Token)
        kernel, filters = _int(ktok, "kernel size"), _int(ftok, "filter count")
        repeat = 1
        span = _tree_span(tree)
        if len(tree.children) == 3:
            rep = tree.children[2]
            assert isinstance(rep, Tree)
            rtok = rep.children[0]
            assert isinstance(rtok, Token)
            repeat = _int(rtok, "repeat count")
            if repeat > MAX_LAYERS - self.layer_count:
                raise MNError(
                    f"repeat count x{repeat} makes this net deeper than {MAX_LAYERS} layers",
                    _tree_span(rep),
                    hint=f"a net has at most {MAX_LAYERS} layers, repeats and dense widths included",
                )
            if repeat < 1:
                raise MNError(
                    f"a repeat count must be at least 1, got x{repeat}",
                    _tree_span(rep),
                    hint=f"write '{kernel}:{filters}' for one layer, or x2, x3 ... for more",
                )
        layer = Layer(kernel=kernel, filters=filters, span=span)
        self.count_layers(repeat, span)
        return [layer] * repeat

    def count_layers(self, n: int, span: Span) -> None:
        """Add n layers (repeats expanded, or dense widths) to the net's and the ensemble's count."""
        self.layer_count += n
        self.total_layers += n
        if self.layer_count > MAX_LAYERS:
            raise _too_deep(span)
        if self.total_layers > MAX_TOTAL_LAYERS:
            raise _too_many_layers(span)

    def net(self, tree: Tree) -> Net:
        name_tok, fam_tok, *parts = tree.children
        assert isinstance(name_tok, Token) and isinstance(fam_tok, Token)
        self.layer_count = 0
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
                widths: list[Linear] = []
                for t in part.children:
                    assert isinstance(t, Token)
                    # every hidden width is a layer: the same bounds as repeats (one check per token)
                    self.count_layers(1, _token_span(t))
                    widths.append(Linear(width=_int(t, "dense width"), span=_token_span(t)))
                head = tuple(widths)
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
