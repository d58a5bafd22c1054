"""Plain-text tables for the terminal: right-aligned numbers, no colour, stable output."""

from __future__ import annotations

from collections.abc import Sequence


def human(n: float) -> str:
    """A count in engineering units: 1234567 -> '1.23M'."""
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) and not float(n).is_integer() else str(int(n))


def duration(seconds: float) -> str:
    """'1h05m', '3m07s', '42s'.

    >>> duration(3907), duration(187), duration(42.4)
    ('1h05m', '3m07s', '42s')
    """
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def render(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table with a header rule; columns whose cells are all numbers align right."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    numeric = [
        all(isinstance(r[i], (int, float)) or _looks_numeric(str(r[i])) for r in rows) and rows
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if numeric[i] else v.ljust(w) for i, (v, w) in
                 enumerate(zip(values, widths, strict=True))]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _looks_numeric(s: str) -> bool:
    s = s.rstrip("kMGT%x")
    try:
        float(s)
    except ValueError:
        return False
    return True
