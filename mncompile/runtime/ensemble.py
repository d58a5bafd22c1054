"""A trained ensemble in one object: save it after a run, load it later, predict in one call.

Every run writes `OUT/ensemble.pt` next to results.json (for methods whose members are nets of
models.py or Shared-MotherNets of shared.py). The file holds the weights and every architecture
as data (docs/ensemble-file.md, `mncompile.formats.ensemble_file`), so `load_ensemble(OUT)`
rebuilds the members without the generated folder and without importing any file
(`runtime.nets`, `runtime.shared_net`), and `predict_proba(x)` averages the K members' softmax
outputs; a Shared-MotherNet computes its K outputs in one forward pass.

    >>> from mncompile.runtime import load_ensemble          # doctest: +SKIP
    >>> ens = load_ensemble("runs/mnist1d")                   # doctest: +SKIP
    >>> ens.predict(x)                                        # doctest: +SKIP

The file loads with `torch.load(weights_only=True)` (tensors and plain values, never code), its
checksum is checked, and every stored value is checked before anything is built.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError
from mncompile.formats.ensemble_file import (
    FIELDS,
    FILE_NAME,
    FORMAT,
    VERSION,
    NetDescription,
    SharedDescription,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mncompile.formats.plan_file import PlanFile

__all__ = ["FILE_NAME", "FORMAT", "VERSION", "TrainedEnsemble", "load_ensemble", "save_ensemble", "shared_of"]


class TrainedEnsemble:
    """Members (separate nets and/or Shared-MotherNets) that predict together.

    `members` are the member names in ensemble order; `separate` maps names to modules
    (input -> logits); each module of `shared` has `MEMBERS` and returns [batch, K, classes].
    A Shared-MotherNet head that is not in `members` (a member left out of the ensemble because
    it diverged) is computed but not averaged. `temperature` (fitted by --calibrate-temperature)
    divides the members' logits in `predict_proba`; `logits` stays as trained.
    """

    def __init__(self, members: Sequence[str], separate: Mapping[str, nn.Module],
                 shared: Sequence[Any] = (), method: str = "",
                 temperature: float | Mapping[str, float] | None = None) -> None:
        self.members = list(members)
        self.separate = dict(separate)
        self.shared = list(shared)
        self.method = method
        #: the temperature fitted on the validation split (--calibrate-temperature): one for every
        #: member, or one per member; None: 1, the logits as trained
        self.temperature = dict(temperature) if isinstance(temperature, Mapping) else temperature
        #: the per-example input shape and class count (set by `load_ensemble`; () and 0 when unknown)
        self.input_shape: tuple[int, ...] = ()
        self.classes = 0
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        covered = set(self.separate) | {m for s in self.shared for m in s.MEMBERS}
        missing = [m for m in self.members if m not in covered]
        if missing or len(set(self.members)) != len(self.members):
            raise ValueError(f"the modules cover {sorted(covered)}, not the members {self.members}")
        for module in self.modules():
            module.eval()

    @classmethod
    def from_modules(cls, members: Mapping[str, nn.Module], method: str = "") -> TrainedEnsemble:
        """From a run's members: views of one Shared-MotherNet are grouped back into it."""
        separate: dict[str, nn.Module] = {}
        shared: dict[int, nn.Module] = {}
        for name, module in members.items():
            inner = shared_of(module)
            if inner is not None:
                shared[id(inner)] = inner
            else:
                separate[name] = module
        return cls(list(members), separate, list(shared.values()), method)

    def modules(self) -> list[nn.Module]:
        return [*self.separate.values(), *self.shared]

    @property
    def kind(self) -> str:
        """'separate', 'shared' or 'mixed' (shared clusters beside separate members)."""
        if not self.shared:
            return "separate"
        return "shared" if not self.separate else "mixed"

    def parameters(self) -> int:
        """Trainable parameters (a Shared-MotherNet's masked weights not counted)."""
        from mncompile.runtime.shared import effective_params

        return (sum(p.numel() for m in self.separate.values() for p in m.parameters())
                + sum(effective_params(s) for s in self.shared))

    def to(self, device: torch.device | str) -> TrainedEnsemble:
        for module in self.modules():
            module.to(device)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, K, classes]: every member's logits, in `members` order (eval mode, no grad)."""
        import torch

        with torch.no_grad():
            out: dict[str, torch.Tensor] = {name: m(x) for name, m in self.separate.items()}
            for s in self.shared:
                y = s(x)
                out.update({name: y[:, k] for k, name in enumerate(s.MEMBERS)})
            return torch.stack([out[name] for name in self.members], 1)

    def predict_proba(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """[N, classes]: the mean of the members' softmax outputs (of logits / temperature)."""
        import torch

        device = next(self.modules()[0].parameters()).device
        t = self.temperatures()
        parts = []
        for start in range(0, len(x), batch_size):
            logits = self.logits(x[start:start + batch_size].to(device)).float()
            if t is not None:
                logits = logits / t.to(logits.device)[None, :, None]
            parts.append(torch.softmax(logits, dim=2).mean(1).cpu())
        return torch.cat(parts)

    def temperatures(self) -> torch.Tensor | None:
        """[K] the members' temperatures, in `members` order; None when there is none."""
        import torch

        if self.temperature is None:
            return None
        if isinstance(self.temperature, dict):
            return torch.tensor([float(self.temperature[m]) for m in self.members])
        return torch.full((len(self.members),), float(self.temperature))

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """[N]: the class with the highest averaged probability."""
        return self.predict_proba(x, batch_size).argmax(1)


def shared_of(module: nn.Module) -> Any:
    """The Shared-MotherNet a member view belongs to (`runtime.shared.shared_member`), else None."""
    from mncompile.runtime.shared import SharedMember

    return module.shared if isinstance(module, SharedMember) else None  # a generated SharedNet


_TRAIN_AGAIN = "train again (train.py or mncompile run) to write it"


def _plan_of(plan: PlanFile | str | os.PathLike[str]) -> PlanFile:
    """A PlanFile as given, or read from a generated folder's plan.json (JSON only)."""
    from mncompile.formats.plan_file import PlanFile, read_plan

    if isinstance(plan, PlanFile):
        return plan
    where = Path(plan) / "plan.json"
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MNError(f"'{where}' does not exist", hint="compile the spec again") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise MNError(f"'{where}' is not a plan this mncompile can read ({err})",
                      hint="compile the spec again") from None
    return read_plan(data, str(where))


def _fits(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Any]) -> str | None:
    """None when `state` has exactly the keys of `expected`, each of its shape; else what differs."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} where {expected[k]} belongs" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k])]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)):
        if keys:
            parts.append(f"{what} {', '.join(map(str, keys[:3]))}" + (" ..." if len(keys) > 3 else ""))
    return "; ".join(parts) or None


def save_ensemble(path: str | os.PathLike[str], plan: PlanFile | str | os.PathLike[str],
                  members: Mapping[str, nn.Module], models: Any, method: str,
                  excluded: Sequence[str] = (),
                  temperature: float | Mapping[str, float] | None = None) -> str | None:
    """Write the trained members to `path` (atomically); None, or why they cannot be saved.

    `plan` is the plan the run trained from (`PlanFile`, or the generated folder holding its
    plan.json); `models` is the generated models.py module the members are instances of. A
    member is saved as its architecture (the plan's description of its models.py class, or the
    description a module of `runtime.nets` was built from) and state_dict, or as its
    Shared-MotherNet's data (`MOTHER`, `MEMBERS`, `GROUPS`, `STEPS`) and
    state_dict; members of other kinds (a TreeNet's trunk and branch) make the ensemble
    unsaveable. `excluded` members (left out of the evaluated ensemble: not finite) are left
    out of the saved ensemble too, so that it predicts what results.json measured. `temperature`
    (--calibrate-temperature: a float, or member -> float) is stored for `predict_proba`.
    """
    import torch

    from mncompile import __version__
    from mncompile.formats.ensemble_file import (
        describe_net,
        describe_shared,
        net_tensors,
        net_to_data,
        read_net,
        read_shared,
        shared_tensors,
        shared_to_data,
    )
    from mncompile.runtime.checkpoint import atomic_write, digest
    from mncompile.runtime.nets import Net

    plan = _plan_of(plan)
    # by module and class name: a models.py loaded again has new class objects of the same names
    arch = {(cls.__module__, cls.__qualname__): name for name, cls in getattr(models, "MODELS", {}).items()}
    nets: dict[str, Any] = {}
    separate: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    kept = [m for m in members if m not in set(excluded)]
    if not kept:
        return "no member is left to save"
    for name in kept:
        module = members[name]
        inner = shared_of(module)
        key = arch.get((type(module).__module__, type(module).__qualname__))
        described = None
        if isinstance(module, Net) and module.arch:
            # rebuilt from an ensemble file: it carries its description
            key, described = module.arch, module.description
        if inner is not None:
            if str(inner.MOTHER) in shared:
                continue
            try:
                desc = read_shared(shared_to_data(describe_shared(inner)), str(path))
            except MNError as err:
                return f"the Shared-MotherNet of '{name}' cannot be described ({err.message})"
            state = _cpu(inner.state_dict())
            problem = _fits(shared_tensors(desc), state)
            if problem:
                return f"Shared-MotherNet '{desc.mother}' does not have the tensors of its data ({problem})"
            shared[desc.mother] = {**shared_to_data(desc), "state": state}
        elif key is not None:
            structure = plan.nets.get(key)
            if described is None:
                if structure is None:
                    return (f"plan.json does not describe net '{key}' (a folder compiled by an older "
                            "mncompile): compile the spec again")
                described = describe_net(structure, plan.input, plan.classes)
            try:
                net = read_net(net_to_data(described), str(path), key)
            except MNError as err:
                return f"net '{key}' of plan.json cannot be saved ({err.message})"
            state = _cpu(module.state_dict())
            problem = _fits(net_tensors(net), state)
            if problem:
                return f"member '{name}' does not have the tensors plan.json's net '{key}' has ({problem})"
            nets[key] = net_to_data(net)
            separate[name] = {"arch": key, "state": state}
        else:
            return f"member '{name}' is a {type(module).__name__}, not a net of models.py or shared.py"
    payload: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "mncompile": __version__, "ensemble": plan.ensemble,
        "plan_digest": plan.digest, "input": list(plan.input), "classes": plan.classes, "method": method,
        "members": kept, "excluded": list(excluded), "nets": nets, "separate": separate, "shared": shared,
    }
    if temperature is not None:  # an optional field: files without it load as before
        payload["temperature"] = (float(temperature) if not isinstance(temperature, Mapping)
                                  else {m: float(temperature[m]) for m in kept})
    payload["checksum"] = digest(payload)
    atomic_write(path, lambda f: torch.save(payload, f))
    return None


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


@dataclass(frozen=True)
class _Stored:
    """A version-2 file's contents, every value checked."""

    ensemble: str
    plan_digest: str
    method: str
    members: tuple[str, ...]
    nets: dict[str, NetDescription]
    separate: dict[str, tuple[str, dict[str, torch.Tensor]]]
    shared: dict[str, tuple[SharedDescription, dict[str, torch.Tensor]]]
    temperature: float | dict[str, float] | None = None
    input: tuple[int, ...] = ()
    classes: int = 0


def _check_state(state: Any, expected: Mapping[str, tuple[int, ...]], what: str,
                 where: str) -> dict[str, Any]:
    import torch

    def fail(message: str) -> MNError:
        return MNError(f"'{where}' is damaged: {what} {message}", hint=_TRAIN_AGAIN)

    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise fail("has no table of tensors")
    for key, t in state.items():
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided:
            raise fail(f"holds {type(t).__name__} {key!r}, not a tensor")
        counter = key.endswith("num_batches_tracked")
        if (t.dtype == torch.int64) != counter or (not counter and not t.dtype.is_floating_point):
            raise fail(f"holds tensor {key!r} of type {t.dtype}")
        # every entry stored: a tensor of repeated entries (stride 0) could stand for a module far
        # larger than the file, which building it would allocate
        if not t.is_contiguous() or t.untyped_storage().nbytes() < t.numel() * t.element_size():
            raise fail(f"holds tensor {key!r} without all of its entries stored")
    problem = _fits(expected, state)
    if problem:
        raise fail(f"does not have the tensors its architecture has ({problem})")
    return state


#: how deeply a version-2 file nests its values (it needs 9: steps, parts, rows)
MAX_DEPTH = 16


def _check_plain(payload: dict[str, Any], where: str) -> None:
    """Before the checksum is computed over it: plain values nested a few levels, every tensor stored
    entry by entry (the checksum reads every entry: one repeated entry could stand for terabytes)."""
    import torch

    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MNError(f"'{where}' is damaged: its values nest more than {MAX_DEPTH} levels deep",
                          hint=_TRAIN_AGAIN)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value)
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, torch.Tensor):
            if (value.layout != torch.strided or not value.is_contiguous()
                    or value.untyped_storage().nbytes() < value.numel() * value.element_size()):
                raise MNError(f"'{where}' is damaged: it holds a tensor without all of its entries stored",
                              hint=_TRAIN_AGAIN)
        elif value is not None and not isinstance(value, (str, int, float)):
            raise MNError(f"'{where}' is damaged: it holds a {type(value).__name__}, not a plain value",
                          hint=_TRAIN_AGAIN)


def _read_payload(payload: dict[str, Any], where: str) -> _Stored:
    """Check every field of a version-2 payload (the checksum already checked); MNError naming the file."""
    from mncompile.formats.ensemble_file import (
        MAX_NAME,
        net_tensors,
        read_names,
        read_net,
        read_shape,
        read_shared,
        shared_tensors,
    )

    def fail(message: str) -> MNError:
        return MNError(f"'{where}' is damaged: {message}", hint=_TRAIN_AGAIN)

    if set(payload) - {"temperature"} != set(FIELDS):
        raise fail(f"it has the fields {sorted(map(str, payload))}, not {sorted(FIELDS)} (and temperature)")
    for key in ("mncompile", "ensemble", "plan_digest", "method"):
        if not isinstance(payload[key], str) or len(payload[key]) > MAX_NAME:
            raise fail(f"its {key} is not a string")
    shape = read_shape(where, payload["input"])
    classes = payload["classes"]
    members = read_names(where, payload["members"], "the members")
    excluded = read_names(where, payload["excluded"], "the excluded members")
    if not members or set(members) & set(excluded):
        raise fail("its members are empty or also excluded")
    for key in ("nets", "separate", "shared"):
        if not isinstance(payload[key], dict):
            raise fail(f"its {key} is not a table")
    nets: dict[str, NetDescription] = {}
    for name, data in payload["nets"].items():
        read_names(where, [name], "the nets")
        net = read_net(data, where, name)
        if net.input != shape or net.classes != classes:
            raise fail(f"net '{name}' has input {list(net.input)} and {net.classes} classes, the ensemble "
                       f"{list(shape)} and {classes}")
        nets[name] = net
    separate: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, entry in payload["separate"].items():
        if name not in members:
            raise fail(f"it stores member {name!r}, which its members do not name")
        if not isinstance(entry, dict) or set(entry) != {"arch", "state"} or entry["arch"] not in nets:
            raise fail(f"member '{name}' is not an architecture of its nets and a state")
        state = _check_state(entry["state"], net_tensors(nets[entry["arch"]]), f"member '{name}'", where)
        separate[name] = (entry["arch"], state)
    if set(nets) != {arch for arch, _ in separate.values()}:
        raise fail("its nets are not the architectures of its members")
    shared: dict[str, tuple[SharedDescription, dict[str, Any]]] = {}
    heads = set(separate)
    for mother, entry in payload["shared"].items():
        if not isinstance(entry, dict) or set(entry) != {"mother", "members", "input", "classes", "groups",
                                                         "steps", "state"}:
            raise fail(f"Shared-MotherNet {mother!r} is not its data and a state")
        desc = read_shared(entry, where)
        if desc.mother != mother or desc.input != shape or desc.classes != classes:
            raise fail(f"Shared-MotherNet {mother!r} is not stored under its name, input and classes")
        if heads & set(desc.members) or not set(desc.members) <= set(members) | set(excluded):
            raise fail(f"Shared-MotherNet '{mother}' has members {list(desc.members)}, not members of the "
                       "ensemble that no other module computes")
        heads |= set(desc.members)
        state = _check_state(entry["state"], shared_tensors(desc), f"Shared-MotherNet '{mother}'", where)
        shared[mother] = (desc, state)
    missing = [m for m in members if m not in heads]
    if missing:
        raise fail(f"no stored module computes member '{missing[0]}'")
    return _Stored(payload["ensemble"], payload["plan_digest"], payload["method"], members, nets,
                   separate, shared, _read_temperature(payload.get("temperature"), members, fail),
                   tuple(shape), int(classes))


def _read_temperature(value: Any, members: Sequence[str],
                      fail: Callable[[str], MNError]) -> float | dict[str, float] | None:
    """The optional temperature: a float in [T_MIN, T_MAX], or one per member; None when absent."""
    from mncompile.runtime.calibration import T_MAX, T_MIN

    def ok(v: Any) -> bool:
        return isinstance(v, float) and math.isfinite(v) and T_MIN <= v <= T_MAX

    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) != set(members) or not all(ok(v) for v in value.values()):
            raise fail(f"its temperatures are not one number in [{T_MIN}, {T_MAX}] per member")
        return {str(m): float(v) for m, v in value.items()}
    if not ok(value):
        raise fail(f"its temperature is not a number in [{T_MIN}, {T_MAX}]")
    return float(value)


def _check_folder(path: Path, stored: _Stored, folder: Path) -> None:
    """MNError unless `folder`'s plan.json is the plan the file was trained from (read as JSON only)."""
    from mncompile.formats.plan_file import plan_digest

    plan_path = folder / "plan.json"
    try:
        data = json.loads(plan_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MNError(f"'{plan_path}' does not exist",
                      hint="a version-2 ensemble file needs no folder: leave folder= out") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise MNError(f"'{plan_path}' is not a plan this mncompile can read ({err})") from None
    if plan_digest(data) != stored.plan_digest:
        name = data.get("ensemble") if isinstance(data, dict) else None
        raise MNError(f"'{path}' was trained from another plan than '{plan_path}' (ensemble "
                      f"'{stored.ensemble}'; that plan is of {name!r})",
                      hint="pass the generated folder it was trained from, or leave folder= out: a "
                      "version-2 ensemble file needs no folder")


def _check_results(path: Path, stored: _Stored) -> None:
    """MNError when OUT/results.json beside OUT/ensemble.pt is of another run than the file."""
    results = path.parent / "results.json"
    if path.name != FILE_NAME or not results.is_file():
        return
    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return  # not ours to judge here: the ensemble file stands on its own
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), dict) for k in ("info", "members")):
        return
    ran = (doc.get("method"), doc["info"].get("ensemble"), sorted(map(str, doc["members"])))
    mine = (stored.method, stored.ensemble, sorted(stored.members))
    if ran != mine:
        raise MNError(f"'{path}' is not the ensemble of the run beside it: '{results}' is a {ran[0]!r} run "
                      f"of {ran[1]!r} with members {ran[2]}, the file a {mine[0]!r} run of {mine[1]!r} "
                      f"with members {mine[2]}",
                      hint="the last run into this folder wrote no ensemble file (its output says why), or "
                      "the file was copied here: train again, or load the file from its own run's folder")


def load_ensemble(path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None,
                  device: str | torch.device = "cpu") -> TrainedEnsemble:
    """The ensemble saved at `path` (a run's --out folder or its ensemble.pt), ready to predict.

    A file of this version (2) needs nothing else: the members are built from the architectures
    stored in it, and no file is imported. With `folder` (a generated folder), its plan.json
    must be the plan the ensemble was trained from. When `path` sits beside a results.json (a
    run's folder), the file must be of that run (method, ensemble, members).

    `folder` also loads a version-1 file (written before this version, which stored the
    generated folder's path): that imports `folder`'s models.py and shared.py, which runs the
    code in them. Pass only a folder you trust, for a file written before this version.

    Raises MNError, naming the file, for a missing, corrupt, altered or mismatched file.
    """
    from mncompile.runtime.checkpoint import check_digest, safe_load
    from mncompile.runtime.nets import build_net
    from mncompile.runtime.shared_net import GenericSharedNet

    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise MNError(f"'{path}' does not exist",
                      hint="train first (train.py or mncompile run); the run writes OUT/ensemble.pt")
    payload = safe_load(path, "ensemble file", f"it is damaged or not an mncompile {FILE_NAME}: "
                        + _TRAIN_AGAIN)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MNError(f"'{path}' is not an mncompile ensemble file", hint=_TRAIN_AGAIN)
    if payload.get("version") == 1:
        return _load_v1(path, payload, folder, device)
    if payload.get("version") != VERSION:
        raise MNError(f"'{path}' has ensemble file version {payload.get('version')!r}, this mncompile reads "
                      f"{VERSION} (and 1 with folder=)", hint="train again with this mncompile")
    _check_plain(payload, str(path))
    check_digest(payload, path, _TRAIN_AGAIN)
    where = str(path)
    stored = _read_payload(payload, where)
    if folder is not None:
        _check_folder(path, stored, Path(folder))
    _check_results(path, stored)
    try:
        separate: dict[str, nn.Module] = {}
        for name, (arch, state) in stored.separate.items():
            module = build_net(stored.nets[arch], arch)
            module.load_state_dict(state)
            separate[name] = module
        shared: list[nn.Module] = []
        for desc, state in stored.shared.values():
            s = GenericSharedNet(desc)
            s.load_state_dict(state)
            shared.append(s)
        ens = TrainedEnsemble(stored.members, separate, shared, stored.method, stored.temperature)
        ens.input_shape, ens.classes = stored.input, stored.classes
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as err:
        # every value was checked above: this is a last line of defence, not a path we expect
        first = str(err).splitlines()[0] if str(err) else ""
        raise MNError(f"'{path}' cannot be rebuilt ({type(err).__name__}: {first})",
                      hint=_TRAIN_AGAIN) from None
    return ens.to(device)


def _well_formed_v1(payload: dict[str, Any]) -> bool:
    def names(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    def entries(v: object, *keys: str) -> bool:
        return isinstance(v, dict) and all(isinstance(e, dict) and all(k in e for k in keys)
                                           for e in v.values())

    return (names(payload.get("members")) and bool(payload.get("members"))
            and entries(payload.get("separate"), "arch", "state")
            and entries(payload.get("shared"), "members", "state"))


def _load_v1(path: Path, payload: dict[str, Any], folder: str | os.PathLike[str] | None,
             device: str | torch.device) -> TrainedEnsemble:
    """A version-1 file: rebuilt by importing the generated folder's models.py (and shared.py).

    Only with an explicit `folder`: the path stored in the file is never imported from.
    """
    from mncompile.runtime.folder import load_folder
    from mncompile.runtime.shared import load_shared_module

    if folder is None:
        raise MNError(f"'{path}' is a version-1 ensemble file: it is rebuilt from the code of the generated "
                      "folder it was trained from, which this mncompile imports only when told which one",
                      hint="pass folder= that generated folder (its models.py runs), or train again to write "
                      "a version-2 file, which needs no folder")
    if not _well_formed_v1(payload):
        raise MNError(f"'{path}' is damaged: its contents are not those of an ensemble file",
                      hint="train again to write it")
    source = Path(folder)
    try:
        models, _, _ = load_folder(source)
        separate: dict[str, nn.Module] = {}
        for name, entry in payload["separate"].items():
            module = models.MODELS[entry["arch"]]()
            module.load_state_dict(entry["state"])
            separate[name] = module
        shared: list[nn.Module] = []
        if payload["shared"]:
            classes = load_shared_module(source).SHARED
            for mother, entry in payload["shared"].items():
                module = classes[mother]()
                if list(module.MEMBERS) != list(entry["members"]):
                    raise MNError(f"shared.py's '{mother}' has members {list(module.MEMBERS)}, the file "
                                  f"{entry['members']}")
                module.load_state_dict(entry["state"])
                shared.append(module)
        ens = TrainedEnsemble(payload["members"], separate, shared, str(payload.get("method", "")))
    except MNError as err:
        raise MNError(f"cannot load '{path}': {err.message}",
                      hint=err.hint or "pass folder= the generated folder it was trained from") from None
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as err:
        raise MNError(f"'{path}' does not match the generated folder '{source}' ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''})",
                      hint="pass folder= the generated folder it was trained from, or train again") from None
    return ens.to(device)
