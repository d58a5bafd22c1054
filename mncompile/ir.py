"""The typed intermediate representation of a `.mnet` ensemble.

Every node is a frozen pydantic model that forbids unknown fields and carries the
source span it came from. Repeats (`3:64 x3`) are already expanded into explicit
layers. The IR round-trips through JSON exactly:

>>> from mncompile.parse import parse_text
>>> e = parse_text("ensemble e { input 40 classes 10 net a mlp { dense 32 } }")
>>> Ensemble.model_validate_json(e.model_dump_json()) == e
True
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# the train keys' table lives with the file formats; re-exported for the compiler's passes
from mncompile.formats.settings import INT_KEYS as INT_KEYS
from mncompile.formats.settings import SCHEDULES as SCHEDULES
from mncompile.formats.settings import TRAIN_DEFAULTS

Family = Literal["plain", "residual", "dense", "mlp"]
FAMILIES: tuple[str, ...] = ("plain", "residual", "dense", "mlp")


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Span(Node):
    """A region of source text: 1-based line and column of its start and end."""

    line: int
    column: int
    end_line: int
    end_column: int

    @classmethod
    def none(cls) -> Span:
        """The span of a node that no source text produced (a constructed MotherNet)."""
        return cls(line=0, column=0, end_line=0, end_column=0)


NO_SPAN = Span.none()


class Layer(Node):
    """One convolution: `kernel:filters` (a dense-block layer's filters are its growth)."""

    kernel: int
    filters: int
    span: Span = NO_SPAN


class Block(Node):
    """A plain block, a residual stage or a dense block, by the net's family."""

    layers: tuple[Layer, ...]
    span: Span = NO_SPAN


class Linear(Node):
    """One hidden fully-connected layer of the head."""

    width: int
    span: Span = NO_SPAN


class Net(Node):
    """One network: an ensemble member, or a constructed MotherNet."""

    name: str
    family: Family
    stem: Layer | None = None
    blocks: tuple[Block, ...] = ()
    dense: tuple[Linear, ...] = ()
    span: Span = NO_SPAN
    name_span: Span = NO_SPAN
    family_span: Span = NO_SPAN
    stem_span: Span | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden widths of the head."""
        return tuple(d.width for d in self.dense)


class Setting(Node):
    """One `key value` pair of a `train { ... }` block, as written."""

    key: str
    value: float | int | str
    span: Span = NO_SPAN
    key_span: Span = NO_SPAN
    value_span: Span = NO_SPAN


class TrainConfig(Node):
    """The resolved training settings: the spec's values over the paper's defaults."""

    # the defaults are formats.settings.TRAIN_DEFAULTS (tests/test_formats.py checks they agree)
    batch: int = int(TRAIN_DEFAULTS["batch"])
    lr: float = float(TRAIN_DEFAULTS["lr"])
    hatched_lr: float = float(TRAIN_DEFAULTS["hatched_lr"])
    momentum: float = float(TRAIN_DEFAULTS["momentum"])
    weight_decay: float = float(TRAIN_DEFAULTS["weight_decay"])
    patience: int = int(TRAIN_DEFAULTS["patience"])
    max_epochs: int = int(TRAIN_DEFAULTS["max_epochs"])
    hatched_max_epochs: int = int(TRAIN_DEFAULTS["hatched_max_epochs"])
    noise: float = float(TRAIN_DEFAULTS["noise"])
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = int(TRAIN_DEFAULTS["seed"])


class Ensemble(Node):
    """A whole `.mnet` file: one ensemble of nets for one task."""

    name: str
    input: tuple[int, ...]
    classes: int
    data: str | None = None
    train: tuple[Setting, ...] = ()
    nets: tuple[Net, ...] = ()
    source: str = "<string>"
    span: Span = NO_SPAN
    input_span: Span = NO_SPAN
    classes_span: Span = NO_SPAN
    data_span: Span | None = None

    @property
    def config(self) -> TrainConfig:
        """The training settings with every default filled in."""
        values: dict[str, Any] = {s.key: s.value for s in self.train}
        return TrainConfig(**values)

    @property
    def rank(self) -> int:
        """Spatial rank of the convolutions: 2 for CxHxW, 1 for CxL, 0 for flat inputs."""
        return len(self.input) - 1

    def net(self, name: str) -> Net:
        """The net called `name` (`KeyError` if none), in constant time after the first call."""
        # keyed by the nets tuple itself, not a field of the model: a copy with other nets
        # (model_copy) gets its own index, and equality and hashing stay those of the fields
        index = _NET_INDEX.get(id(self.nets))
        if index is None or index[0] is not self.nets:
            if len(_NET_INDEX) >= 8:
                _NET_INDEX.pop(next(iter(_NET_INDEX)))
            by_name: dict[str, Net] = {}
            for n in self.nets:
                by_name.setdefault(n.name, n)  # the first of a duplicated name, as before
            index = _NET_INDEX[id(self.nets)] = (self.nets, by_name)
        return index[1][name]


#: the name index of the last few ensembles' nets (the tuple is held, so its id stays its own)
_NET_INDEX: dict[int, tuple[tuple[Net, ...], dict[str, Net]]] = {}


def strip_spans(obj: Any) -> Any:
    """The model's data without source spans or the source name: what the spec *means*.

    Two parses of differently formatted text that mean the same thing compare equal here.
    """
    if isinstance(obj, BaseModel):
        obj = obj.model_dump()
    if isinstance(obj, dict):
        return {
            k: strip_spans(v)
            for k, v in obj.items()
            if not k.endswith("span") and k != "source"
        }
    if isinstance(obj, (list, tuple)):
        return [strip_spans(v) for v in obj]
    return obj
