"""Ctrl-C and SIGTERM during ``qhil run``: before the first round they interrupt at
once; once the front end streams, the first asks for a clean stop at a safe point."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["STOP_SIGNALS", "StopRequests", "ctrl_c_requests_stop"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; a service manager's stop


class StopRequests:
    """Ctrl-C and SIGTERM in the parent. Before the first round (``running`` False)
    they interrupt at once (KeyboardInterrupt: nothing to report yet); once the front
    end runs, the first asks for a clean stop at a safe point, a second interrupts."""

    def __init__(self) -> None:
        self.running = False
        self.stop = False

    def signalled(self) -> None:
        if self.stop or not self.running:
            raise KeyboardInterrupt
        self.stop = True


@contextmanager
def ctrl_c_requests_stop() -> Iterator[StopRequests]:
    """Handle Ctrl-C and SIGTERM with a fresh :class:`StopRequests` while inside.
    (benchmarks/gpu_loop.py finds the handler by this function's name.)"""
    requests = StopRequests()

    def handler(signum: int, frame: Any) -> None:
        requests.signalled()

    try:
        previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: no signal handling there
        yield requests
        return
    try:
        yield requests
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
