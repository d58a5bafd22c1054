"""mncompile: compile `.mnet` ensemble specs into MotherNets training code.

The Python API (names loaded on first use, so `import mncompile` stays cheap):

>>> import mncompile
>>> ens = mncompile.compile("examples/mlp.mnet", clusters=1)        # doctest: +SKIP
>>> run = ens.fit(train=(x, y), test=(x_test, y_test), out="runs/x")  # doctest: +SKIP
>>> run.predict_proba(x_test), run.results["ensemble"]["error"]     # doctest: +SKIP
>>> mncompile.load_ensemble("runs/x/ensemble.pt")                   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {"compile": "mncompile.api", "compile_text": "mncompile.api", "load": "mncompile.api",
        "loads": "mncompile.api", "CompiledEnsemble": "mncompile.api", "TrainedRun": "mncompile.api",
        "MNError": "mncompile.diagnostics", "load_ensemble": "mncompile.runtime.ensemble"}


def __getattr__(name: str) -> Any:
    import importlib

    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mncompile' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*_API, "__version__"])
