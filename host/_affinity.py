"""Pinning a busy-polling process to one CPU (``[frontend] cpu``, ``[decoder] cpu``).

Both ends of the loop poll without sleeping while a shot is in flight. Left to the
scheduler, either can be moved between CPUs (its caches cold again) or share one with
the other, and the tail grows. Pinning each to its own CPU, ideally one isolated from
other work (docs/rack_host.md), keeps both where they are. -1 leaves the process where
the scheduler puts it.

>>> with pinned("frontend", -1):  # -1: nothing changes
...     pass
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from qhil.host._config import check_cpu

__all__ = ["pinned"]


@contextlib.contextmanager
def pinned(table: str, cpu: int) -> Iterator[None]:
    """Run the block with this process pinned to ``cpu`` (-1: unchanged), then restore
    the CPUs it had: an in-process run leaves its caller as it found it."""
    if cpu == -1:
        yield
        return
    check_cpu(table, cpu)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
