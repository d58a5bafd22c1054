"""The one "did you mean" helper: the closest known word to a misspelt one.

The parser suggests keywords and families, the checks suggest training settings and
datasets; all of them through `suggest`, so every hint follows one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import Levenshtein


def suggest(word: str, options: Sequence[str], *, words_only: bool = False) -> str | None:
    """The option closest to `word` (edit distance; ties: the first in sort order), if close enough.

    Close enough: at most a third of the option's length away, rounded up from two thirds, and
    always 1 ('inptu' -> 'input' is 2 edits of 5 and counts). With `words_only`, a `word` that
    is not an identifier (a number, a brace) gets no suggestion: it is no misspelt keyword.

    >>> suggest("inptu", ["input", "classes"]), suggest("clases", ("classes", "input"))
    ('input', 'classes')
    >>> suggest("optimizer", ["input", "classes"]) is None, suggest("{", ["x"], words_only=True) is None
    (True, True)
    """
    if not options or (words_only and not word.isidentifier()):
        return None
    best = min(options, key=lambda o: (Levenshtein.distance(word, o), o))
    return best if Levenshtein.distance(word, best) <= max(1, (len(best) + 1) // 3) else None
