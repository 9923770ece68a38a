"""``GcPause``: no automatic garbage collection inside a hot loop; the loop collects at
points of its choosing instead.

CPython runs a young-generation collection every 700 net allocations or so. The loops
allocate a few small objects per shot, so a collection (tens of µs) would land on a
shot in flight every few dozen shots: a p99 event made by the runtime, not the work.
Inside ``GcPause`` automatic collection is off; the loop calls :meth:`GcPause.collect`
where no shot is waiting on it (between shots, or while idle), at most every
``every_s``. Reference counting still frees everything acyclic at once, so only cyclic
garbage waits for those points. Leaving the block restores the collector as it was.

>>> import gc
>>> with GcPause(every_s=0.05) as pause:
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcPause"]


class GcPause:
    """Automatic collection off for the block; :meth:`collect` runs a young one when due."""

    def __init__(self, *, every_s: float = 0.05) -> None:
        self.every_ns = int(every_s * 1e9)
        self._next = 0
        self._was_enabled = False

    def __enter__(self) -> GcPause:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._next = time.monotonic_ns() + self.every_ns
        return self

    def collect(self, now_ns: int) -> None:
        """At a safe point: collect the young generation if ``every_s`` has passed."""
        if now_ns >= self._next:
            self._next = now_ns + self.every_ns
            gc.collect(0)

    def __exit__(self, *exc: Any) -> None:
        if self._was_enabled:
            gc.enable()
