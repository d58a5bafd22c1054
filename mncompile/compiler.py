"""The compile pipeline: every pass, in order, in one place, and the invariants between them.

`PIPELINE` lists the passes. Each is a plain function `Compilation -> Compilation` that adds
what it computes to the (frozen) state and calls one pass module; nothing else runs the
passes, and none is registered anywhere else. `compile_ensemble` runs them and renders the
files (`mncompile.emit`); `mncompile.writer` puts them on disk. Parsing (`mncompile.api.load`)
comes before: it needs the spec's text for its carets.

`verify(compilation)` checks the invariants the passes promise one another (the tests run it
after every pass, as torch.fx runs `Graph.lint`); `lint` lists every broken one.

>>> from mncompile.api import loads
>>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
>>> c = run_pipeline(Compilation(e), after=verify)
>>> [p.__name__ for p in PIPELINE]
['check_spec', 'assign_clusters', 'plan_hatching_tables', 'plan_shared_mothernets']
>>> [(k.mother.name, k.members) for k in c.plan.clusters], list(c.tables), list(c.shares)
([('mothernet1', ('a', 'b'))], ['a', 'b'], ['mothernet1'])
>>> lint(replace(c, tables={"a": c.tables["a"]}))
["hatching tables are for ['a'], the clusters of two or more nets have ['a', 'b']"]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from mncompile.emit import emit_files, source_name_of
from mncompile.formats.hatch_table import HatchTable, Layout
from mncompile.ir import Ensemble, Net
from mncompile.passes.check import MAX_NET_PARAMS, check_ensemble
from mncompile.passes.cluster import Plan, plan_ensemble
from mncompile.passes.hatch_plan import plan_hatching
from mncompile.passes.mothernet import Skeleton, arch_class, mother_skeleton
from mncompile.passes.share_plan import Refusal, SharePlan, plan_sharing
from mncompile.quiet_gc import paused_gc
from mncompile.shapes import infer_net


@dataclass(frozen=True)
class Compilation:
    """What the passes know so far: the spec and options, then each pass's result (None: not yet)."""

    ensemble: Ensemble
    #: the number of MotherNets asked for (None: one per architecture class)
    clusters: int | None = None
    #: the clustering seed, also the seed of the hatching maps
    seed: int = 0
    #: clusters and their MotherNets
    plan: Plan | None = None
    #: the hatching table of every member of a cluster of two or more nets, in spec order
    tables: Mapping[str, HatchTable] | None = None
    #: per cluster of two or more nets (by MotherNet name): its Shared-MotherNet, or why not
    shares: Mapping[str, SharePlan | Refusal] | None = None
    #: the most trainable parameters a net may have, ten times that the ensemble (None: no limit)
    max_params: int | None = MAX_NET_PARAMS

    def need_plan(self) -> Plan:
        if self.plan is None:
            raise AssertionError("a pass that needs the clusters ran before assign_clusters")
        return self.plan

    def need_tables(self) -> Mapping[str, HatchTable]:
        if self.tables is None:
            raise AssertionError("a pass that needs the hatching tables ran before plan_hatching_tables")
        return self.tables


Pass = Callable[[Compilation], Compilation]


def check_spec(c: Compilation) -> Compilation:
    """The language contract's semantic checks (`passes.check`); `MNError` at the first problem."""
    return replace(c, ensemble=check_ensemble(c.ensemble, c.max_params))


def assign_clusters(c: Compilation) -> Compilation:
    """Cluster the nets and build each cluster's MotherNet (`passes.cluster`, `passes.mothernet`).

    One pass, not two: the clustering's k-means centres are the MotherNets themselves.
    """
    return replace(c, plan=plan_ensemble(c.ensemble, clusters=c.clusters, seed=c.seed))


def plan_hatching_tables(c: Compilation) -> Compilation:
    """Every member's hatching table from its cluster's MotherNet (`passes.hatch_plan`).

    Clusters of one net have none: their MotherNet is the net itself.
    """
    plan, e = c.need_plan(), c.ensemble
    cluster_of = {m: k for k in plan.clusters for m in k.members}
    tables = {}
    for net in e.nets:
        k = cluster_of[net.name]
        if len(k.members) > 1:
            tables[net.name] = plan_hatching(k.mother, net, e.input, e.classes, seed=plan.seed)
    return replace(c, tables=tables)


def plan_shared_mothernets(c: Compilation) -> Compilation:
    """Each cluster of two or more nets as one Shared-MotherNet, or why not (`passes.share_plan`)."""
    plan, tables, e = c.need_plan(), c.need_tables(), c.ensemble
    shares = {k.mother.name: plan_sharing(k.mother, [e.net(m) for m in k.members], tables, e.input,
                                          e.classes)
              for k in plan.clusters if len(k.members) > 1}
    return replace(c, shares=shares)


#: the passes, in order
PIPELINE: tuple[Pass, ...] = (check_spec, assign_clusters, plan_hatching_tables, plan_shared_mothernets)


def run_pipeline(c: Compilation, passes: tuple[Pass, ...] = PIPELINE,
                 after: Callable[[Compilation], None] | None = None) -> Compilation:
    """Run `passes` in order; `after` (such as `verify`) sees the state after each one."""
    for p in passes:
        c = p(c)
        if after is not None:
            after(c)
    return c


@dataclass(frozen=True)
class Output:
    """The result of compiling one spec: the plan and every file's text."""

    plan: Plan
    files: dict[str, str]
    #: the hatching table of every member of a cluster of two or more nets
    tables: dict[str, HatchTable] = field(default_factory=dict)
    #: per cluster of two or more nets: its Shared-MotherNet plan, or why it keeps separate members
    shares: dict[str, SharePlan | Refusal] = field(default_factory=dict)


def compile_ensemble(ensemble: Ensemble, clusters: int | None = None, seed: int = 0,
                     source_name: str | None = None,
                     after: Callable[[Compilation], None] | None = None,
                     max_params: int | None = MAX_NET_PARAMS) -> Output:
    """Run the pipeline and render every file (nothing is written: see `mncompile.writer`).

    `max_params` is the parameter limit of `check_spec` (`passes.check.check_ensemble`).
    """
    with paused_gc():  # millions of objects, next to no cycles (mncompile.quiet_gc)
        c = run_pipeline(Compilation(ensemble, clusters, seed, max_params=max_params), after=after)
        plan, tables, shares = c.need_plan(), dict(c.need_tables()), dict(c.shares or {})
        files = emit_files(c.ensemble, plan, tables, shares, source_name_of(c.ensemble, source_name),
                           {"clusters": clusters, "seed": seed})
    return Output(plan, files, tables, shares)


# ------------------------------------------------------------------------------------ verify


def verify(c: Compilation) -> None:
    """Raise `AssertionError` listing every invariant the state breaks (see `lint`)."""
    problems = lint(c)
    if problems:
        raise AssertionError("the compile passes broke their invariants:\n" + "\n".join(
            f"- {p}" for p in problems))


def lint(c: Compilation) -> list[str]:
    """Every broken invariant of what the passes have made so far, one line each.

    Names are unique; every member is in exactly one cluster, of its own architecture class;
    each MotherNet is the construction of its members and no larger than any of them at any
    position; every hatching table is for the member and MotherNet the plan says, with the
    MotherNet's and the member's inferred tensors; the share plans cover the clusters.
    """
    out = list(_lint_names(c.ensemble))
    if c.plan is not None:
        out += _lint_plan(c.ensemble, c.plan)
    if c.tables is not None and c.plan is not None:
        out += _lint_tables(c.ensemble, c.plan, c.tables)
    if c.shares is not None and c.plan is not None:
        out += _lint_shares(c.plan, c.shares)
    return out


def _lint_names(e: Ensemble) -> Iterator[str]:
    twice = sorted(n for n, k in Counter(n.name for n in e.nets).items() if k > 1)
    if twice:
        yield f"net names given twice: {twice}"


def _lint_plan(e: Ensemble, plan: Plan) -> Iterator[str]:
    if plan.ensemble != e:
        yield "the plan is for another ensemble"
    if plan.g != len(plan.clusters):
        yield f"the plan says g = {plan.g} but has {len(plan.clusters)} clusters"
    if plan.total_distance != sum(k.distance for k in plan.clusters):
        yield f"total_distance {plan.total_distance} is not the sum of the clusters' distances"
    seen = Counter(m for k in plan.clusters for m in k.members)
    names = [n.name for n in e.nets]
    for m in names:
        if seen[m] != 1:
            yield f"member '{m}' is in {seen[m]} clusters, not exactly one"
    for m in sorted(set(seen) - set(names)):
        yield f"cluster member '{m}' is not a net of the ensemble"
    mothers = [k.mother.name for k in plan.clusters]
    for name in sorted(n for n, k in Counter(mothers).items() if k > 1):
        yield f"MotherNet name '{name}' is given twice"
    for name in sorted(set(mothers) & set(names)):
        yield f"MotherNet name '{name}' is also a member's name"
    for i, k in enumerate(plan.clusters):
        if k.index != i:
            yield f"cluster {i} says its index is {k.index}"
        if not k.members:
            yield f"cluster {i} has no members"
            continue
        order = [m for m in names if m in k.members]
        if list(k.members) != order:
            yield f"cluster {i}'s members {list(k.members)} are not in spec order {order}"
        nets = [e.net(m) for m in k.members if m in names]
        for n in nets:
            if arch_class(n, e.rank) != k.arch:
                yield f"member '{n.name}' is {arch_class(n, e.rank)}, its cluster {k.arch}"
        if not nets or any(n.family != k.mother.family for n in nets):
            yield f"MotherNet '{k.mother.name}' is not of its members' family"
            continue
        built = mother_skeleton(k.mother.family, [Skeleton.of(n) for n in nets])
        if Skeleton.of(k.mother) != built:
            yield f"MotherNet '{k.mother.name}' is not the construction of its members ({built})"
        for n in nets:
            yield from _no_larger(k.mother, n)


def _no_larger(m: Net, n: Net) -> Iterator[str]:
    """The construction's promise: at every position the MotherNet has, the member has as much."""
    where = f"MotherNet '{m.name}' is larger than member '{n.name}'"
    if m.stem is not None and (n.stem is None or m.stem.kernel > n.stem.kernel
                               or m.stem.filters > n.stem.filters):
        yield f"{where} at the stem"
    if len(m.blocks) > len(n.blocks):
        yield f"{where}: {len(m.blocks)} blocks against {len(n.blocks)}"
    for b, (mb, nb) in enumerate(zip(m.blocks, n.blocks, strict=False), start=1):
        if len(mb.layers) > len(nb.layers):
            yield f"{where}: block {b} has {len(mb.layers)} layers against {len(nb.layers)}"
        for i, (ml, nl) in enumerate(zip(mb.layers, nb.layers, strict=False), start=1):
            if ml.kernel > nl.kernel or ml.filters > nl.filters:
                yield (f"{where} at block {b} layer {i}: {ml.kernel}:{ml.filters} against "
                       f"{nl.kernel}:{nl.filters}")
    if len(m.widths) > len(n.widths) or any(a > b for a, b in zip(m.widths, n.widths, strict=False)):
        yield f"{where} in the head: dense {list(m.widths)} against {list(n.widths)}"


def _lint_tables(e: Ensemble, plan: Plan, tables: Mapping[str, HatchTable]) -> Iterator[str]:
    want = [n.name for n in e.nets if any(n.name in k.members and len(k.members) > 1
                                          for k in plan.clusters)]
    if list(tables) != want:
        yield (f"hatching tables are for {list(tables)}, the clusters of two or more nets have "
               f"{want}")
    for name, t in tables.items():
        if name not in want:
            continue
        k = plan.cluster_of(name)
        member = e.net(name)
        what = f"the hatching table of '{name}'"
        got = (t.member, t.mother, t.family, tuple(t.input), t.classes, t.seed)
        expected = (name, k.mother.name, member.family, tuple(e.input), e.classes, plan.seed)
        if got != expected:
            yield (f"{what} says (member, mother, family, input, classes, seed) = {got}, the plan "
                   f"{expected}")
        mother_specs = {s.name: s.shape for s in infer_net(k.mother, e.input, e.classes).tensors}
        if dict(t.mother_tensors) != mother_specs:
            diff = sorted(set(t.mother_tensors.items()) ^ set(mother_specs.items()))[:3]
            yield f"{what}: mother_tensors are not MotherNet '{k.mother.name}''s state_dict ({diff} ...)"
        specs = {s.name: (s.shape, s.kind) for s in infer_net(member, e.input, e.classes).tensors}
        keys = [x.key for x in t.entries]
        if keys != sorted(specs):
            missing, extra = sorted(set(specs) - set(keys)), sorted(set(keys) - set(specs))
            yield f"{what}: entries are not the member's tensors, sorted (missing {missing}, extra {extra})"
        for x in t.entries:
            if x.key in specs and (tuple(x.shape), x.kind) != specs[x.key]:
                yield f"{what}: {x.key} is {x.kind} {tuple(x.shape)}, the member's is {specs[x.key]}"
            if x.source is not None and x.source not in mother_specs:
                yield f"{what}: {x.key} comes from '{x.source}', which the MotherNet does not have"
            if (x.source is None) == (x.init is None):
                yield f"{what}: {x.key} needs exactly one of a source and an init"
            for dim, layout in ((0, x.rows), (1, x.cols)):
                if layout is not None:
                    yield from _lint_layout(what, x.key, dim, layout, x.shape, t)
        if t.exact != (not t.reasons) or (t.exact_train and not t.exact):
            yield f"{what}: exact={t.exact}, exact_train={t.exact_train} with {len(t.reasons)} reasons"
        if any(not x.exact for x in t.entries) and t.exact:
            yield f"{what} is exact but has entries that are not"


def _lint_layout(what: str, key: str, dim: int, layout: Layout, shape: tuple[int, ...],
                 t: HatchTable) -> Iterator[str]:
    for s in layout:
        if s.map is not None and (s.map not in t.maps or s.size != t.maps[s.map].new):
            yield f"{what}: {key} uses map '{s.map}' as {s.size} channels, the maps do not"
    if len(shape) <= dim or sum(s.size for s in layout) != shape[dim]:
        yield f"{what}: {key}'s layout of dimension {dim} does not cover its shape {tuple(shape)}"


def _lint_shares(plan: Plan, shares: Mapping[str, SharePlan | Refusal]) -> Iterator[str]:
    want = [k.mother.name for k in plan.clusters if len(k.members) > 1]
    if list(shares) != want:
        yield f"share plans are for {list(shares)}, the clusters of two or more nets are {want}"
    by_mother = {k.mother.name: k for k in plan.clusters}
    for mother, sp in shares.items():
        k = by_mother.get(mother)
        if k is None:
            continue
        if (sp.mother, tuple(sp.members)) != (mother, tuple(k.members)):
            yield f"the share plan of '{mother}' is for {sp.mother} {list(sp.members)}"
        if isinstance(sp, SharePlan):
            ids = {g.id for g in sp.groups}
            for s in sp.steps:
                for p in s.parts:
                    if p.member not in k.members or not set(p.rows) | set(p.cols) <= ids:
                        yield f"the share plan of '{mother}': step {s.name} has a part that is not its own"
