"""`mncompile export`: a trained ensemble as a program that runs without mncompile.

`export_ensemble` writes, into a new folder:

- `ensemble.pt2`: a `torch.export` program. `torch.export.load(path).module()(x)` takes inputs
  [N, *input] (any N) and returns `(probs, logits)`: the averaged probabilities [N, classes]
  (each member's softmax of logits / temperature, averaged) and the members' logits
  [N, K, classes], as trained. A Shared-MotherNet is exported as its single model.
- `ensemble.onnx` (when `onnx` and `onnxscript` import): the same graph, inputs `x`, outputs
  `probs` and `logits`, a dynamic batch dimension.
- `export.json`: the members in output order, the input shape, classes, temperature, the files and
  how each was checked: its outputs against `load_ensemble(...).predict_proba` and `.logits` on a
  seeded random batch (max abs difference; at most `TOLERANCE`, or the export fails).
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mncompile.diagnostics import MNError

TOLERANCE = 1e-5
CHECK_BATCH = 16


class EnsembleProgram(nn.Module):
    """The members of a `TrainedEnsemble` in one module: x -> (probs, logits)."""

    def __init__(self, ensemble: Any) -> None:
        super().__init__()
        self.names = list(ensemble.members)
        self.separate_names = list(ensemble.separate)
        self.separate = nn.ModuleList(ensemble.separate.values())
        self.shared = nn.ModuleList(ensemble.shared)
        self.heads = [list(s.MEMBERS) for s in ensemble.shared]
        t = ensemble.temperatures()
        self.register_buffer("temperature", t if t is not None else torch.ones(len(self.names)))
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs: dict[str, torch.Tensor] = {}
        for name, module in zip(self.separate_names, self.separate, strict=True):
            outs[name] = module(x)
        for heads, module in zip(self.heads, self.shared, strict=True):
            y = module(x)
            for k, name in enumerate(heads):
                outs[name] = y[:, k]
        logits = torch.stack([outs[n] for n in self.names], 1).float()
        t = cast(torch.Tensor, self.temperature)
        probs = torch.softmax(logits / t[None, :, None], dim=2).mean(1)
        return probs, logits


def onnx_available() -> str | None:
    """None when ONNX export can run here, else why not."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (pip install \"mncompile[export]\" for "
                "ensemble.onnx)")
    return None


def export_ensemble(run: str | Path, dest: str | Path, *, force: bool = False, onnx: str = "auto",
                    log: Any = print) -> dict[str, Any]:
    """Export the ensemble of run folder (or ensemble.pt) `run` into the new folder `dest`; the
    export.json it writes. `onnx`: auto (when installed), yes (an error when not), no."""
    import torch.export

    from mncompile.runtime.ensemble import load_ensemble
    from mncompile.writer import write_folder

    dest = Path(dest)
    if dest.exists() and not force:
        raise MNError(f"'{dest}' exists", hint="give another --to, or --force to replace it")
    ens = load_ensemble(run)
    if not ens.input_shape:
        raise MNError(f"'{run}' does not record its input shape (an ensemble file of version 1)",
                      hint="train again with this mncompile, then export")
    program = EnsembleProgram(ens)
    x = torch.randn((CHECK_BATCH, *ens.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want_probs, want_logits = ens.predict_proba(x), ens.logits(x).float()
    batch = torch.export.Dim("batch", min=1)
    try:
        exported = torch.export.export(program, (x,), dynamic_shapes={"x": {0: batch}})
    except Exception as err:  # noqa: BLE001 - name the cause, no traceback
        raise MNError(f"torch.export could not trace the ensemble of '{run}' ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''})") from None
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    files: dict[str, str | bytes] = {"ensemble.pt2": buffer.getvalue()}
    checks = {"ensemble.pt2": _check(torch.export.load(io.BytesIO(buffer.getvalue())).module(), x,
                                     want_probs, want_logits, "ensemble.pt2")}
    why_not = onnx_available()
    if onnx == "yes" and why_not:
        raise MNError(f"cannot write ensemble.onnx: {why_not}")
    if onnx != "no" and why_not is None:
        data = _onnx(program, x)
        files["ensemble.onnx"] = data
        checks["ensemble.onnx"] = _check_onnx(data, x, want_probs, want_logits)
    info = {
        "format": "mncompile-export", "version": 1, "members": ens.members, "input": list(ens.input_shape),
        "classes": ens.classes, "method": ens.method, "temperature": ens.temperature,
        "outputs": {"probs": "[N, classes]: the mean over members of softmax(logits / temperature)",
                    "logits": "[N, members, classes]: each member's logits, in 'members' order"},
        "load": {"ensemble.pt2": "torch.export.load('ensemble.pt2').module()(x)",
                 "ensemble.onnx": "onnxruntime.InferenceSession('ensemble.onnx').run(None, {'x': x})"},
        "checked": {f: {**c, "batch": CHECK_BATCH, "tolerance": TOLERANCE} for f, c in checks.items()},
        "torch": torch.__version__,
        **({"onnx": f"not written: {why_not}"} if why_not and onnx != "no" else {}),
    }
    files["export.json"] = json.dumps(info, indent=2, sort_keys=True) + "\n"
    write_folder(dest, files, force=force)
    for name, c in checks.items():
        if "probs_max_abs_diff" in c:
            diff = max(c["probs_max_abs_diff"], c["logits_max_abs_diff"])
            log(f"wrote {dest / name}: outputs within {diff:.2g} of load_ensemble on a batch of "
                f"{CHECK_BATCH}")
        else:
            log(f"wrote {dest / name}: {c['checked_by']}")
    if why_not and onnx != "no":
        log(f"note: no ensemble.onnx: {why_not}")
    return info


def _check(module: Any, x: torch.Tensor, probs: torch.Tensor, logits: torch.Tensor,
           what: str) -> dict[str, Any]:
    with torch.no_grad():
        got_probs, got_logits = module(x)
    return _diffs(got_probs, got_logits, probs, logits, what)


def _diffs(got_probs: Any, got_logits: Any, probs: torch.Tensor, logits: torch.Tensor,
           what: str) -> dict[str, Any]:
    d = {"probs_max_abs_diff": float((torch.as_tensor(got_probs) - probs).abs().max()),
         "logits_max_abs_diff": float((torch.as_tensor(got_logits) - logits).abs().max())}
    # probabilities to TOLERANCE; logits to TOLERANCE of their scale (float32 sums in another order)
    scale = max(1.0, float(logits.abs().max()))
    if not (d["probs_max_abs_diff"] <= TOLERANCE and d["logits_max_abs_diff"] <= TOLERANCE * scale):
        raise MNError(f"{what} does not compute the ensemble: its outputs differ by {max(d.values()):.3g} "
                      f"(more than {TOLERANCE}, logits relative to their scale {scale:.3g})")
    return {**d, "checked_by": "outputs compared"}


def _onnx(program: nn.Module, x: torch.Tensor) -> bytes:
    import contextlib
    import logging
    import os
    import tempfile
    import warnings

    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # its notes on torchvision ops this graph does not use
    level = quiet.level
    with tempfile.TemporaryDirectory(prefix="mncompile-onnx-") as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        path = os.path.join(tmp, "ensemble.onnx")
        try:
            onnx_program = torch.onnx.export(program, (x,), dynamo=True, input_names=["x"],
                                             output_names=["probs", "logits"],
                                             dynamic_shapes={"x": {0: batch}})
            assert onnx_program is not None
            onnx_program.save(path)
        except Exception as err:  # noqa: BLE001
            raise MNError(f"ONNX export failed ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''})",
                          hint="export without it: --onnx no") from None
        finally:
            quiet.setLevel(level)
        return Path(path).read_bytes()


def _check_onnx(data: bytes, x: torch.Tensor, probs: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
    if importlib.util.find_spec("onnxruntime") is None:
        import onnx

        onnx.checker.check_model(onnx.load_from_string(data))
        return {"checked_by": "onnx.checker only (onnxruntime is not installed: outputs not compared)"}
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got_probs, got_logits = session.run(None, {"x": x.numpy()})
    return _diffs(got_probs, got_logits, probs, logits, "ensemble.onnx")
