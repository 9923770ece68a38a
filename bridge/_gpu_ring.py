"""Host↔GPU slot rings in mapped pinned host memory, for a persistent GPU kernel.

The host producer writes windows into an *input ring*; a persistent kernel that
was launched once polls it, computes, and writes results into an *output ring*
that the host polls. Both rings, and a small control block, live in mapped
pinned host memory (``numba.cuda.mapped_array``; later CuPy pinned + mapped
memory): page-locked host pages that the GPU reads and writes directly over
PCIe/NVLink-C2C, with no ``cudaMemcpy`` and no launch per window.

Layout (``n_slots`` a power of two; slot ``n & (n_slots - 1)`` for window ``n``)
--------------------------------------------------------------------------------
- ``ctrl``: uint64[CONTROL_WORDS], C-contiguous. Words 0..63 hold one flag per
  64-byte line so that host- and kernel-written words never share a line:
  ``W_SHUTDOWN`` (host → kernel, nonzero = exit), ``W_HEARTBEAT`` (kernel bumps it
  while polling and after each window), ``W_IN_DONE`` (kernel: input windows it
  has copied out; their slots are free again), ``W_OUT_DONE`` (host: results it
  has consumed), ``W_STATE`` (kernel: ``STATE_RUNNING`` on entry,
  ``STATE_EXITED`` on exit), ``W_STALL`` (test hook: nonzero makes the kernel stop
  heart-beating, still honouring shutdown). Words ``W_COUNTERS`` ..
  ``W_COUNTERS + COUNTER_WORDS - 1`` are counters that only the kernel writes
  (contiguous: no host-written word shares their lines); what each counts is
  the kernel's to define (``qhil.kernels.persistent._kernel``).
- input ring: ``in_seq`` uint64[n_slots]; ``in_hdr`` int64[n_slots, HEADER_WORDS]
  (``H_STREAM``, ``H_SHOT``, ``H_SEQ``, ``H_LENGTH`` = bytes in the slot);
  ``in_data`` uint8[n_slots, in_width] (a window, or one raw wire-v1 packet:
  :class:`~qhil.bridge._gpu_sender.GpuPacketSender` writes only ``H_LENGTH`` and
  the bytes, and the kernel reads the header from the bytes).
- output ring: ``out_seq`` uint64[n_slots]; ``out_hdr`` int64[n_slots, HEADER_WORDS]
  (``H_STREAM``, ``H_SHOT``, ``H_SEQ`` echoed; ``H_CORRECTIONS`` = corrections applied;
  ``H_STATUS`` a ``CorrectionStatus``; ``H_T_FPGA`` echoed; ``H_ROUNDS`` rounds
  received); ``out_data`` uint8[n_slots, out_width] (the residual, 0/1 bytes);
  ``out_obs`` uint8[n_slots, n_obs] (the logical flips, 0/1).
All are C-contiguous.

Protocol: a per-slot sequence flag plus a consumer counter per ring
-------------------------------------------------------------------
Window ``n`` (0, 1, 2, ...) is *published* when its slot's flag equals ``n + 1``
(flags start at 0 and only grow, so a stale flag from the previous lap,
``n + 1 - n_slots``, never matches). The consumer's counter says which slots
are free again.

- Host producer (``produce_window``, Numba njit on the CPU): wait until
  ``load_acquire(ctrl[W_IN_DONE]) > n - n_slots`` (the kernel has finished
  reading the slot's previous window); write header and payload; then
  ``store_release(in_seq[slot], n + 1)``. On x86-64 release is a plain store
  (TSO); on aarch64 it is ``STLR``, which is what keeps the payload stores
  ahead of the flag there (``qhil.bridge._atomics``).
- Kernel consumer (``qhil.kernels.persistent``): thread 0 spins on
  ``flag_load(in_seq[slot])`` (an acquire load at system scope, below),
  checking ``ctrl[W_SHUTDOWN]`` on *every* iteration and bumping the heartbeat
  every ``HEARTBEAT_EVERY`` polls; when the flag reads ``n + 1`` it executes
  ``cuda.threadfence_system()`` and the block synchronizes; then every thread
  copies its share of the payload to device (or shared) memory, fences,
  synchronizes, and thread 0 publishes ``ctrl[W_IN_DONE] = n+1``.
- Kernel producer: thread 0 waits for ``ctrl[W_OUT_DONE] > m - n_slots`` for its
  output record ``m`` (the streaming kernel emits one per shot, not per window,
  and claims the slot when the shot opens); every thread writes its share of
  the result, then ``cuda.threadfence_system()``; ``syncthreads()``; thread 0
  stores ``out_seq[slot] = m + 1`` (release, system scope).
- Host consumer (``consume_results``): ``load_acquire(out_seq[slot]) == m + 1``, copy
  the result, ``store_release(ctrl[W_OUT_DONE], m + 1)``.

Fences and loads on real hardware (why each is there)
-----------------------------------------------------
- The GPU must *re-read* the flag each iteration: a plain load may be hoisted
  out of the loop or served from L1. ``flag_load`` emits
  ``ld.acquire.sys.u64`` (sm_70+): a strong load at system scope, so it goes to
  host memory each time and no later load (the payload) is performed before it.
  An alternative on older toolchains is ``ld.volatile`` or an atomic that does
  not write. Not ``atomicAdd(&flag, 0)``: atomics on mapped memory are atomic
  only from the GPU's point of view (CUDA guide, "Mapped Memory"), so the
  read-modify-write could write back a stale value over a flag the host has
  just stored, losing the publication.
- After the acquire, ``__threadfence_system()`` (``fence.sc.sys``/``membar.sys``)
  is kept as belt and braces for drivers and architectures where the acquire
  is weaker than documented; then ``__syncthreads()`` orders the other
  threads' payload reads after thread 0's observation.
- Before publishing, every writing thread issues ``__threadfence_system()``
  (its stores to host memory become visible to the host before any later
  store of that thread) and the block synchronizes; thread 0 then stores the
  flag with ``st.release.sys``. This is the CUDA guide's pattern for handing
  results to another agent. Without the fence, PCIe posted writes from
  different SMs / threads may become visible in any order, and the host could
  read a half-written slot.
- ``W_IN_DONE`` is stored after the fence too: the payload reads must be
  complete before the host is told it may overwrite the slot.

Why mapped pinned memory is coherent enough for this
-----------------------------------------------------
Pinned pages are never moved or swapped, so the GPU's mapping stays valid while
the kernel runs. GPU accesses to them are uncached in the GPU's L2 for
system-scope operations and travel over PCIe as ordinary memory reads and
writes, which the root complex keeps coherent with the CPU caches (PCIe is
I/O-coherent on x86 and on server ARM). So the host sees GPU writes without
cache maintenance, and the GPU sees host writes once they leave the CPU's
store buffer, which the host's release store ensures. The remaining work is
*ordering*, which is what the fences above provide. (Write-combined
allocations, ``wc=True``, are *not* suitable: the CPU may buffer and reorder
those stores; this module never asks for them.)

Each flag and counter has exactly one writer; the other side only reads it.

In the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) ``mapped_array`` is a
host NumPy array shared with the kernel's Python threads, ``flag_load`` is a
plain read, and the fences are no-ops; the protocol is the same.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from numba import config, cuda

from qhil.bridge._atomics import load_acquire_u64, store_release_u64
from qhil.bridge._jit import njit_cached

__all__ = [
    "CONTROL_WORDS",
    "COUNTER_WORDS",
    "HEADER_WORDS",
    "HEARTBEAT_EVERY",
    "H_CORRECTIONS",
    "H_LENGTH",
    "H_ROUNDS",
    "H_SEQ",
    "H_SHOT",
    "H_STATUS",
    "H_STREAM",
    "H_T_FPGA",
    "STATE_EXITED",
    "STATE_IDLE",
    "STATE_RUNNING",
    "W_COUNTERS",
    "W_HEARTBEAT",
    "W_IN_DONE",
    "W_OUT_DONE",
    "W_SHUTDOWN",
    "W_STALL",
    "W_STATE",
    "MappedRingSpec",
    "MappedSlotRing",
    "consume_results",
    "produce_window",
    "simulator_enabled",
]

W_SHUTDOWN, W_HEARTBEAT, W_IN_DONE, W_OUT_DONE, W_STATE, W_STALL = 0, 8, 16, 24, 32, 40
W_COUNTERS, COUNTER_WORDS = 64, 32  # kernel-written counters (one writer: no line sharing)
CONTROL_WORDS = W_COUNTERS + COUNTER_WORDS
STATE_IDLE, STATE_RUNNING, STATE_EXITED = 0, 1, 2
HEADER_WORDS = 8
H_STREAM, H_SHOT, H_SEQ, H_STATUS, H_T_FPGA, H_ROUNDS = 0, 1, 2, 4, 5, 6
# Word 3 means one thing per ring: the input slot's length, the output slot's corrections.
H_LENGTH = 3  # input ring: bytes in the slot
H_CORRECTIONS = 3  # output ring: corrections the pre-decoder applied
HEARTBEAT_EVERY = 64  # kernel polls between heartbeat stores (each store is a bus write)


def simulator_enabled() -> bool:
    """Whether Numba runs CUDA kernels in its simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


# --------------------------------------------------------------------------- host side


@njit_cached(nogil=True)
def _load(arr: np.ndarray, idx: int) -> int:
    return load_acquire_u64(arr, idx)


@njit_cached(nogil=True)
def _store(arr: np.ndarray, idx: int, value: int) -> None:
    store_release_u64(arr, idx, value)


@njit_cached(nogil=True)
def _reserve(ctrl, in_seq, local) -> int:
    """The slot of the next input window ``local[0]`` if it is free, else -1.

    Free means the kernel has copied out window ``n - n_slots`` (``W_IN_DONE``,
    acquire: its reads of the slot are over before this producer writes it).
    """
    n = local[0]
    n_slots = in_seq.shape[0]
    if n - np.int64(load_acquire_u64(ctrl, W_IN_DONE)) >= n_slots:
        return -1
    return n & (n_slots - 1)


@njit_cached(nogil=True)
def _commit(in_seq, in_hdr, local, length) -> None:
    """Publish the reserved window ``local[0]`` holding ``length`` bytes."""
    n = local[0]
    slot = n & (in_seq.shape[0] - 1)
    in_hdr[slot, H_LENGTH] = length
    store_release_u64(in_seq, slot, n + 1)  # the slot's stores stay ahead of this
    local[0] = n + 1


@njit_cached(nogil=True)
def produce_window(ctrl, in_seq, in_hdr, in_data, local, stream, shot, payload) -> int:
    """Publish one window; 1 if published, 0 if the ring is full.

    local: int64[2] = [next window n, unused]; payload: uint8[k], k <= in_width.
    """
    slot = _reserve(ctrl, in_seq, local)
    if slot < 0:
        return 0  # the kernel has not copied out window n - n_slots yet
    in_hdr[slot, H_STREAM] = stream
    in_hdr[slot, H_SHOT] = shot
    in_hdr[slot, H_SEQ] = local[0]
    for i in range(payload.shape[0]):
        in_data[slot, i] = payload[i]
    _commit(in_seq, in_hdr, local, payload.shape[0])
    return 1


@njit_cached(nogil=True)
def consume_results(ctrl, out_seq, out_hdr, out_data, out_obs, local, hdr, data, obs) -> int:
    """Copy up to ``hdr.shape[0]`` published results out; returns how many.

    local: int64[2] = [unused, next result n]; hdr int64[m, HEADER_WORDS],
    data uint8[m, out_width], obs uint8[m, n_obs] (C-contiguous destinations).
    """
    n_slots = out_seq.shape[0]
    k = 0
    while k < hdr.shape[0]:
        n = local[1]
        slot = n & (n_slots - 1)
        if np.int64(load_acquire_u64(out_seq, slot)) != n + 1:
            break  # acquire: the payload reads below cannot move above this load
        for j in range(out_hdr.shape[1]):
            hdr[k, j] = out_hdr[slot, j]
        for j in range(out_data.shape[1]):
            data[k, j] = out_data[slot, j]
        for j in range(out_obs.shape[1]):
            obs[k, j] = out_obs[slot, j]
        local[1] = n + 1
        k += 1
    if k:
        store_release_u64(ctrl, W_OUT_DONE, local[1])  # the reads above are done
    return k


@dataclasses.dataclass(frozen=True)
class MappedRingSpec:
    """Sizes of a :class:`MappedSlotRing`.

    Attributes:
        n_slots: slots per direction, a power of two >= 2.
        in_width: payload bytes per input slot (one 0/1 byte per detector).
        out_width: payload bytes per output slot (the residual).
        n_obs: logical-flip bytes per output slot.
    """

    n_slots: int
    in_width: int
    out_width: int
    n_obs: int

    def __post_init__(self) -> None:
        n = self.n_slots
        if not isinstance(n, int) or n < 2 or n & (n - 1):
            raise ValueError(f"n_slots={n!r} must be a power of two >= 2 (e.g. 16 or 64)")
        for name in ("in_width", "out_width", "n_obs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


def _host_view(arr: Any) -> np.ndarray:
    """A plain ndarray aliasing a mapped array's host memory (real or simulated)."""
    if simulator_enabled():
        return arr._ary  # FakeCUDAArray wraps the NumPy array the kernel threads use
    return np.asarray(arr)  # MappedNDArray is an ndarray subclass over the pinned pages


class MappedSlotRing:
    """An input ring, an output ring and a control block in mapped pinned memory.

    ``device_args()`` gives the buffers to pass to the kernel (in this order:
    ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs); the
    host methods use NumPy views of the same pages. One host producer thread
    (``try_push``) and one host consumer thread (``pop``) at a time.
    """

    def __init__(self, spec: MappedRingSpec) -> None:
        self.spec = spec
        s = spec.n_slots
        shapes: dict[str, tuple[tuple[int, ...], Any]] = {
            "ctrl": ((CONTROL_WORDS,), np.uint64),
            "in_seq": ((s,), np.uint64),
            "in_hdr": ((s, HEADER_WORDS), np.int64),
            "in_data": ((s, spec.in_width), np.uint8),
            "out_seq": ((s,), np.uint64),
            "out_hdr": ((s, HEADER_WORDS), np.int64),
            "out_data": ((s, spec.out_width), np.uint8),
            "out_obs": ((s, spec.n_obs), np.uint8),
        }
        # Mapped pinned host memory, never write-combined (see the module docs).
        self._dev = {k: cuda.mapped_array(shape, dtype=dt) for k, (shape, dt) in shapes.items()}
        self._host = {k: _host_view(v) for k, v in self._dev.items()}
        for v in self._host.values():
            v[...] = 0
        self._local = np.zeros(2, dtype=np.int64)  # [next window to push, next result to pop]
        _store(self._host["ctrl"], W_SHUTDOWN, 0)  # also compiles the host helpers up front,
        self.pop(1)  # not at the first stop() or poll() (a no-op: nothing is published yet)

    def device_args(self) -> tuple[Any, ...]:
        """Kernel arguments: ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs."""
        keys = ("ctrl", "in_seq", "in_hdr", "in_data", "out_seq", "out_hdr", "out_data", "out_obs")
        return tuple(self._dev[k] for k in keys)

    # ---- producer

    def host_args(self) -> tuple[np.ndarray, ...]:
        """The host views ``(ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data,
        out_obs, local)``, for compiled callers of :func:`produce_window` and
        :func:`consume_results` (``local``: int64[2], the next window to publish and
        the next result to consume; those two functions advance it)."""
        h = self._host
        names = ("ctrl", "in_seq", "in_hdr", "in_data", "out_seq", "out_hdr", "out_data", "out_obs")
        return (*(h[k] for k in names), self._local)

    @property
    def pushed(self) -> int:
        """Windows published so far."""
        return int(self._local[0])

    def try_push(self, stream: int, shot: int, payload: np.ndarray) -> bool:
        """Publish one window (payload uint8[k], k <= in_width); False if the ring is full."""
        h = self._host
        p = np.ascontiguousarray(payload, dtype=np.uint8)
        if p.ndim != 1 or p.shape[0] > self.spec.in_width:
            raise ValueError(f"payload must be uint8[<= {self.spec.in_width}]; got {p.shape}")
        args = (h["ctrl"], h["in_seq"], h["in_hdr"], h["in_data"], self._local)
        return bool(produce_window(*args, int(stream), int(shot), p))

    # ---- consumer
    @property
    def popped(self) -> int:
        """Results consumed so far."""
        return int(self._local[1])

    def pop(self, max_n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copy out the published results (at most ``max_n``, default n_slots).

        Returns (int64[k, HEADER_WORDS] headers, uint8[k, out_width] payloads,
        uint8[k, n_obs] logical flips), fresh C-contiguous arrays.
        """
        m = self.spec.n_slots if max_n is None else max_n
        hdr = np.empty((m, HEADER_WORDS), dtype=np.int64)
        data = np.empty((m, self.spec.out_width), dtype=np.uint8)
        obs = np.empty((m, self.spec.n_obs), dtype=np.uint8)
        h = self._host
        k = consume_results(
            h["ctrl"], h["out_seq"], h["out_hdr"], h["out_data"], h["out_obs"], self._local,
            hdr, data, obs,
        )  # fmt: skip
        return hdr[:k], data[:k], obs[:k]

    # ---- control block
    def word(self, w: int) -> int:
        """Acquire-load control word ``w``."""
        return int(_load(self._host["ctrl"], w))

    def set_word(self, w: int, value: int) -> None:
        """Release-store control word ``w`` (host-written words only)."""
        _store(self._host["ctrl"], w, value)

    def request_shutdown(self) -> None:
        self.set_word(W_SHUTDOWN, 1)

    def wait_for_exit(self, *, timeout_s: float, launcher: Any, stream: Any) -> bool:
        """After :meth:`request_shutdown`: True once the kernel has said ``STATE_EXITED``
        (and is gone), waiting at most about ``timeout_s``.

        ``launcher``: the simulator's launching thread (joined), or None on a GPU,
        where ``stream``, the kernel's CUDA stream (or None), is synchronized once
        the kernel has exited, so its launch is over too.
        """
        deadline = time.monotonic() + timeout_s
        while self.state != STATE_EXITED and time.monotonic() < deadline:
            if launcher is not None and not launcher.is_alive():
                break
            time.sleep(1e-3)
        exited = self.state == STATE_EXITED
        if launcher is not None:
            launcher.join(max(0.0, deadline - time.monotonic()))
            return exited and not launcher.is_alive()
        if exited and stream is not None:
            stream.synchronize()
        return exited

    @property
    def heartbeat(self) -> int:
        return self.word(W_HEARTBEAT)

    @property
    def state(self) -> int:
        return self.word(W_STATE)

    @property
    def in_done(self) -> int:
        return self.word(W_IN_DONE)

    def counter_words(self) -> np.ndarray:
        """uint64[COUNTER_WORDS], a fresh copy of the kernel-written counters.

        Each word is read after an acquire load of ``W_HEARTBEAT``; a counter the
        kernel is updating may read one packet behind, never torn (aligned 8-byte
        words). What each counts is the kernel's definition.
        """
        self.word(W_HEARTBEAT)
        return self._host["ctrl"][W_COUNTERS : W_COUNTERS + COUNTER_WORDS].copy()
