"""The values the spec, the generated folder, the runtime and results.json agree on, each once.

- `TRAIN_DEFAULTS`: every `train { ... }` key with the paper's default (the spec may override
  each, and `train.py` each again); `INT_KEYS` are whole numbers, `SCHEDULES` the schedules.
- `NOISE_MODES`: how hatched members are perturbed (`--noise-mode`).
- `DATASETS`: the built-in datasets with their flat feature and class counts.
- `RATES_USD_PER_HOUR`: the paper's cloud prices for one GPU (Section 3).

`validate_train(values)` checks a train mapping against the table. No torch, no IR.

>>> validate_train({"lr": 1, "batch": 64})["lr"], validate_train({})["schedule"]
(1.0, 'cosine')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mncompile.diagnostics import MNError

TRAIN_DEFAULTS: dict[str, float | int | str] = {
    "batch": 256,
    "lr": 0.1,
    "hatched_lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "patience": 15,
    "max_epochs": 200,
    "hatched_max_epochs": 60,
    "noise": 0.01,
    "schedule": "cosine",
    "seed": 0,
}
INT_KEYS: frozenset[str] = frozenset({"batch", "patience", "max_epochs", "hatched_max_epochs", "seed"})
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
NOISE_MODES: tuple[str, ...] = ("gaussian", "symmetric")
#: the largest share of the training set `--val-fraction` may hold out for validation
MAX_VAL_FRACTION = 0.5

#: datasets the runtime knows: flat feature count, class count (None: any), and the shapes in words
DATASETS: dict[str, tuple[int | None, int | None, str]] = {
    "mnist1d": (40, 10, "1x40 or 40"),
    "digits": (64, 10, "1x8x8 or 64"),
    "cifar10": (3 * 32 * 32, 10, "3x32x32"),
    "cifar100": (3 * 32 * 32, 100, "3x32x32"),
    "svhn": (3 * 32 * 32, 10, "3x32x32"),
    "synthetic": (None, None, "any shape"),
}
#: Cloud prices of the paper's Section 3: M1 = AWS P2.xlarge / Azure NC6, M2 = AWS P3.2xlarge / Azure NCv3
RATES_USD_PER_HOUR: dict[str, float] = {"M1": 0.90, "M2": 3.06}
#: what the two rates buy: the paper's machines
RATE_MACHINES: dict[str, str] = {"M1": "one K80 GPU, AWS P2.xlarge / Azure NC6",
                                 "M2": "one V100 GPU, AWS P3.2xlarge / Azure NCv3"}


def validate_train(values: Mapping[str, Any]) -> dict[str, Any]:
    """`TRAIN_DEFAULTS` updated with `values`, each of the table's type; MNError naming a bad key."""
    out: dict[str, Any] = dict(TRAIN_DEFAULTS)
    for key, value in values.items():
        if key not in TRAIN_DEFAULTS:
            raise MNError(f"unknown train key '{key}'", hint="known keys: " + ", ".join(TRAIN_DEFAULTS))
        if key == "schedule":
            if value not in SCHEDULES:
                raise MNError(f"train key 'schedule' must be one of {', '.join(SCHEDULES)}, got {value!r}")
            out[key] = str(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MNError(f"train key '{key}' must be a number, got {value!r}")
        elif key in INT_KEYS:
            if not isinstance(value, int):
                raise MNError(f"train key '{key}' must be a whole number, got {value!r}")
            out[key] = int(value)
        else:
            if not math.isfinite(value):
                raise MNError(f"train key '{key}' must be finite, got {value!r}")
            out[key] = float(value)
    return out
