"""Why a member does not hatch exactly, where, and what to change in the spec: the hints, once.

A hatching table (`mncompile.formats.hatch_table.HatchTable`) that is not exact lists its
`reasons`, one line each, starting with the member part or tensor that breaks exactness:
``block3: the MotherNet has no block 3; its 2x max-pool is not an identity``. This module reads
those lines (and nothing else) and says how to fix them:

- `fix_for(reason)`: a concrete change of the spec (or of `--clusters`) that makes it exact;
- `where(place)`: the place in words (``block3.unit1`` is "block 3, unit 1");
- `not_exact(tables)`: a `NotExact` record per reason of every table that is not exact;
- `format_warning(w)` and `warning_to_json(w)`: how `mncompile SPEC`, `check` and `plan` show
  them (text, and the `warnings` field of `--json`).

It imports neither torch nor the compiler's IR, so the runtime may use it too.

>>> r = "block3: the MotherNet has no block 3; its 2x max-pool is not an identity"
>>> split_reason(r)
('block3', 'the MotherNet has no block 3; its 2x max-pool is not an identity')
>>> where("block3"), where("head.fc1"), where("block1.layer2.conv.weight")
('block 3', 'hidden layer 1 of the dense head', 'block 1, layer 2')
>>> fix_for(r).startswith("move the layers of block 3 into block 2")
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: the end of every hint: the one change that always works, at the cost of training more nets
MORE_CLUSTERS = "or use more MotherNets (--clusters G; `mncompile plan --clusters G` shows the clusters)"


class _Table(Protocol):
    """What `not_exact` reads of a hatching table (`formats.hatch_table.HatchTable`)."""

    @property
    def member(self) -> str: ...
    @property
    def mother(self) -> str: ...
    @property
    def exact(self) -> bool: ...
    @property
    def reasons(self) -> tuple[str, ...]: ...


def split_reason(reason: str) -> tuple[str, str]:
    """(place, what is wrong) of a table's reason: the text before the first ': ' and after it.

    >>> split_reason("head.fc1: an added identity layer here sees raw inputs")
    ('head.fc1', 'an added identity layer here sees raw inputs')
    >>> split_reason("something else")
    ('', 'something else')
    """
    place, sep, detail = reason.partition(": ")
    if not sep or " " in place:
        return "", reason
    return place, detail


_PART = re.compile(r"^(?:(?P<block>block)(?P<b>\d+)(?:\.(?P<kind>layer|unit)(?P<i>\d+))?"
                   r"|(?P<transition>transition)(?P<t>\d+)|head\.fc(?P<fc>\d+)|(?P<stem>stem)"
                   r"|(?P<head>head))(?P<rest>\..*)?$")


def where(place: str) -> str:
    """A place of a reason (a part or tensor name of docs/parameter-names.md) in the spec's words.

    >>> where("block2.unit1.shortcut"), where("transition1"), where("stem.conv.weight")
    ('block 2, unit 1 (its shortcut)', 'the transition after block 1', 'the stem')
    """
    m = _PART.match(place)
    if m is None:
        return place or "the net"
    rest = m.group("rest") or ""
    if m.group("block"):
        text = f"block {m.group('b')}"
        if m.group("kind"):
            text += f", {m.group('kind')} {m.group('i')}"
        if rest.startswith(".shortcut"):
            text += " (its shortcut)"
        return text
    if m.group("transition"):
        return f"the transition after block {m.group('t')}"
    if m.group("fc"):
        return f"hidden layer {m.group('fc')} of the dense head"
    if m.group("stem"):
        return "the stem"
    return "the head"


# (pattern on the whole reason, hint template with the groups as {names}); the first match wins
_HINTS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"^block(?P<b>\d+): the MotherNet has no block (?P=b);"),
     lambda m: (f"move the layers of block {m['b']} into block {int(m['b']) - 1} (layers added to a "
                f"block the MotherNet has hatch exactly), or give the other members of the cluster a "
                f"block {m['b']} too, {MORE_CLUSTERS}")),
    (re.compile(r"^block(?P<b>\d+): the MotherNet has no stage (?P=b);"),
     lambda m: (f"move the units of block {m['b']} into block {int(m['b']) - 1}, at its width (units "
                f"added to a stage the MotherNet has hatch exactly), or give the other members of the "
                f"cluster a block {m['b']} too, {MORE_CLUSTERS}")),
    (re.compile(r"^transition(?P<b>\d+): the MotherNet has no transition"),
     lambda m: (f"move the layers of block {int(m['b']) + 1} into block {m['b']} (layers added to a "
                f"dense block the MotherNet has hatch exactly), or give the other members of the "
                f"cluster a block {int(m['b']) + 1} too, {MORE_CLUSTERS}")),
    (re.compile(r"^head\.fc(?P<i>\d+): an added identity layer of \d+ units cannot carry the "
                r"MotherNet's (?P<c>\d+) channels"),
     # the MotherNet's last hidden layer is as narrow as any member's remaining ones (the tail
     # rule), so this happens only when it has no hidden layer: a member of the cluster has none
     lambda m: ("the MotherNet has no hidden layer because a member of the cluster has none: give "
                f"every member of the cluster a hidden layer (dense W), or make hidden layer {m['i']} "
                f"of this net at least {m['c']} wide (it starts as an identity that passes the "
                f"MotherNet's {m['c']} features on), {MORE_CLUSTERS}")),
    (re.compile(r"^block(?P<b>\d+)\.layer(?P<l>\d+): an added identity layer of \d+ units cannot "
                r"carry the MotherNet's (?P<c>\d+) channels"),
     lambda m: (f"give layer {m['l']} of block {m['b']} at least {m['c']} filters (it starts as an "
                f"identity that passes the MotherNet's {m['c']} channels on), {MORE_CLUSTERS}")),
    (re.compile(r"^block(?P<b>\d+)\.unit\d+\.shortcut: \d+ channels cannot carry the MotherNet's "
                r"(?P<c>\d+)"),
     lambda m: (f"make block {m['b']} at least {m['c']} wide, or move its units into block "
                f"{int(m['b']) - 1}, {MORE_CLUSTERS}")),
    (re.compile(r"^head\.fc1: an added identity layer here sees raw inputs"),
     lambda m: ("the MotherNet has no hidden layer because a member of the cluster has none, and an "
                "identity layer on raw features that may be negative is not exact: give every member "
                f"of the cluster a hidden layer (dense W), {MORE_CLUSTERS}")),
    (re.compile(r"^(?P<p>[\w.]+): an added identity layer here sees raw inputs"),
     lambda m: (f"an identity layer on raw, possibly negative inputs is not exact: make {where(m['p'])} "
                "at least as wide as the MotherNet's first layer, with a kernel at least as large, so "
                f"that the MotherNet's first layer maps onto it, {MORE_CLUSTERS}")),
    (re.compile(r"^(?P<p>[\w.]+): kernel \d+ is smaller than the MotherNet's (?P<k>\d+)"),
     lambda m: (f"give {where(m['p'])} a kernel of at least {m['k']} (a larger kernel is padded "
                f"exactly, a smaller one crops the MotherNet's), {MORE_CLUSTERS}")),
    (re.compile(r"^block(?P<b>\d+)\.unit(?P<u>\d+): the member's identity shortcut replaces the "
                r"MotherNet's projection"),
     lambda m: ("the MotherNet changes the width here (a projection shortcut) and this net does not "
                "(an identity): make what feeds this unit (the stem, or the block before) as wide as "
                f"block {m['b']} in every member of the cluster, {MORE_CLUSTERS}")),
)


def fix_for(reason: str) -> str:
    """What to change in the spec so that the hatching this reason is about becomes exact.

    >>> fix_for("block1.layer2: an added identity layer of 8 units cannot carry the MotherNet's 16 "
    ...         "channels").startswith("give layer 2 of block 1 at least 16 filters")
    True
    >>> fix_for("a reason of a later version").startswith("make this net grow from its MotherNet")
    True
    """
    for pattern, hint in _HINTS:
        m = pattern.search(reason)
        if m is not None:
            return hint(m)
    return ("make this net grow from its MotherNet by wider layers, larger kernels and layers added "
            f"inside its blocks only (`mncompile plan` shows the MotherNet), {MORE_CLUSTERS}")


@dataclass(frozen=True)
class NotExact:
    """One reason why one member does not start as its MotherNet's function, and the fix."""

    member: str
    mother: str
    #: the member part or tensor the table names (`block3`, `head.fc1`, ...), '' when none
    place: str
    #: the table's reason, as the table says it
    reason: str
    hint: str
    #: the position in the spec of the part the reason is about, when known
    line: int | None = None
    column: int | None = None

    @property
    def where(self) -> str:
        return where(self.place)

    @property
    def detail(self) -> str:
        return split_reason(self.reason)[1]


#: (member, place) -> (line, column) in the spec, or None
Locate = Callable[[str, str], tuple[int, int] | None]


def not_exact(tables: Mapping[str, _Table], locate: Locate | None = None) -> list[NotExact]:
    """A record for every reason of every table that is not exact, in the tables' order.

    >>> from types import SimpleNamespace as T
    >>> t = T(member="b", mother="mothernet1", exact=False,
    ...       reasons=("block2: the MotherNet has no block 2; its 2x max-pool is not an identity",))
    >>> [(w.member, w.place, w.where) for w in not_exact({"b": t})]
    [('b', 'block2', 'block 2')]
    """
    out = []
    for table in tables.values():
        if table.exact:
            continue
        for reason in table.reasons or ("the table says it is not exact",):
            place = split_reason(reason)[0]
            at = locate(table.member, place) if locate is not None else None
            out.append(NotExact(table.member, table.mother, place, reason, fix_for(reason),
                                *(at or (None, None))))
    return out


def format_warning(w: NotExact, source: str | None = None) -> str:
    """`file:line:col: warning: ...` (as errors are shown), then `  = help: ` and the fix.

    >>> print(format_warning(NotExact("b", "m", "block2", "block2: it is not", "do this", 3, 9), "e.mnet"))
    e.mnet:3:9: warning: member 'b' does not hatch exactly from its MotherNet 'm' at block 2: it is not
      = help: do this
    """
    at = source or "<input>"
    if w.line is not None and w.column is not None:
        at = f"{at}:{w.line}:{w.column}"
    shown = w.where + (f" [{w.place}]" if "." in w.place else "")
    return (f"{at}: warning: member '{w.member}' does not hatch exactly from its MotherNet "
            f"'{w.mother}' at {shown}: {w.detail}\n  = help: {w.hint}")


def warning_to_json(w: NotExact) -> dict[str, Any]:
    """The `warnings` entry of `mncompile check --json` and `mncompile plan --json`."""
    return {"member": w.member, "mother": w.mother, "place": w.place, "where": w.where,
            "reason": w.reason, "hint": w.hint, "line": w.line, "column": w.column}
