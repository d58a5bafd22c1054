"""The one namer for every Python identifier that reaches generated code.

Like torch.fx's `_Namespace`: a candidate (a spec name) is turned into a valid ASCII
identifier, kept away from keywords, builtins and the names the generated module itself
uses, and de-duplicated with predictable suffixes `_1`, `_2`, ... in the order names are
asked for. Spec text that reaches generated source any other way goes through
`py_str` (a string literal) or `comment_text` (inside a comment or docstring).

>>> ns = Namespace(MODULE_NAMES)
>>> [ns.class_name(n) for n in ("vgg16a", "Vgg16a", "mothernet1", "MODELS", "head")]
['Vgg16a', 'Vgg16a_1', 'Mothernet1', 'MODELS_1', 'Head_1']
"""

from __future__ import annotations

import builtins
import keyword
import re
from collections.abc import Hashable, Iterable

#: names a generated models.py defines or imports itself; spec names must never shadow them
MODULE_NAMES: frozenset[str] = frozenset({
    "torch", "nn", "F", "MODELS",
    "ConvBN", "PlainBlock", "ResidualUnit", "ResidualStage", "DenseLayer", "DenseBlock",
    "Transition", "Head",
})

#: keywords, soft keywords and builtins: never a generated identifier
PYTHON_NAMES: frozenset[str] = frozenset(
    set(keyword.kwlist) | set(getattr(keyword, "softkwlist", ())) | set(dir(builtins))
)

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]")


def to_camel(name: str) -> str:
    """CamelCase of a spec name: `vgg16_v001` -> `Vgg16V001`, `wrn28_10` -> `Wrn28_10`.

    Underscores between two digits stay, so that `wrn28_10` and `wrn2810` do not merge.

    >>> to_camel("densenet40_k12"), to_camel("mothernet1"), to_camel("__x")
    ('Densenet40K12', 'Mothernet1', 'X')
    """
    parts = [p for p in _NOT_IDENT.sub("_", name).split("_") if p]
    out = ""
    for p in parts:
        if out and out[-1].isdigit() and p[0].isdigit():
            out += "_"
        out += p[0].upper() + p[1:]
    return out


def to_identifier(name: str) -> str:
    """`name` made into a valid ASCII identifier (not yet checked against anything).

    >>> to_identifier("a-b"), to_identifier("9lives"), to_identifier("")
    ('a_b', 'n_9lives', 'n')
    """
    ident = _NOT_IDENT.sub("_", name)
    if not ident or ident[0].isdigit():
        ident = "n_" + ident if ident else "n"
    return ident


class Namespace:
    """Hands out unique identifiers: keywords, builtins, `reserved` and earlier names avoided.

    `casefold=True` also treats names that differ only in case as the same (for file names
    on case-insensitive file systems). Asking again with the same `obj` returns the same name.
    """

    def __init__(self, reserved: Iterable[str] = (), *, casefold: bool = False, python: bool = True) -> None:
        self._casefold = casefold
        # python=False: names that never become Python identifiers (file names) need not avoid
        # builtins, whose list depends on the interpreter (a notebook adds `display`)
        avoid = (PYTHON_NAMES if python else frozenset()) | set(reserved)
        self._used: set[str] = {self._key(n) for n in avoid}
        self._by_obj: dict[Hashable, str] = {}

    def _key(self, name: str) -> str:
        return name.casefold() if self._casefold else name

    def create_name(self, candidate: str, obj: Hashable | None = None) -> str:
        """A fresh identifier based on `candidate`; the same one again for the same `obj`."""
        if obj is not None and obj in self._by_obj:
            return self._by_obj[obj]
        base = to_identifier(candidate)
        name, i = base, 0
        while self._key(name) in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(self._key(name))
        if obj is not None:
            self._by_obj[obj] = name
        return name

    def class_name(self, spec_name: str, obj: Hashable | None = None) -> str:
        """A class name for a net: CamelCase of the spec name, made unique."""
        return self.create_name(to_camel(spec_name) or "Net", obj)


def py_str(text: str) -> str:
    """A Python string literal for `text`, double-quoted where that needs no escaping.

    >>> py_str("vgg16"), py_str('a"b'), py_str("a\\nb")
    ('"vgg16"', '\\'a"b\\'', '"a\\\\nb"')
    """
    r = repr(text)
    if '"' not in text and "'" not in text:
        return '"' + r[1:-1] + '"'
    return r


def comment_text(text: str) -> str:
    r"""`text` made safe inside a `#` comment or a triple-quoted docstring.

    Newlines, backslashes, double quotes and non-ASCII characters come out escaped, so the
    text can neither end the comment or docstring nor change what the code around it means,
    and a docstring still reads back as `text`.

    >>> print(comment_text('say "hi"\n\\ é'))
    say \"hi\"\n\\ \xe9
    """
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])
    return "".join(out)
