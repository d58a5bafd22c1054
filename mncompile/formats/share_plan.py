"""The literal structure of a generated `shared.py`: what its `GROUPS` and `STEPS` hold.

`mncompile.emit` writes it (from `mncompile.passes.share_plan.SharePlan`); the generated
`SharedNet` builds its modules from it and `mncompile.runtime.consolidate` fills them from the
members' weights. Both read the fields by name, as listed here.

Each Shared-MotherNet class sets `GROUPS`, `{id: (owner, channels)}` with owner None for the
MotherNet's units and a member's name for that member's own units, and `STEPS`, a tuple with
one dict per step of the forward pass:

- every step has `op`, one of `OPS`; `pool`, `avgpool`, `gap` and `flatten` steps have nothing
  else and act on every live channel;
- a layer step (`conv`, `linear`, `norm`) has `LAYER_STEP_FIELDS`: `name`; `kernel` (the
  members' largest; None for linear and norm steps); `stride`; `pre` (None, `'relu'` or
  `'bn_relu'`: applied to the read channels first); `bn`, `relu`, `bias` (flags); `reads`,
  `makes`, `carries` (group ids: the live groups it gathers, the groups it makes, the live
  groups it passes on for members without a layer here); `blocks` (the made groups split into
  weight blocks, each one convolution or linear map); and `parts`, one dict per member tensor
  set with the keys `PART_FIELDS`:

  - `member`: the member's name; `key`: its weight (`key.weight`, and `key.bias`), or None;
  - `bn`: its BatchNorm after the layer, `pre`: its BatchNorm before it (over the input
    channels), each a state_dict prefix or None;
  - `rows`: the groups of its output channels in its own order; `cols`: those of its input
    channels;
  - `kernel`: its kernel size (None for linear layers and norm steps);

- an `add` step (a residual sum) has `ADD_STEP_FIELDS`: those of a layer step but `blocks` and
  `parts`, and `sums`: per made group, `(group, ((source group, coefficient), ...))`; each made
  group is that weighted sum of live groups, then ReLU.

>>> part = {"member": "a", "key": "head.fc1", "bn": None, "pre": None, "rows": (1,), "cols": (0,),
...         "kernel": None}
>>> read_part(part)["rows"]
(1,)
>>> read_part({**part, "size": 3})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
mncompile.diagnostics.MNError: error: a step part of shared.py has the fields [..., 'size'] ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mncompile.diagnostics import MNError

#: every step's `op`
OPS = ("conv", "linear", "norm", "add", "pool", "avgpool", "gap", "flatten")
#: the keys of a layer step (`conv`, `linear`, `norm`), in the order shared.py writes them
LAYER_STEP_FIELDS = ("op", "name", "kernel", "stride", "pre", "bn", "relu", "bias", "reads", "makes",
                     "carries", "blocks", "parts")
#: the keys of an `add` step
ADD_STEP_FIELDS = ("op", "name", "kernel", "stride", "pre", "bn", "relu", "bias", "reads", "makes",
                   "carries", "sums")
#: the keys of one part of a layer step, in the order shared.py writes them
PART_FIELDS = ("member", "key", "bn", "pre", "rows", "cols", "kernel")


def read_part(part: Mapping[str, Any]) -> dict[str, Any]:
    """One part of a layer step as a dict; `MNError` unless its keys are exactly `PART_FIELDS`."""
    hint = "the folder comes from another version of mncompile: compile the spec again"
    if not isinstance(part, Mapping):
        raise MNError(f"a step part of shared.py is a {type(part).__name__} where this mncompile "
                      f"reads a dict with the fields {sorted(PART_FIELDS)}", hint=hint)
    if set(part) != set(PART_FIELDS):
        raise MNError(f"a step part of shared.py has the fields {sorted(part)} where this mncompile "
                      f"reads {sorted(PART_FIELDS)}", hint=hint)
    return dict(part)
