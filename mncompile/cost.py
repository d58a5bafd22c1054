"""The cost model: parameters and forward MACs per net, and an estimate of training cost for a plan.

>>> from mncompile.api import loads
>>> from mncompile.passes.cluster import plan_ensemble
>>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } net b mlp { dense 6 } }")
>>> est = estimate(plan_ensemble(e))
>>> est.mothers, est.hatched, est.independent
(8000, 6000, 20000)
>>> round(est.ratio, 3)
0.7

It is an estimate, in forward MACs per example times epochs, with each phase taken at its epoch
cap (`max_epochs` for MotherNets and independently trained nets, `hatched_max_epochs` for hatched
members): it ignores early stopping, data loading and the backward pass (which scales with the
forward pass, so the ratio is unaffected by it). A cluster of one net needs no hatching: its
MotherNet is the member, trained once, so g = m costs exactly as much as independent training.
"""

from __future__ import annotations

from dataclasses import dataclass

from mncompile.ir import Ensemble, Net
from mncompile.passes.cluster import Plan
from mncompile.shapes import infer_net

#: said wherever the estimate is shown
CAVEAT = ("an estimate: forward MACs x epoch caps (max_epochs for MotherNets and independent "
          "training, hatched_max_epochs for hatched members); early stopping and data loading ignored")


@dataclass(frozen=True)
class NetCost:
    """Trainable parameters and forward multiply-accumulates per example."""

    params: int
    macs: int


def net_cost(net: Net, ensemble: Ensemble) -> NetCost:
    """Parameters and forward MACs of a net (a member or a MotherNet) for this ensemble's task.

    >>> from mncompile.api import loads
    >>> e = loads("ensemble e { input 8 classes 2 net a mlp { dense 4 } }")
    >>> net_cost(e.nets[0], e)
    NetCost(params=46, macs=40)
    """
    return _cost(net, ensemble.input, ensemble.classes)


def _cost(net: Net, input_shape: tuple[int, ...], classes: int) -> NetCost:
    # A sweep asks for the same members and MotherNets again and again: infer_net keeps their
    # shapes (by the net object: hashing a pydantic net for a cache costs more than this)
    s = infer_net(net, input_shape, classes)
    return NetCost(s.params, s.macs)


@dataclass(frozen=True)
class CostEstimate:
    """Training cost of a plan against training every member independently (MACs x epochs)."""

    #: sum over MotherNets of MACs x max_epochs
    mothers: int
    #: sum over hatched members (clusters of two or more) of MACs x hatched_max_epochs
    hatched: int
    #: sum over members of MACs x max_epochs: independent training
    independent: int

    @property
    def total(self) -> int:
        return self.mothers + self.hatched

    @property
    def ratio(self) -> float:
        """The plan's cost as a fraction of independent training (below 1: a saving)."""
        return self.total / self.independent if self.independent else 1.0


def estimate(plan: Plan) -> CostEstimate:
    """The estimated training cost of a plan; see the module notes for what it leaves out."""
    e = plan.ensemble
    cfg = e.config
    mothers = hatched = independent = 0
    for c in plan.clusters:
        mothers += net_cost(c.mother, e).macs * cfg.max_epochs
        if len(c.members) > 1:
            hatched += sum(net_cost(e.net(n), e).macs for n in c.members) * cfg.hatched_max_epochs
    for n in e.nets:
        independent += net_cost(n, e).macs * cfg.max_epochs
    return CostEstimate(mothers, hatched, independent)
