"""A persistent echo kernel on a :class:`qhil.bridge.MappedSlotRing`: the bridge alone.

It measures what the mapped-memory ring costs with no compute in the way::

    with EchoLoopback(max_bytes=2048) as echo:       # launches the kernel ONCE
        ok = echo.round_trip(np.arange(48, dtype=np.uint8))
        echo.last_payload                            # the echo: payload XOR 0xFF

The kernel (one block; thread 0 polls, every thread copies) speaks the ring's
protocol exactly as ``PersistentPreDecoder``'s kernel does: wait for window
``n`` (its slot's flag reads ``n + 1``) *and* for output slot ``n`` to be free,
fence, copy ``H_LENGTH`` payload bytes (XOR 0xFF, so a stale slot can never pass
for an echo) with the header into the output ring, fence, publish
``W_IN_DONE`` and the output flag. It honours the shutdown flag on every poll
and bumps the heartbeat while it waits.

:meth:`EchoLoopback.round_trip` is one Numba ``njit`` call (``nogil``) that
publishes the window and spins on the output flag, so a ``perf_counter_ns``
pair around it measures the ring, plus one call into compiled code
(:meth:`EchoLoopback.call_overhead_ns` measures that call alone).
:meth:`EchoLoopback.round_trip_api` goes through the ring's Python methods
(``try_push`` then ``pop``) instead, as ``PersistentPreDecoder`` users do.

Under ``NUMBA_ENABLE_CUDASIM=1`` the launch blocks until the kernel ends, so it
runs in a daemon thread (as in ``PersistentPreDecoder``); the simulator checks
the protocol, not the timing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from numba import cuda

from qhil.bridge import (
    H_LENGTH,
    H_SEQ,
    H_SHOT,
    H_STREAM,
    HEADER_WORDS,
    STATE_EXITED,
    STATE_RUNNING,
    W_IN_DONE,
    W_OUT_DONE,
    W_STATE,
    MappedRingSpec,
    MappedSlotRing,
    consume_results,
    njit_cached,
    produce_window,
    simulator_enabled,
)
from qhil.kernels.persistent._device import await_flag, flag_store
from qhil.kernels.persistent._launch import KernelRun

__all__ = ["ECHO_SIGNATURE", "EchoLoopback", "echo_kernel"]


@cuda.jit
def echo_kernel(ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs):  # type: ignore[no-untyped-def]
    """Launch as ``[1, threads]`` once; echoes windows (payload XOR 0xFF) until shutdown."""
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(2, dtype=np.int64)  # thread 0's verdict (1 go, -1 stop), length
    n_slots = in_seq.shape[0]
    width = in_data.shape[1]  # (no min(): it needs a device to compile for)
    if out_data.shape[1] < width:
        width = out_data.shape[1]
    beat = np.int64(0)
    if tid == 0:
        flag_store(ctrl, W_STATE, STATE_RUNNING)
    n = np.int64(0)
    while True:
        slot = n & (n_slots - 1)
        if tid == 0:
            length = np.int64(0)
            status, beat = await_flag(ctrl, in_seq, slot, n + 1, beat)
            if status > 0:  # and output slot n is free (record n - n_slots consumed)
                status, beat = await_flag(ctrl, ctrl, W_OUT_DONE, n + 1 - n_slots, beat)
            cuda.threadfence_system()  # payload reads stay after the flag reads
            if status > 0:
                length = in_hdr[slot, H_LENGTH]
                if length > width:
                    length = width
                if length < 0:
                    length = 0
            sh[0] = status
            sh[1] = length
        cuda.syncthreads()
        if sh[0] < 0:
            break
        length = sh[1]
        for j in range(tid, length, nth):
            out_data[slot, j] = in_data[slot, j] ^ 0xFF
        if tid == 0:
            out_hdr[slot, H_STREAM] = in_hdr[slot, H_STREAM]
            out_hdr[slot, H_SHOT] = in_hdr[slot, H_SHOT]
            out_hdr[slot, H_SEQ] = in_hdr[slot, H_SEQ]
            out_hdr[slot, H_LENGTH] = length
            out_obs[slot, 0] = 0
        cuda.threadfence_system()  # each thread's reads and writes are complete
        cuda.syncthreads()
        if tid == 0:
            flag_store(ctrl, W_IN_DONE, n + 1)
            flag_store(out_seq, slot, n + 1)  # publish (release, system scope)
        n += 1  # every thread read sh before the last syncthreads: thread 0 may rewrite it
    if tid == 0:
        cuda.threadfence_system()
        flag_store(ctrl, W_STATE, STATE_EXITED)


ECHO_SIGNATURE = (
    "void(uint64[::1], uint64[::1], int64[:, ::1], uint8[:, ::1], "
    "uint64[::1], int64[:, ::1], uint8[:, ::1], uint8[:, ::1])"
)
"""``echo_kernel``'s argument types, for ``numba.cuda.compile_ptx`` without a GPU."""


# --------------------------------------------------------------------------- host side


@njit_cached(nogil=True)
def _wait(ctrl, out_seq, out_hdr, out_data, out_obs, local, hdr, data, obs, max_spins) -> int:
    """1 once one result was copied out, 0 if none within ``max_spins`` polls."""
    spins = 0
    while consume_results(ctrl, out_seq, out_hdr, out_data, out_obs, local, hdr, data, obs) == 0:
        spins += 1
        if spins >= max_spins:
            return 0
    return 1


@njit_cached(nogil=True)
def _send_and_wait(ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs,
                   local, payload, hdr, data, obs, max_spins) -> int:  # fmt: skip
    """Publish ``payload`` as the next window and spin for one result.

    1: echoed; 0: published, no result within ``max_spins`` polls (call ``_wait``);
    -1: the input ring is full.
    """
    if produce_window(ctrl, in_seq, in_hdr, in_data, local, 0, local[0], payload) == 0:
        return -1
    return _wait(ctrl, out_seq, out_hdr, out_data, out_obs, local, hdr, data, obs, max_spins)


@njit_cached(nogil=True)
def _nothing(ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs,
             local, payload, hdr, data, obs, max_spins) -> int:  # fmt: skip
    return 1


_SPINS = 1 << 20  # polls per compiled call before Python checks the clock


class EchoLoopback:
    """A :class:`MappedSlotRing` with :func:`echo_kernel` running on it (launched once)."""

    def __init__(self, max_bytes: int, *, n_slots: int = 16, threads: int | None = None) -> None:
        self.ring = MappedSlotRing(
            MappedRingSpec(n_slots=n_slots, in_width=max_bytes, out_width=max_bytes, n_obs=1)
        )
        self._hdr = np.zeros((1, HEADER_WORDS), dtype=np.int64)
        self._data = np.zeros((1, max_bytes), dtype=np.uint8)
        self._obs = np.zeros((1, 1), dtype=np.uint8)
        nthreads = threads if threads is not None else (2 if simulator_enabled() else 128)
        self.run = KernelRun(echo_kernel, self.ring, lambda stream: self.ring.device_args(),
                             threads=nthreads, what="echo")  # fmt: skip
        """The launch: its recorded error and stop."""

    @property
    def simulated(self) -> bool:
        return self.run.simulated

    @property
    def threads(self) -> int:
        return self.run.threads

    def _args(self, payload: np.ndarray) -> tuple[Any, ...]:
        return (*self.ring.host_args(), payload, self._hdr, self._data, self._obs)

    def wait_running(self, timeout_s: float = 30.0) -> None:
        """Wait until the kernel reports that it runs; raise if it does not."""
        self.run.wait_running(timeout_s)

    @property
    def last_header(self) -> np.ndarray:
        """int64[4] header of the last echo (stream, shot, seq, length)."""
        return self._hdr[0]

    @property
    def last_payload(self) -> np.ndarray:
        """The last echo's payload (the bytes sent, XOR 0xFF)."""
        return self._data[0, : int(self._hdr[0, H_LENGTH])]

    def round_trip(self, payload: np.ndarray, *, timeout_s: float = 5.0) -> None:
        """Send one window and wait for its echo in compiled code; raise on a timeout.

        ``payload`` must be C-contiguous uint8 (no conversion here: it would be timed).
        """
        args = (*self._args(payload), _SPINS)
        r = _send_and_wait(*args)
        if r == 1:
            return
        if r < 0:
            raise RuntimeError("echo ring full: a previous window was never echoed")
        deadline = time.monotonic() + timeout_s
        wait_args = (args[0], *args[4:9], *args[10:14])  # ctrl, output ring, local, dests
        while not _wait(*wait_args):
            self.run.check()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no echo within {timeout_s} s (pushed {self.ring.pushed}, kernel took "
                    f"{self.ring.in_done}, popped {self.ring.popped}, "
                    f"heartbeat {self.ring.heartbeat})"
                )

    def call_overhead_ns(self, payload: np.ndarray, n: int = 2000) -> np.ndarray:
        """int64[n]: perf_counter_ns around an empty compiled call with round_trip's arguments."""
        args = (*self._args(payload), _SPINS)
        _nothing(*args)  # compiled before the first timed call
        out = np.empty(n, dtype=np.int64)
        clock = time.perf_counter_ns
        for i in range(n):
            t0 = clock()
            _nothing(*args)
            out[i] = clock() - t0
        return out

    def round_trip_api(self, payload: np.ndarray, *, timeout_s: float = 5.0) -> None:
        """Send one window with ``ring.try_push`` and wait for it with ``ring.pop(1)``."""
        ring = self.ring
        if not ring.try_push(0, ring.pushed, payload):
            raise RuntimeError("echo ring full: a previous window was never echoed")
        deadline = time.monotonic() + timeout_s
        while True:
            hdr, data, _ = ring.pop(1)
            if len(hdr):
                self._hdr[0] = hdr[0]
                self._data[0, : data.shape[1]] = data[0]
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no echo within {timeout_s} s (Python API path)")

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Ask the kernel to exit; True if it did within ``timeout_s``."""
        return self.run.stop(timeout_s)

    def __enter__(self) -> EchoLoopback:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
