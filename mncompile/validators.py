"""The command-line value checkers every command shares: numbers in a range, fractions.

Each returns an argparse `type=` callable that raises `argparse.ArgumentTypeError` with one
plain sentence, which argparse prints after the option's name.

>>> number(int, 1)("3"), number(float, 0, above=True)("0.5"), fraction("1"), positive_ints("4,1,4")
(3, 0.5, 1.0, [1, 4])
>>> count_or_none("2G"), count_or_none("1.5e9"), count_or_none("none")
(2000000000, 1500000000, None)
>>> number(int, 1)("0")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected at least 1, got '0'
>>> positive(float)("inf")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected a finite number, got 'inf'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def number(kind: type, lowest: float | None = None, *, above: bool = False,
           highest: float | None = None, below: float | None = None) -> Callable[[str], Any]:
    """`kind` (int or float) at least `lowest` (strictly above it with `above`), at most `highest`
    (strictly below `below`)."""
    word = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {word}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if lowest is not None and (value < lowest or (above and value == lowest)):
            bound = (f"at least {math.floor(lowest) + 1}" if above and kind is int
                     else f"above {lowest}" if above else f"at least {lowest}")
            raise argparse.ArgumentTypeError(f"expected {bound}, got {text!r}")
        if highest is not None and value > highest:
            raise argparse.ArgumentTypeError(f"expected at most {_plain(highest)}, got {text!r}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"expected a number below {_plain(below)}, got {text!r}")
        return value

    return parse


def _plain(x: float) -> str:
    """A bound as people write it: 1000000 and 4294967295, not 1e+06; 0.5 and 1e-05 as is."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def positive(kind: type) -> Callable[[str], Any]:
    """A finite `kind` above 0 (an int: at least 1)."""
    return number(kind, 0, above=True)


def fraction(text: str) -> float:
    """A number from 0 to 1."""
    value: float = number(float, 0.0, highest=1.0)(text)
    return value


def positive_ints(text: str) -> list[int]:
    """Whole numbers of at least 1 joined by commas, sorted, each once."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers joined by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return sorted(set(values))


_UNITS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def count_or_none(text: str) -> int | None:
    """A whole number of at least 1, also written 1e9 or with k, M, G, T (2G, 1.5M); 'none': None."""
    t = text.strip().lower()
    if t == "none":
        return None
    scale = _UNITS.get(t[-1:], 1)
    body = t[:-1] if scale > 1 else t
    value: float
    try:
        value = int(body) * scale  # exact for plain digits
    except ValueError:
        try:
            value = float(body) * scale
        except ValueError:
            value = math.nan
    if not math.isfinite(value) or not float(value).is_integer() or not 1 <= value <= 10**18:
        raise argparse.ArgumentTypeError(
            f"expected a whole number such as 1000000000, 1e9 or 1G (or 'none'), got {text!r}")
    return int(value)
