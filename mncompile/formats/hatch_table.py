"""The hatching table (`hatch/<member>.json`): its data model and its JSON text.

Made at compile time by `mncompile.passes.hatch_plan.plan_hatching`, applied at run time by
`mncompile.runtime.hatch`; the format is documented in `docs/hatch-tables.md`. This module
imports neither torch nor the compiler's IR, so both sides can read it.

>>> fc = (Segment(map="fc", at=0, size=3),)
>>> t = HatchTable(member="n", mother="m", family="mlp", input=(4,), classes=2, seed=0,
...                exact=True, exact_train=True, reasons=(),
...                maps={"fc": WidenMap(old=2, new=3, extra=(1,))},
...                mother_tensors={"o.weight": (2, 2)},
...                entries=(Entry("o.weight", (2, 3), "param", source="o.weight", cols=fc),))
>>> text = table_dumps(t)
>>> print(text, end="")
{
 "bn_eps": 1e-05,
 "classes": 2,
 "entries": [
  {"cols": [{"at": 0, "map": "fc"}], "from": "o.weight", "key": "o.weight", "kind": "param", "shape": [2, 3]}
 ],
 "exact": true,
 "exact_train": true,
 "family": "mlp",
 "input": [4],
 "maps": {
  "fc": {"extra": [1], "old": 2}
 },
 "member": "n",
 "mother": "m",
 "mother_tensors": {
  "o.weight": [2, 2]
 },
 "reasons": [],
 "schema_version": 1,
 "seed": 0
}
>>> table_from_json(json.loads(text)) == t, t.entry("o.weight").cols == fc
(True, True)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Literal

from mncompile.diagnostics import MNError

SCHEMA_VERSION = 1
#: the BatchNorm epsilon of the generated modules (torch's default)
BN_EPS = 1e-5

Init = Literal["identity", "zeros", "ones", "bn_var", "he_normal"]
INITS: tuple[str, ...] = ("identity", "zeros", "ones", "bn_var", "he_normal")


@dataclass(frozen=True)
class WidenMap:
    """A widening map g over one channel dimension: new unit j -> old unit g(j).

    g(j) = j for j < min(old, new); `extra[j - old]` for the new units. When new < old the
    map keeps the first `new` units (a narrowing, never exact for a consumer).

    >>> g = WidenMap(old=3, new=5, extra=(0, 0))
    >>> g.index(), g.counts()
    ([0, 1, 2, 0, 0], [3, 1, 1])
    """

    old: int
    new: int
    extra: tuple[int, ...] = ()

    def index(self) -> list[int]:
        """g(j) for every new unit j."""
        return list(range(min(self.old, self.new))) + list(self.extra)

    def counts(self) -> list[int]:
        """c(i): how many new units copy old unit i."""
        c = [0] * self.old
        for i in self.index():
            c[i] += 1
        return c


@dataclass(frozen=True)
class Segment:
    """A run of channels along one dimension of a member tensor.

    With a map: `size` member channels that copy the MotherNet channels `at + g(j)`.
    Without (`map is None`): `size` new channels that the MotherNet has no source for.
    """

    map: str | None
    at: int
    size: int


Layout = tuple[Segment, ...]


@dataclass(frozen=True)
class Entry:
    """How one member tensor is made.

    `source` (a MotherNet key) or `init` gives the starting tensor; `init="identity"` is a
    virtual MotherNet tensor of shape `src_shape` (delta at the centre tap, or an identity
    matrix). `rows` gathers dim 0 with its maps (new segments get `fill`: a number or
    `"he_normal"`); `cols` gathers dim 1 and divides each column by its replica count (new
    segments get zero columns); `kernel` (from, to) pads centred (or crops). Without a
    source, `init` fills the member's shape directly.
    """

    key: str
    shape: tuple[int, ...]
    kind: Literal["param", "buffer"]
    source: str | None = None
    init: str | None = None
    src_shape: tuple[int, ...] | None = None
    rows: Layout | None = None
    cols: Layout | None = None
    kernel: tuple[int, int] | None = None
    fill: float | str | None = None
    exact: bool = True
    reason: str | None = None


@dataclass(frozen=True)
class HatchTable:
    """Everything the runtime needs to hatch one member from its MotherNet."""

    member: str
    mother: str
    family: str
    input: tuple[int, ...]
    classes: int
    seed: int
    exact: bool
    exact_train: bool
    reasons: tuple[str, ...]
    maps: dict[str, WidenMap]
    mother_tensors: dict[str, tuple[int, ...]]
    entries: tuple[Entry, ...]
    bn_eps: float = BN_EPS
    _by_key: dict[str, Entry] = field(default_factory=dict, compare=False, repr=False)

    def entry(self, key: str) -> Entry:
        """The entry of member tensor `key`."""
        if not self._by_key:
            self._by_key.update({e.key: e for e in self.entries})
        return self._by_key[key]


# ----------------------------------------------------------------------------- serialisation


def _layout_json(layout: Layout) -> list[dict[str, Any]]:
    return [{"map": s.map, "at": s.at} if s.map is not None else {"new": s.size} for s in layout]


def _layout_from(data: list[dict[str, Any]], maps: dict[str, WidenMap]) -> Layout:
    out = []
    for s in data:
        if "new" in s:
            out.append(Segment(map=None, at=0, size=int(s["new"])))
        else:
            out.append(Segment(map=s["map"], at=int(s["at"]), size=maps[s["map"]].new))
    return tuple(out)


def table_to_json(table: HatchTable) -> dict[str, Any]:
    """A JSON-ready dict: maps store only the old size and the extra units' sources.

    >>> t = HatchTable(member="n", mother="m", family="mlp", input=(4,), classes=2, seed=0,
    ...                exact=True, exact_train=True, reasons=(),
    ...                maps={"fc": WidenMap(old=2, new=3, extra=(1,))}, mother_tensors={}, entries=())
    >>> d = table_to_json(t)
    >>> d["schema_version"], d["maps"]["fc"]
    (1, {'old': 2, 'extra': [1]})
    """
    entries = []
    for e in table.entries:
        d: dict[str, Any] = {"key": e.key, "shape": list(e.shape), "kind": e.kind}
        if e.source is not None:
            d["from"] = e.source
        if e.init is not None:
            d["init"] = e.init
        if e.src_shape is not None:
            d["src_shape"] = list(e.src_shape)
        if e.rows is not None:
            d["rows"] = _layout_json(e.rows)
        if e.cols is not None:
            d["cols"] = _layout_json(e.cols)
        if e.kernel is not None:
            d["kernel"] = list(e.kernel)
        if e.fill is not None:
            d["fill"] = e.fill
        if not e.exact:
            d["exact"] = False
            d["reason"] = e.reason
        entries.append(d)
    maps: dict[str, Any] = {}
    for name, g in table.maps.items():
        md: dict[str, Any] = {"old": g.old, "extra": list(g.extra)}
        if g.new < g.old:
            md["new"] = g.new
        maps[name] = md
    return {
        "schema_version": SCHEMA_VERSION,
        "member": table.member,
        "mother": table.mother,
        "family": table.family,
        "input": list(table.input),
        "classes": table.classes,
        "seed": table.seed,
        "bn_eps": table.bn_eps,
        "exact": table.exact,
        "exact_train": table.exact_train,
        "reasons": list(table.reasons),
        "maps": maps,
        "mother_tensors": {k: list(v) for k, v in table.mother_tensors.items()},
        "entries": entries,
    }


def table_from_json(data: dict[str, Any]) -> HatchTable:
    """The inverse of `table_to_json`; raises `MNError` on a table it cannot read."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise MNError(f"hatch table has schema_version {version!r}; this mncompile reads "
                      f"version {SCHEMA_VERSION}",
                      hint="regenerate the tables with this version of mncompile")
    try:
        maps = {}
        for name, md in data["maps"].items():
            extra = tuple(int(i) for i in md["extra"])
            old = int(md["old"])
            maps[name] = WidenMap(old=old, new=int(md.get("new", old + len(extra))), extra=extra)
        entries = []
        for d in data["entries"]:
            kernel = d.get("kernel")
            src_shape = d.get("src_shape")
            if d.get("init") is not None and d["init"] not in INITS:
                raise ValueError(f"unknown init {d['init']!r} for {d['key']}")
            entries.append(Entry(
                key=d["key"], shape=tuple(d["shape"]), kind=d["kind"], source=d.get("from"),
                init=d.get("init"), src_shape=tuple(src_shape) if src_shape is not None else None,
                rows=_layout_from(d["rows"], maps) if "rows" in d else None,
                cols=_layout_from(d["cols"], maps) if "cols" in d else None,
                kernel=(int(kernel[0]), int(kernel[1])) if kernel is not None else None,
                fill=d.get("fill"), exact=bool(d.get("exact", True)), reason=d.get("reason"),
            ))
        return HatchTable(
            member=data["member"], mother=data["mother"], family=data["family"],
            input=tuple(data["input"]), classes=int(data["classes"]), seed=int(data["seed"]),
            exact=bool(data["exact"]), exact_train=bool(data["exact_train"]),
            reasons=tuple(data["reasons"]), maps=maps,
            mother_tensors={k: tuple(v) for k, v in data["mother_tensors"].items()},
            entries=tuple(entries), bn_eps=float(data.get("bn_eps", BN_EPS)),
        )
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise MNError(f"malformed hatch table: {err!r}",
                      hint="regenerate the tables with `mncompile`") from None


def _encoder() -> Callable[[Any], str]:
    """`json.dumps(v, sort_keys=True)`, with one encoder for every line (a table has thousands).

    `JSONEncoder.encode` builds a new C encoder for each value; this builds it once (without
    the circular-reference check, which a table's plain data never needs: same text).
    """
    if c_make_encoder is None:  # pragma: no cover - CPython has the C encoder
        return json.JSONEncoder(sort_keys=True).encode
    encode = c_make_encoder(None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ",
                            ", ", True, False, True)
    return lambda value: "".join(encode(value, 0))


_sorted_json = _encoder()


def table_dumps(table: HatchTable) -> str:
    """The table as deterministic JSON text: one line per entry, map and MotherNet tensor.

    >>> t = HatchTable(member="n", mother="m", family="mlp", input=(4,), classes=2, seed=0,
    ...                exact=True, exact_train=True, reasons=(), maps={}, mother_tensors={}, entries=())
    >>> text = table_dumps(t)
    >>> table_from_json(json.loads(text)) == t, text.splitlines()[1]
    (True, ' "bn_eps": 1e-05,')
    """
    data = table_to_json(table)
    lines = ["{"]
    items = sorted(data.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if key in ("entries", "maps", "mother_tensors") and value:
            if isinstance(value, list):
                rows = [_sorted_json(v) for v in value]
                open_, close = "[", "]"
            else:
                rows = [f"{json.dumps(k)}: {_sorted_json(v)}" for k, v in sorted(value.items())]
                open_, close = "{", "}"
            lines.append(f" {json.dumps(key)}: {open_}")
            lines.extend(f"  {r}," for r in rows[:-1])
            lines.append(f"  {rows[-1]}")
            lines.append(f" {close}{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {_sorted_json(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def load_table(table: HatchTable | Mapping[str, Any] | str | Path) -> HatchTable:
    """A table from a `HatchTable`, its JSON dict, or the path of its JSON file (`MNError` if unreadable).

    >>> t = HatchTable(member="n", mother="m", family="mlp", input=(4,), classes=2, seed=0,
    ...                exact=True, exact_train=True, reasons=(), maps={}, mother_tensors={}, entries=())
    >>> load_table(t) is t, load_table(table_to_json(t)) == t
    (True, True)
    >>> load_table("no/such/table.json")
    Traceback (most recent call last):
    ...
    mncompile.diagnostics.MNError: error: hatch table 'no/such/table.json' does not exist
      = help: compile the spec first: mncompile compile <spec>.mnet
    """
    if isinstance(table, HatchTable):
        return table
    if isinstance(table, (str, Path)):
        path = Path(table)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MNError(f"hatch table '{path}' does not exist",
                          hint="compile the spec first: mncompile compile <spec>.mnet") from None
        except json.JSONDecodeError as err:
            raise MNError(f"hatch table '{path}' is not valid JSON: {err}") from None
        return table_from_json(data)
    return table_from_json(dict(table))
