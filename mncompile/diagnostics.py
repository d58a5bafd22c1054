"""The one error type of the compiler and its one formatter.

Every user error is an `MNError` carrying a message, the source span it is about and
optionally a hint saying what would be valid. `format_error` renders it the way
compilers do::

    v5.mnet:14:11: error: kernel sizes must be odd, got 4
       14 |     block { 4:64 }
          |             ^^^^
      = help: use 1, 3, 5, 7 ...

The CLI prints that and exits with status 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # for annotations only: the runtime and mncompile.formats import this module without the IR
    from mncompile.ir import Span


class MNError(Exception):
    """A user error: bad spec text, bad options, bad data. Always exits with status 2.

    `detail` is the user code's own exception behind it (a `--data FILE.py:FUNCTION` that
    raised), whose traceback `mncompile --debug` prints.
    """

    detail: BaseException | None = None

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        hint: str | None = None,
        source: str | None = None,
        text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint
        self.source = source
        self.text = text

    def with_source(self, source: str, text: str) -> MNError:
        """Attach the file name and text, unless the error already has them."""
        if self.source is None:
            self.source = source
        if self.text is None:
            self.text = text
        return self

    def __str__(self) -> str:
        return format_error(self)


def format_error(err: MNError) -> str:
    """`file:line:col: error: message`, the source line, a caret under the span, the hint."""
    source = err.source or "<input>"
    span = err.span
    out: list[str] = []
    if span is None or span.line <= 0:
        # an error about no source text (a file, a call of the API) names no source
        out.append(f"{source}: error: {err.message}" if err.source else f"error: {err.message}")
    else:
        out.append(f"{source}:{span.line}:{span.column}: error: {err.message}")
        lines = (err.text or "").split("\n")
        if 1 <= span.line <= len(lines):
            src_line = lines[span.line - 1].rstrip("\r").expandtabs(1)
            gutter = str(span.line)
            pad = " " * len(gutter)
            if span.end_line == span.line and span.end_column > span.column:
                width = span.end_column - span.column
            else:
                width = max(1, len(src_line) - span.column + 1) if span.end_line > span.line else 1
            width = max(1, min(width, max(1, len(src_line) - span.column + 1)))
            shown, offset, width = _window(src_line, span.column - 1, width)
            out.append(f" {gutter} | {shown}")
            out.append(f" {pad} | {' ' * offset}{'^' * width}")
    if err.hint:
        out.append(f"  = help: {err.hint}")
    return "\n".join(out)


#: the longest source line quoted whole; longer ones are cut to a window around the caret
MAX_SHOWN = 160


def _window(line: str, start: int, width: int) -> tuple[str, int, int]:
    """(the text to quote, the caret's offset in it, the caret's width) for a source line.

    A line of 100 000 digits must not flood the terminal: past `MAX_SHOWN` characters only
    a window around the caret is shown, with '...' where text was left out.
    """
    if len(line) <= MAX_SHOWN:
        return line, start, width
    lo = max(0, start - MAX_SHOWN // 3)
    hi = min(len(line), lo + MAX_SHOWN)
    head = "..." if lo > 0 else ""
    tail = "..." if hi < len(line) else ""
    return head + line[lo:hi] + tail, len(head) + start - lo, max(1, min(width, hi - start))
