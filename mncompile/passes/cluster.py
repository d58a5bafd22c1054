"""Clustering an ensemble into g MotherNet clusters: the accuracy / training-cost knob.

>>> from mncompile.api import loads
>>> e = loads('''ensemble e { input 40 classes 10
...   net a mlp { dense 64 32 }  net b mlp { dense 64 }  net c mlp { dense 128 32 } }''')
>>> p = plan_ensemble(e, clusters=2)
>>> [(c.mother.name, c.members, c.distance) for c in p.clusters]
[('mothernet1', ('a', 'c'), 1), ('mothernet2', ('b',), 0)]

Vectors (the paper's Section 2). Every net becomes a sequence of symbols, each a
`(kernel, filters)` pair, in this order:

1. the stem, one symbol, in classes whose nets have a stem (residual, dense);
2. per block, its layers' pairs, zero-padded with `(0, 0)` to the most layers that block has in
   any net of the architecture class (a block a net lacks is all padding);
3. the head's hidden widths as `(0, width)`, zero-padded to the deepest head in the class.

So mlp vectors are the hidden widths, zero-padded. Kernels are at least 1, so a width symbol
never equals a conv symbol. The distance is the Levenshtein distance with whole pairs as symbols
(`3:64` and `36:4` are different symbols, never the strings' characters).

Clustering is balanced k-means whose centres are MotherNets: g is split across architecture
classes in proportion to their sizes (at least one each, largest remainder); within a class of n
nets and k clusters, every iteration builds each cluster's MotherNet and reassigns all nets by
their distance to the MotherNets with an optimal assignment in which every cluster gets
floor(n/k) or floor(n/k) + 1 members, exactly n mod k of them the larger size. Several seeded
restarts (k-means++ starts); the partition with the lowest total distance wins.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import Levenshtein
import numpy as np
from rapidfuzz.distance import Levenshtein as _Lev
from rapidfuzz.process import cdist

from mncompile.diagnostics import MNError
from mncompile.ir import Ensemble, Net
from mncompile.passes.mothernet import Pair, Skeleton, arch_class, mother_skeleton

#: the padding symbol of net vectors
PAD: Pair = (0, 0)
#: k-means iterations per restart before giving up on convergence
MAX_ITER = 30


@dataclass(frozen=True)
class Padding:
    """How long each part of a net vector is in one architecture class.

    >>> from mncompile.ir import Linear
    >>> Padding.of([Net(name="a", family="mlp", dense=(Linear(width=8),) * 2)])
    Padding(stem=False, blocks=(), dense=2)
    """

    stem: bool
    blocks: tuple[int, ...]
    dense: int

    @classmethod
    def of(cls, nets: Sequence[Net | Skeleton]) -> Padding:
        """The padding of a class: the longest each block and the head is among `nets`."""
        sks = [n if isinstance(n, Skeleton) else Skeleton.of(n) for n in nets]
        n_blocks = max((len(s.blocks) for s in sks), default=0)
        blocks = tuple(max(len(s.blocks[b]) for s in sks if b < len(s.blocks)) for b in range(n_blocks))
        return cls(any(s.stem is not None for s in sks), blocks, max((len(s.dense) for s in sks), default=0))


def net_vector(net: Net | Skeleton, pad: Padding) -> tuple[Pair, ...]:
    """A net as a sequence of (kernel, filters) symbols, padded to its class (module notes).

    >>> from mncompile.parse import parse_text
    >>> n = parse_text("ensemble e { input 3x8x8 classes 2 net a plain { block { 3:8 } dense 4 } }").nets[0]
    >>> net_vector(n, Padding(stem=False, blocks=(2, 1), dense=2))
    ((3, 8), (0, 0), (0, 0), (0, 4), (0, 0))
    """
    s = net if isinstance(net, Skeleton) else Skeleton.of(net)
    out: list[Pair] = []
    if pad.stem:
        out.append(s.stem if s.stem is not None else PAD)
    for b, length in enumerate(pad.blocks):
        layers = s.blocks[b] if b < len(s.blocks) else ()
        out.extend(layers)
        out.extend([PAD] * (length - len(layers)))
    out.extend((0, w) for w in s.dense)
    out.extend([PAD] * (pad.dense - len(s.dense)))
    return tuple(out)


def distance(a: Sequence[Pair], b: Sequence[Pair]) -> int:
    """Levenshtein distance between two net vectors, each whole pair one symbol.

    >>> distance([(3, 64), (3, 128)], [(3, 64), (5, 128), (3, 128)])
    1
    >>> distance([(3, 64)], [(36, 4)])
    1
    """
    # Interning to small ints makes the symbols exact: python-levenshtein would otherwise hash
    # the tuples, and distinct tuples may (rarely) share a hash.
    table: dict[Pair, int] = {}
    ia = [table.setdefault(x, len(table)) for x in a]
    ib = [table.setdefault(x, len(table)) for x in b]
    return int(Levenshtein.distance(ia, ib))


def _edit_distances(queries: Sequence[tuple[int, ...]], choices: Sequence[tuple[int, ...]]) -> np.ndarray:
    """`len(queries) x len(choices)` Levenshtein distances between encoded vectors (ints: exact)."""
    return cdist(queries, choices, scorer=_Lev.distance, dtype=np.int64, workers=1)


@dataclass(frozen=True)
class Cluster:
    """One MotherNet and the members hatched from it."""

    #: 0-based position in the plan
    index: int
    #: (family, input rank)
    arch: tuple[str, int]
    #: member net names, in spec order
    members: tuple[str, ...]
    mother: Net
    #: the sum of the members' edit distances to the MotherNet
    distance: int


@dataclass(frozen=True)
class Plan:
    """An ensemble split into clusters, each with its MotherNet."""

    ensemble: Ensemble
    g: int
    seed: int
    clusters: tuple[Cluster, ...]
    total_distance: int

    def cluster_of(self, member: str) -> Cluster:
        """The cluster a member net belongs to."""
        for c in self.clusters:
            if member in c.members:
                return c
        raise KeyError(member)


def arch_classes(ensemble: Ensemble) -> dict[tuple[str, int], list[Net]]:
    """The ensemble's nets grouped by architecture class, classes in order of first appearance.

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { } }")
    >>> {k: [n.name for n in v] for k, v in arch_classes(e).items()}
    {('mlp', 0): ['a', 'b']}
    """
    out: dict[tuple[str, int], list[Net]] = {}
    for net in ensemble.nets:
        out.setdefault(arch_class(net, ensemble.rank), []).append(net)
    return out


def apportion(g: int, sizes: Sequence[int]) -> list[int]:
    """Split g clusters over classes of these sizes: proportional, at least 1, at most the size.

    Largest remainder; ties go to the earlier class.

    >>> apportion(4, [6, 3, 1])
    [2, 1, 1]
    >>> apportion(10, [6, 3, 1])
    [6, 3, 1]
    """
    m = sum(sizes)
    if not len(sizes) <= g <= m:
        raise ValueError(f"g={g} outside {len(sizes)}..{m}")
    quota = [Fraction(g * n, m) for n in sizes]
    ks = [min(n, max(1, math.floor(q))) for n, q in zip(sizes, quota, strict=True)]
    while sum(ks) < g:
        i = max((i for i in range(len(ks)) if ks[i] < sizes[i]), key=lambda i: (quota[i] - ks[i], -i))
        ks[i] += 1
    while sum(ks) > g:
        i = min((i for i in range(len(ks)) if ks[i] > 1), key=lambda i: (quota[i] - ks[i], -i))
        ks[i] -= 1
    return ks


def balanced_assign(cost: np.ndarray) -> np.ndarray:
    """Optimal assignment of n rows to k columns with sizes floor(n/k) or floor(n/k) + 1.

    Exactly n mod k clusters get the extra member: each cluster has floor(n/k) mandatory slots and
    one optional slot, and k - n mod k dummy rows can take optional slots only.

    >>> balanced_assign(np.array([[0, 5], [0, 5], [0, 5]])).tolist()
    [0, 0, 1]
    """
    # imported here: scipy.optimize takes most of a second to import, and every CLI command
    # (check, fmt) would pay for it otherwise
    from scipy.optimize import linear_sum_assignment

    n, k = cost.shape
    q, r = divmod(n, k)
    slots = np.repeat(np.arange(k), q)
    if r:
        slots = np.concatenate([slots, np.arange(k)])
    full = cost[:, slots].astype(np.int64)
    if r:
        # A dummy on a mandatory slot must cost more than any complete real assignment.
        big = int(cost.max(initial=0)) * n + 1
        dummies = np.full((k - r, len(slots)), big, dtype=np.int64)
        dummies[:, k * q:] = 0
        full = np.vstack([full, dummies])
    rows, cols = linear_sum_assignment(full)
    labels = np.empty(n, dtype=np.int64)
    labels[rows[rows < n]] = slots[cols[rows < n]]
    return labels


class _ClassProblem:
    """One architecture class's nets, with caches shared by every restart and every k."""

    def __init__(self, family: str, nets: Sequence[Net]) -> None:
        self.family = family
        self.skeletons = [Skeleton.of(n) for n in nets]
        self.pad = Padding.of(self.skeletons)
        self.n = len(nets)
        self._symbols: dict[Pair, int] = {}
        self.vectors = [self._encode(net_vector(s, self.pad)) for s in self.skeletons]
        self._mothers: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._dists: dict[tuple[int, ...], np.ndarray] = {}
        self._pairwise: np.ndarray | None = None

    def _encode(self, vec: tuple[Pair, ...]) -> tuple[int, ...]:
        return tuple(self._symbols.setdefault(x, len(self._symbols)) for x in vec)

    def mother(self, members: tuple[int, ...]) -> Skeleton:
        return mother_skeleton(self.family, [self.skeletons[i] for i in members])

    def mother_vector(self, members: tuple[int, ...]) -> tuple[int, ...]:
        vec = self._mothers.get(members)
        if vec is None:
            vec = self._encode(net_vector(self.mother(members), self.pad))
            self._mothers[members] = vec
        return vec

    def distances(self, vec: tuple[int, ...]) -> np.ndarray:
        """Edit distance from every net of the class to one vector."""
        d = self._dists.get(vec)
        if d is None:
            d = self._dists[vec] = _edit_distances([vec], self.vectors)[0]
        return d

    def pairwise(self) -> np.ndarray:
        """The n x n matrix of edit distances between the class's nets (one C call, not n^2)."""
        if self._pairwise is None:
            self._pairwise = _edit_distances(self.vectors, self.vectors)
            for v, row in zip(self.vectors, self._pairwise, strict=True):
                self._dists.setdefault(v, row)
        return self._pairwise

    def objective(self, groups: Sequence[tuple[int, ...]]) -> int:
        return sum(int(self.distances(self.mother_vector(g))[list(g)].sum()) for g in groups)


def _groups(labels: np.ndarray, k: int) -> tuple[tuple[int, ...], ...]:
    """A labelling as clusters of member indices, ordered by their first member."""
    by: list[list[int]] = [[] for _ in range(k)]
    for i, c in enumerate(labels.tolist()):
        by[c].append(i)
    return tuple(sorted(tuple(g) for g in by))


def _kmeanspp(d: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ starts: each next centre drawn with probability proportional to distance squared."""
    n = d.shape[0]
    centres = [int(rng.integers(n))]
    nearest = d[centres[0]].astype(np.float64)
    while len(centres) < k:
        weights = nearest * nearest
        weights[centres] = 0.0
        cum = np.cumsum(weights)
        if cum[-1] > 0:
            pick = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        else:  # every other net is a copy of a centre: pick any that is not yet one
            rest = np.setdiff1d(np.arange(n), centres)
            pick = int(rest[rng.integers(len(rest))])
        centres.append(pick)
        nearest = np.minimum(nearest, d[pick])
    return centres


def _cluster_class(problem: _ClassProblem, k: int, seed: Sequence[int],
                   restarts: int) -> tuple[tuple[int, ...], ...]:
    """Balanced k-means with MotherNet centres over one class; best partition over restarts."""
    n = problem.n
    if k == 1:
        return (tuple(range(n)),)
    if k == n:
        return tuple((i,) for i in range(n))
    rng = np.random.default_rng(list(seed))
    pairwise = problem.pairwise()
    best: tuple[int, tuple[tuple[int, ...], ...]] | None = None
    # The assignment depends only on the MotherNets (the cost matrix's columns), and different
    # partitions often have the same MotherNets, in one restart and across restarts: solve each
    # distinct assignment problem once (each is O(n^3) for n nets).
    assigned: dict[tuple[tuple[int, ...], ...], np.ndarray] = {}
    for _ in range(restarts):
        labels = balanced_assign(pairwise[:, _kmeanspp(pairwise, k, rng)])
        seen: set[tuple[tuple[int, ...], ...]] = set()
        for _ in range(MAX_ITER):
            groups = _groups(labels, k)
            if groups in seen:  # converged, or cycling between partitions
                break
            seen.add(groups)
            mothers = tuple(problem.mother_vector(g) for g in groups)
            cost = np.stack([problem.distances(v) for v in mothers], axis=1)
            own = np.empty(n, dtype=np.int64)
            for c, g in enumerate(groups):
                own[list(g)] = c
            total = int(cost[np.arange(n), own].sum())
            if best is None or total < best[0]:
                best = (total, groups)
            if mothers not in assigned:
                assigned[mothers] = balanced_assign(cost)
            labels = assigned[mothers]
    assert best is not None
    return best[1]


def _validate_g(clusters: object, n_classes: int, m: int) -> int:
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)):
        raise MNError(f"the number of clusters must be a whole number, got {clusters!r}",
                      hint=f"use a value from {n_classes} to {m}")
    g = int(clusters)
    if g < n_classes:
        raise MNError(
            f"the ensemble has {n_classes} architecture class{'es' if n_classes > 1 else ''}, so it "
            f"needs at least {n_classes} cluster{'s' if n_classes > 1 else ''}; got {g}",
            hint=f"nets of different classes never share a MotherNet: use a value from {n_classes} "
            f"to {m}",
        )
    if g > m:
        raise MNError(f"the ensemble has {m} nets, so at most {m} clusters; got {g}",
                      hint=f"use a value from {n_classes} to {m} ({m}: every net trained alone)")
    return g


class Planner:
    """Plans one ensemble for many g, sharing distance and MotherNet caches (used by the sweep).

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
    >>> [p.total_distance for p in Planner(e).sweep()]
    [1, 0]
    """

    def __init__(self, ensemble: Ensemble, seed: int = 0, restarts: int = 8) -> None:
        if not ensemble.nets:
            raise MNError("the ensemble has no nets to cluster", ensemble.span)
        if restarts < 1:
            raise MNError(f"restarts must be at least 1, got {restarts}")
        if seed < 0:
            raise MNError(f"the clustering seed must be at least 0, got {seed}")
        self.ensemble, self.seed, self.restarts = ensemble, seed, restarts
        self.classes = arch_classes(ensemble)
        self.problems = [_ClassProblem(arch[0], nets) for arch, nets in self.classes.items()]
        self._partitions: dict[tuple[int, int], tuple[tuple[int, ...], ...]] = {}

    @property
    def g_range(self) -> range:
        """Every valid g: from the number of classes to the number of nets."""
        return range(len(self.classes), len(self.ensemble.nets) + 1)

    def _partition(self, c: int, k: int) -> tuple[tuple[int, ...], ...]:
        key = (c, k)
        if key not in self._partitions:
            self._partitions[key] = _cluster_class(self.problems[c], k, (self.seed, c, k),
                                                   self.restarts)
        return self._partitions[key]

    def plan(self, clusters: int | None = None) -> Plan:
        """The plan for g = `clusters` (None: one cluster per architecture class)."""
        e = self.ensemble
        g = len(self.classes) if clusters is None else _validate_g(clusters, len(self.classes),
                                                                   len(e.nets))
        ks = apportion(g, [len(v) for v in self.classes.values()])
        taken = {n.name for n in e.nets}
        out: list[Cluster] = []
        for c, ((arch, nets), k) in enumerate(zip(self.classes.items(), ks, strict=True)):
            problem = self.problems[c]
            for group in self._partition(c, k):
                name = f"mothernet{len(out) + 1}"
                while name in taken:
                    name += "_"
                taken.add(name)
                members = [nets[i] for i in group]
                if len(members) == 1:
                    mother = members[0].model_copy(update={"name": name})
                else:
                    mother = problem.mother(group).to_net(name, arch[0])
                dist = int(problem.distances(problem.mother_vector(group))[list(group)].sum())
                out.append(Cluster(len(out), arch, tuple(n.name for n in members), mother, dist))
        return Plan(e, g, self.seed, tuple(out), sum(c.distance for c in out))

    def sweep(self) -> Iterator[Plan]:
        """The plan for every valid g, in increasing order."""
        for g in self.g_range:
            yield self.plan(g)


def plan_ensemble(ensemble: Ensemble, clusters: int | None = None, seed: int = 0,
                  restarts: int = 8) -> Plan:
    """Cluster the ensemble into `clusters` MotherNet clusters (None: one per architecture class).

    Deterministic for a seed. Raises `MNError` if g is below the number of classes or above the
    number of nets.

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
    >>> p = plan_ensemble(e)
    >>> p.g, p.clusters[0].members, p.clusters[0].mother.widths
    (1, ('a', 'b'), (4,))
    """
    return Planner(ensemble, seed, restarts).plan(clusters)
