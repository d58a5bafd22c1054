"""`plan.json` as the runtime reads it: the ensemble's members and clusters, with named fields.

The compiler writes the whole plan (`mncompile.plan.plan_to_json`, docs/plan-schema.md); the
runtime needs only part of it, and reads that part here: `read_plan(data, where)` checks it
and returns a `PlanFile`, or raises `MNError` naming the file. No torch, no IR.

>>> p = read_plan({"schema_version": 1, "ensemble": "e", "input": [8], "classes": 2, "g": 1, "seed": 0,
...                "members": [{"name": "a", "params": 50, "macs": 40},
...                            {"name": "b", "params": 70, "macs": 60}],
...                "clusters": [{"family": "mlp", "members": ["a", "b"],
...                              "mother": {"name": "mothernet1", "params": 40, "macs": 32}}]}, "plan.json")
>>> p.member_names, p.clusters[0].mother.name, p.macs["mothernet1"], p.family_of["b"]
(('a', 'b'), 'mothernet1', 32, 'mlp')

Where a net's entry has its layers (`family`, `stem`, `blocks`, `dense`: every MotherNet, and
every member of a plan this mncompile writes), `nets` holds them as a `NetStructure`; `digest`
identifies the plan (a SHA-256 of its canonical JSON), so that a file made from it can say
which plan it came from.

>>> q = read_plan({"schema_version": 1, "ensemble": "e", "input": [8], "classes": 2,
...                "members": [{"name": "a", "params": 50, "family": "mlp", "stem": None, "blocks": [],
...                             "dense": [4]}],
...                "clusters": [{"family": "mlp", "members": ["a"], "mother": {"name": "m", "params": 50}}]},
...               "plan.json")
>>> q.nets["a"], "m" in q.nets, len(q.digest)
(NetStructure(family='mlp', stem=None, blocks=(), dense=(4,)), False, 64)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mncompile.diagnostics import MNError

#: the plan.json schema this module reads (mncompile.plan writes it)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class NetEntry:
    """A member or MotherNet: its name, parameters and forward MACs per example."""

    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class NetStructure:
    """A net's layers: its family, stem `(kernel, filters)` or None, blocks of `(kernel, filters)`
    layers (repeats expanded), and the head's hidden widths (docs/plan-schema.md)."""

    family: str
    stem: tuple[int, int] | None
    blocks: tuple[tuple[tuple[int, int], ...], ...]
    dense: tuple[int, ...]


@dataclass(frozen=True)
class ClusterEntry:
    """One cluster: its MotherNet, its members in spec order, their family."""

    mother: NetEntry
    members: tuple[str, ...]
    family: str

    @property
    def hatched(self) -> bool:
        """Whether its members hatch from a MotherNet (a cluster of one net trains that net itself)."""
        return len(self.members) > 1


@dataclass(frozen=True)
class PlanFile:
    """The part of plan.json the runtime uses."""

    ensemble: str
    input: tuple[int, ...]
    classes: int
    g: int | None
    seed: int | None
    members: tuple[NetEntry, ...]
    clusters: tuple[ClusterEntry, ...]
    #: the layers of every net whose entry has them (MotherNets and members), by name
    nets: Mapping[str, NetStructure] = field(default_factory=dict)
    #: SHA-256 of the plan's canonical JSON (sorted keys, no spaces): which plan this is
    digest: str = ""
    _by_name: dict[str, NetEntry] = field(default_factory=dict, compare=False, repr=False)

    @property
    def member_names(self) -> tuple[str, ...]:
        """The members, in spec order."""
        return tuple(m.name for m in self.members)

    def member(self, name: str) -> NetEntry:
        if not self._by_name:
            self._by_name.update({m.name: m for m in self.members})
        return self._by_name[name]

    @property
    def macs(self) -> dict[str, int]:
        """Forward MACs per example of every member and MotherNet."""
        out = {m.name: m.macs for m in self.members}
        for c in self.clusters:
            out.setdefault(c.mother.name, c.mother.macs)
        return out

    @property
    def family_of(self) -> dict[str, str]:
        """Each member's family (mlp, plain, residual, dense)."""
        return {m: c.family for c in self.clusters for m in c.members}


def _net(d: Mapping[str, Any]) -> NetEntry:
    return NetEntry(name=str(d["name"]), params=int(d["params"]), macs=int(d.get("macs") or 0))


def _pair(v: Any) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"a layer is [kernel, filters], not {v!r}")
    return (_int(v[0]), _int(v[1]))


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{v!r} is not a whole number")
    return v


def _structure(d: Mapping[str, Any], family: Any) -> NetStructure:
    stem = d["stem"]
    return NetStructure(family=str(family), stem=None if stem is None else _pair(stem),
                        blocks=tuple(tuple(_pair(x) for x in b) for b in d["blocks"]),
                        dense=tuple(_int(w) for w in d["dense"]))


def plan_digest(data: Any) -> str:
    """SHA-256 of a plan.json document's canonical JSON: the same for the same plan, whatever its layout."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_plan(data: Any, where: str) -> PlanFile:
    """The runtime's view of a plan.json document; MNError naming `where` for one it cannot read."""
    hint = "compile the spec again"
    if not isinstance(data, dict):
        raise MNError(f"'{where}' is not a plan this mncompile can read (not a JSON object)", hint=hint)
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise MNError(f"'{where}' has schema_version {version!r}; this mncompile reads {SCHEMA_VERSION}",
                      hint=hint)
    try:
        members = tuple(_net(m) for m in data["members"])
        clusters = tuple(ClusterEntry(mother=_net(c["mother"]), members=tuple(str(m) for m in c["members"]),
                                      family=str(c["family"])) for c in data["clusters"])
        # the layers, where the entries have them (a plan written before members had them: none)
        nets: dict[str, NetStructure] = {}
        for c in data["clusters"]:
            mother = c["mother"]
            if "blocks" in mother:
                nets[str(mother["name"])] = _structure(mother, mother.get("family", c["family"]))
        for m in data["members"]:
            if "blocks" in m:
                nets[str(m["name"])] = _structure(m, m["family"])
        plan = PlanFile(ensemble=str(data.get("ensemble", "ensemble")),
                        input=tuple(int(d) for d in data["input"]), classes=int(data["classes"]),
                        g=None if data.get("g") is None else int(data["g"]),
                        seed=None if data.get("seed") is None else int(data["seed"]),
                        members=members, clusters=clusters, nets=nets, digest=plan_digest(data))
    except (KeyError, TypeError, ValueError) as err:
        raise MNError(f"'{where}' is not a plan this mncompile can read ({type(err).__name__}: {err})",
                      hint=hint) from None
    names = plan.member_names
    clustered = [m for c in plan.clusters for m in c.members]
    if len(set(names)) != len(names) or sorted(clustered) != sorted(names):
        raise MNError(f"'{where}' is inconsistent: every member must be in exactly one cluster", hint=hint)
    if not plan.input or min(plan.input) < 1 or plan.classes < 1:
        raise MNError(f"'{where}' has an invalid input shape or class count", hint=hint)
    return plan
