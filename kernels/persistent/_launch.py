"""One launch of a persistent kernel on a ``MappedSlotRing``: start, watch, stop.

Both persistent kernels (the echo and the pre-decoder) run under a :class:`KernelRun`:

- **Launch.** On a GPU the kernel is launched once, asynchronously, on its own CUDA stream
  (never the legacy default stream, which would wait behind it), after its arguments are on
  the device. Under ``NUMBA_ENABLE_CUDASIM=1`` a launch returns only when the kernel ends,
  so it runs in a daemon thread instead; an exception there is recorded, not lost.
- **Watchdog.** A host thread watches the ring's heartbeat. Silence for ``watchdog_s``
  seconds records :class:`KernelStalled` (naming the heartbeat, how long, and the ring's
  counts) and sets the shutdown flag; so does a kernel that exits unasked. Every later call
  that checks the run raises the recorded error, so a stuck kernel never leaves a process
  waiting forever.
- **Stop.** Set the shutdown flag and wait, at most about ``timeout_s``, for the kernel's
  exit flag (``MappedSlotRing.wait_for_exit``). A kernel that ignores it (a device hang)
  cannot be killed from the host short of destroying the CUDA context (process exit), so
  :meth:`KernelRun.stop` reports it instead of blocking.

While a simulated kernel runs, the simulator swaps the kernel module's ``cuda`` global for
its fake one, so host code makes no ``cuda.*`` call between launch and exit: everything is
prepared first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from numba import cuda

from qhil.bridge import STATE_EXITED, STATE_RUNNING, W_SHUTDOWN, MappedSlotRing, simulator_enabled

__all__ = ["KernelRun", "KernelStalled", "PersistentKernelError"]


class PersistentKernelError(RuntimeError):
    """The persistent kernel failed, exited unexpectedly or would not stop."""


class KernelStalled(PersistentKernelError):
    """The watchdog saw the kernel's heartbeat stop advancing."""


class KernelRun:
    """A persistent ``kernel`` launched once as ``[1, threads]`` on ``ring``.

    ``make_args(stream)`` returns the kernel's arguments (the ring's device views first),
    allocating any device memory on ``stream`` (0 in the simulator). ``what`` names the
    kernel in errors. ``watchdog_s=None`` runs no watchdog.
    """

    def __init__(self, kernel: Any, ring: MappedSlotRing, make_args: Callable[[Any], tuple],
                 *, threads: int, what: str, watchdog_s: float | None = None) -> None:  # fmt: skip
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        if watchdog_s is not None and watchdog_s <= 0:
            raise ValueError(f"watchdog_s must be > 0; got {watchdog_s}")
        self.ring, self.threads, self.what, self.watchdog_s = ring, threads, what, watchdog_s
        self.simulated = simulator_enabled()
        self._error: PersistentKernelError | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._launcher: threading.Thread | None = None
        self._stream: Any = None
        self._wd_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._launch(kernel, make_args)
        if watchdog_s is not None:
            self._watchdog = threading.Thread(target=self._watch, name="qhil-gpu-watchdog",
                                              daemon=True)  # fmt: skip
            self._watchdog.start()

    def _launch(self, kernel: Any, make_args: Callable[[Any], tuple]) -> None:
        if self.simulated:
            args = make_args(0)

            def run() -> None:
                try:
                    kernel[1, self.threads](*args)
                except BaseException as ex:  # recorded; the watchdog and the API report it
                    self.fail(PersistentKernelError(f"{self.what} kernel raised {ex!r}"))

            self._launcher = threading.Thread(target=run, name="qhil-cudasim-kernel", daemon=True)
            self._launcher.start()
        else:
            self._stream = cuda.stream()
            args = make_args(self._stream)
            self._stream.synchronize()  # the arguments are on the device before it runs
            kernel[1, self.threads, self._stream](*args)  # async; compiles once

    @property
    def error(self) -> PersistentKernelError | None:
        """The recorded failure (stall, kernel exception, unasked exit), or None."""
        return self._error

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def launcher_alive(self) -> bool:
        """Whether the simulator's launching thread still runs (False on a GPU)."""
        return self._launcher is not None and self._launcher.is_alive()

    def fail(self, err: PersistentKernelError) -> None:
        """Record ``err`` (the first failure wins) and ask the kernel to exit."""
        with self._lock:
            if self._error is None:
                self._error = err
        self.ring.request_shutdown()

    def check(self) -> None:
        """Raise the recorded error, or if this run was stopped."""
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise PersistentKernelError(f"this {self.what} is stopped; start a new one")

    def wait_running(self, timeout_s: float = 30.0) -> None:
        """Wait until the kernel reports that it runs; raise if it does not."""
        deadline = time.monotonic() + timeout_s
        while self.ring.state != STATE_RUNNING:
            if self._error is not None:
                raise self._error
            if self.ring.state == STATE_EXITED:
                raise PersistentKernelError(f"{self.what} kernel exited before it was asked to")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.what} kernel not running after {timeout_s} s")
            time.sleep(1e-3)

    def _watch(self) -> None:
        assert self.watchdog_s is not None
        ring, period = self.ring, min(0.05, self.watchdog_s / 10)
        last, since = ring.heartbeat, time.monotonic()
        while not self._wd_stop.wait(period):
            if self._error is not None:
                return
            if ring.state == STATE_EXITED:
                if not ring.word(W_SHUTDOWN):
                    self.fail(PersistentKernelError(f"{self.what} kernel exited without shutdown"))
                return
            beat, now = ring.heartbeat, time.monotonic()
            if beat != last:
                last, since = beat, now
            elif now - since >= self.watchdog_s:
                self.fail(KernelStalled(self._stall_message(beat, now - since)))
                return

    def _stall_message(self, beat: int, silent_s: float) -> str:
        ring = self.ring
        where = "never started" if ring.state != STATE_RUNNING else "running"
        return (
            f"{self.what} kernel stalled: heartbeat stuck at {beat} for {silent_s:.2f} s "
            f"(watchdog_s={self.watchdog_s}; kernel {where}; packets sent {ring.pushed}, "
            f"taken {ring.in_done}, results returned {ring.popped}); shutdown requested"
        )

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Set the shutdown flag; True once the kernel exited within about ``timeout_s``.

        A kernel that does not exit is recorded as this run's error.
        """
        if not self._stopped:
            self._stopped = True
            self.ring.request_shutdown()
        exited = self.ring.wait_for_exit(
            timeout_s=timeout_s, launcher=self._launcher, stream=self._stream
        )
        self._wd_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(1.0)
        if not exited:
            self.fail(
                PersistentKernelError(
                    f"{self.what} kernel did not exit within {timeout_s} s of the shutdown "
                    f"flag (state {self.ring.state}, heartbeat {self.ring.heartbeat})"
                )
            )
        return exited
