"""What a generated `train.py` imports: data, training loops, checkpoints, metrics, results.

Submodules are imported on first use (PEP 562 `__getattr__`) so that `import mncompile.runtime`
stays cheap and compile-time code never pays for torch. Each public name maps to the submodule
that defines it; add new exports to `_EXPORTS`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # data.py
    "Dataset": "data",
    "load_dataset": "data",
    "batches": "data",
    "augment_batch": "data",
    "num_batches": "data",
    # jobs.py: what trains
    "TrainSettings": "jobs",
    "EpochRecord": "jobs",
    "ModelResult": "jobs",
    "Job": "jobs",
    "group_seconds": "jobs",
    # train.py: the one epoch loop
    "fit": "train",
    "resolve_device": "train",
    "train_model": "train",
    "train_lockstep": "train",
    "train_sequential": "train",
    "epoch_generator": "train",
    "predict_proba": "train",
    # checkpoint.py
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    # metrics.py
    "ensemble_metrics": "metrics",
    "member_metrics": "metrics",
    "diversity_over_trainings": "metrics",
    "diversity": "metrics",
    # results.py
    "build_results": "results",
    "PhaseRecord": "results",
    "load_results": "results",
    "cost_usd": "results",
    "write_results": "results",
    "write_history": "results",
    "format_table": "results",
    # progress.py
    "Progress": "progress",
    # hatching.py: the submodule is not called `hatch`, so that `mncompile.runtime.hatch`
    # stays the function (a submodule of the same name would shadow it once imported)
    "hatch": "hatching",
    "verify_hatch": "hatching",
    "load_table": "hatching",
    # shared.py: Shared-MotherNets (Appendix C)
    "load_shared_module": "shared",
    "consolidate": "shared",
    "build_shared": "shared",
    "verify_shared": "shared",
    "shared_member": "shared",
    # ensemble.py: a trained ensemble, saved and loaded, predicting in one call
    "TrainedEnsemble": "ensemble",
    "save_ensemble": "ensemble",
    "load_ensemble": "ensemble",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mncompile.runtime' has no attribute '{name}'")
    return getattr(importlib.import_module(f"mncompile.runtime.{module}"), name)


def __dir__() -> list[str]:
    return __all__
