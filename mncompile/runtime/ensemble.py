"""A trained ensemble in one object: save it after a run, load it later, predict in one call.

Every run writes `OUT/ensemble.pt` next to results.json (for methods whose members are nets of
models.py or Shared-MotherNets of shared.py). `load_ensemble(OUT)` rebuilds it from the
generated folder it was trained from, and `predict_proba(x)` averages the K members' softmax
outputs; a Shared-MotherNet computes its K outputs in one forward pass.

    >>> from mncompile.runtime import load_ensemble          # doctest: +SKIP
    >>> ens = load_ensemble("runs/mnist1d")                   # doctest: +SKIP
    >>> ens.predict(x)                                        # doctest: +SKIP

The file loads with `torch.load(weights_only=True)`: plain dicts, lists, strings and tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mncompile.diagnostics import MNError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "mncompile-ensemble"
VERSION = 1
FILE_NAME = "ensemble.pt"


class TrainedEnsemble:
    """Members (separate nets and/or Shared-MotherNets) that predict together.

    `members` are the member names in ensemble order; `separate` maps names to modules
    (input -> logits); each module of `shared` has `MEMBERS` and returns [batch, K, classes].
    A Shared-MotherNet head that is not in `members` (a member left out of the ensemble because
    it diverged) is computed but not averaged.
    """

    def __init__(self, members: Sequence[str], separate: Mapping[str, nn.Module],
                 shared: Sequence[Any] = (), method: str = "") -> None:
        self.members = list(members)
        self.separate = dict(separate)
        self.shared = list(shared)
        self.method = method
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
        """[N, classes]: the mean of the members' softmax outputs."""
        import torch

        device = next(self.modules()[0].parameters()).device
        parts = []
        for start in range(0, len(x), batch_size):
            logits = self.logits(x[start:start + batch_size].to(device))
            parts.append(torch.softmax(logits.float(), dim=2).mean(1).cpu())
        return torch.cat(parts)

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """[N]: the class with the highest averaged probability."""
        return self.predict_proba(x, batch_size).argmax(1)


def shared_of(module: nn.Module) -> Any:
    """The Shared-MotherNet a member view belongs to (`runtime.shared.shared_member`), else None."""
    from mncompile.runtime.shared import SharedMember

    return module.shared if isinstance(module, SharedMember) else None  # a generated SharedNet


def save_ensemble(path: str | os.PathLike[str], folder: str | os.PathLike[str],
                  members: Mapping[str, nn.Module], models: Any, method: str,
                  excluded: Sequence[str] = ()) -> str | None:
    """Write the trained members to `path` (atomically); None, or why they cannot be saved.

    A member is saved as its models.py class name and state_dict, or as its Shared-MotherNet's
    state_dict; members of other kinds (a TreeNet's trunk and branch) make the ensemble
    unsaveable. `excluded` members (left out of the evaluated ensemble: not finite) are left
    out of the saved ensemble too, so that it predicts what results.json measured.
    """
    import torch

    from mncompile.runtime.checkpoint import atomic_write

    # by module and class name: a models.py loaded again has new class objects of the same names
    arch = {(cls.__module__, cls.__qualname__): name for name, cls in getattr(models, "MODELS", {}).items()}
    separate: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    kept = [m for m in members if m not in set(excluded)]
    if not kept:
        return "no member is left to save"
    for name in kept:
        module = members[name]
        inner = shared_of(module)
        if inner is not None:
            shared[inner.MOTHER] = {"members": list(inner.MEMBERS), "state": _cpu(inner.state_dict())}
        elif (type(module).__module__, type(module).__qualname__) in arch:
            key = arch[(type(module).__module__, type(module).__qualname__)]
            separate[name] = {"arch": key, "state": _cpu(module.state_dict())}
        else:
            return f"member '{name}' is a {type(module).__name__}, not a net of models.py or shared.py"
    payload = {"format": FORMAT, "version": VERSION, "method": method,
               "folder": str(Path(folder).resolve()), "members": kept, "excluded": list(excluded),
               "separate": separate, "shared": shared}
    atomic_write(path, lambda f: torch.save(payload, f))
    return None


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _well_formed(payload: dict[str, Any]) -> bool:
    def names(v: object) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) for x in v)

    def entries(v: object, *keys: str) -> bool:
        return isinstance(v, dict) and all(isinstance(e, dict) and all(k in e for k in keys)
                                           for e in v.values())

    return (isinstance(payload.get("folder"), str) and names(payload.get("members"))
            and bool(payload.get("members")) and entries(payload.get("separate"), "arch", "state")
            and entries(payload.get("shared"), "members", "state"))


def load_ensemble(path: str | os.PathLike[str], folder: str | os.PathLike[str] | None = None,
                  device: str | torch.device = "cpu") -> TrainedEnsemble:
    """The ensemble saved at `path` (a run's --out folder or its ensemble.pt), ready to predict.

    `folder` is the generated folder it was trained from (default: the one recorded in the
    file). Raises MNError, naming the file, for a missing, corrupt or mismatched file.
    """
    import torch

    from mncompile.runtime.folder import load_folder
    from mncompile.runtime.shared import load_shared_module

    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise MNError(f"'{path}' does not exist",
                      hint="train first (train.py or mncompile run); the run writes OUT/ensemble.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file can fail in many ways
        raise MNError(f"'{path}' is not a readable ensemble file ({type(err).__name__})",
                      hint="it is damaged or not an mncompile ensemble.pt: train again") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MNError(f"'{path}' is not an mncompile ensemble file", hint="train again to write one")
    if payload.get("version") != VERSION:
        raise MNError(f"'{path}' has ensemble file version {payload.get('version')}, this mncompile reads "
                      f"{VERSION}", hint="train again with this mncompile")
    if not _well_formed(payload):
        raise MNError(f"'{path}' is damaged: its contents are not those of an ensemble file",
                      hint="train again to write it")
    source = Path(folder) if folder is not None else Path(payload["folder"])
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
