"""Compile without the cyclic garbage collector's full passes.

A compile allocates millions of small objects (the IR, clusters, hatching tables, the files'
text) and frees almost none of them in reference cycles: reference counting frees them as
usual. The cyclic collector, though, runs a full pass over the whole heap every so often as it
grows, and the heap grows with the ensemble, so those passes cost more the larger the spec
(a third of a 2000-net compile's time, for a few hundred objects found). `paused_gc()` keeps it
off for the duration and restores what was there.

>>> import gc
>>> with paused_gc():
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block; re-enable it after if it was on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
