"""Single-producer single-consumer packet ring in POSIX shared memory.

One process creates the ring (the owner); the other attaches by name. One
sender and one receiver at a time.

A ring records which process created it. If every process of a run dies at
once (so nothing unlinks the rings), the next :meth:`ShmRing.create` of that
name finds its creator gone, removes the stale segment, logs a warning and
creates it afresh; if the creator still runs, it refuses, naming that process.

The segment's layout, its memory ordering and the compiled kernels that move
packets: ``_ring_kernels.py``; naming, mapping and stale-ring removal:
``_ring_segment.py``.

>>> from qhil.bridge._transport import packet_buffers
>>> with ShmRing.create(n_slots=4, slot_size=64) as ring:
...     tx, rx = ring.sender(), ring.receiver()
...     [tx.try_send(bytes([i])) for i in range(5)]
...     out, lengths = packet_buffers(8, ring.max_packet)
...     n = rx.recv_into(out, lengths, timeout_s=0.0)
...     n, [bytes(out[i, : lengths[i]]) for i in range(n)]
[True, True, True, True, False]
(4, [b'\\x00', b'\\x01', b'\\x02', b'\\x03'])
"""

from __future__ import annotations

import contextlib
import os
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from qhil.bridge._ring_kernels import (
    CONTROL_BYTES,
    LAYOUT_WORD,
    W_CLOSED,
    W_CREATOR,
    W_HEAD,
    W_LAYOUT,
    W_NSLOTS,
    W_SLOTSIZE,
    W_TAIL,
    load,
    pop,
    publish,
    push,
    room,
    store,
)
from qhil.bridge._ring_segment import (
    check_geometry,
    map_segment,
    process_token,
    read_layout,
    remove_if_stale,
    unique_name,
)
from qhil.bridge._transport import Backoff, TransportClosed, as_packet, check_recv_buffers

__all__ = ["RingReceiver", "RingSender", "ShmRing", "closed_ring_args"]

_SPINS = 2048  # compiled spin iterations between deadline checks (~10 µs)


def closed_ring_args(max_packet: int = 252) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Private arrays typed like a ring end's ``kernel_args()``, for a ring marked closed:
    a compiled caller warms up (compiles, or loads its cache) on them before a run, and
    every ring call returns at once with "closed".

    >>> ctrl, slots, local = closed_ring_args()
    >>> ctrl.dtype, slots.shape, local.dtype
    (dtype('uint64'), (2, 256), dtype('int64'))
    """
    ctrl = np.zeros(CONTROL_BYTES // 8, dtype=np.uint64)
    ctrl[W_CLOSED] = 1
    return ctrl, np.zeros((2, max_packet + 4), dtype=np.uint8), np.zeros(2, dtype=np.int64)


class _RingEnd:
    _local: np.ndarray

    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        self.name, self.max_packet, self._spin_s = name, slots.shape[1] - 4, spin_s
        self._ctrl: np.ndarray | None = ctrl
        self._slots = slots  # uint8[n_slots, slot_size], C-contiguous view of the slots

    def _live(self) -> np.ndarray:
        if self._ctrl is None:
            raise TransportClosed(f"this end of ring {self.name!r} is closed")
        return self._ctrl

    def _release(self) -> None:  # drop every view of the mapping so it can be unmapped
        self._ctrl, self._slots = None, np.zeros((1, 5), np.uint8)

    def kernel_args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ctrl, slots, local)`` for a compiled caller of ``ring_pop`` (a receiver's)
        or ``ring_room``/``ring_publish`` (a sender's): ctrl uint64[48], slots
        uint8[n_slots, slot_size], local int64[2] (this end's counter and its cached
        copy of the other's). Raises ``TransportClosed`` once this end is closed; do
        not mix compiled calls with this end's methods while one is running."""
        return self._live(), self._slots, self._local


class RingSender(_RingEnd):
    """Producer end of a :class:`ShmRing` (a PacketSender); get it from ``ring.sender()``."""

    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        super().__init__(name, ctrl, slots, spin_s=spin_s)
        self._local = np.array([load(ctrl, W_HEAD), load(ctrl, W_TAIL)], dtype=np.int64)
        self._reserved = False

    def _closed_error(self) -> TransportClosed:
        return TransportClosed(f"ring {self.name!r} was marked closed (peer shut down)")

    def reserve(self) -> np.ndarray | None:
        """Writable uint8[max_packet] view of the next slot, or None if full."""
        n_slots = self._slots.shape[0]
        r = room(self._live(), n_slots, self._local, 1)
        if r < 0:
            raise self._closed_error()
        self._reserved = r == 1
        return self._slots[self._local[0] & (n_slots - 1), 4:] if r else None

    def commit(self, length: int) -> None:
        """Publish the slot from :meth:`reserve`, holding ``length`` bytes."""
        if not self._reserved:
            raise RuntimeError("commit() needs a successful reserve() first (it returned None?)")
        if not 0 <= length <= self.max_packet:
            raise ValueError(f"length={length} must be in 0..max_packet={self.max_packet}")
        publish(self._live(), self._slots, self._local, length)
        self._reserved = False

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Copy and publish ``packet`` (bytes or uint8 1-D); False if full."""
        return self.send(packet, timeout_s=0.0)

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Publish ``packet``, spinning then backing off up to ``timeout_s``."""
        pkt = as_packet(packet, self.max_packet)
        ctrl, spins, backoff = self._live(), (1 if timeout_s == 0 else _SPINS), None
        while (r := push(ctrl, self._slots, self._local, pkt, spins)) == 0:
            backoff = backoff or Backoff(timeout_s, spin_s=self._spin_s)
            if not backoff.keep_waiting():
                return False
        if r < 0:
            raise self._closed_error()
        self._reserved = False  # head moved: a pending reservation is void
        return True

    def close(self) -> None:
        """Mark end-of-stream (the receiver drains, then sees TransportClosed)."""
        if self._ctrl is not None:
            store(self._ctrl, W_CLOSED, 1)
            self._ctrl = None


class RingReceiver(_RingEnd):
    """Consumer end of a :class:`ShmRing` (a PacketReceiver); get it from ``ring.receiver()``."""

    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        super().__init__(name, ctrl, slots, spin_s=spin_s)
        self._local = np.array([load(ctrl, W_TAIL), load(ctrl, W_HEAD)], dtype=np.int64)

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        check_recv_buffers(out, lengths, self.max_packet)
        ctrl, spins, backoff = self._live(), (1 if timeout_s == 0 else _SPINS), None
        while (k := pop(ctrl, self._slots, self._local, out, lengths, spins)) == 0:
            backoff = backoff or Backoff(timeout_s, spin_s=self._spin_s)
            if not backoff.keep_waiting():
                return 0
        if k == -1:
            raise TransportClosed(f"ring {self.name!r} is closed and drained (end of stream)")
        if k == -2:
            raise RuntimeError(f"ring {self.name!r}: a slot length exceeds max_packet (corrupt)")
        return int(k)

    def close(self) -> None:
        """Stop receiving on this end. Idempotent."""
        self._release()


class ShmRing:
    """A shared-memory SPSC ring; build with :meth:`create` or :meth:`attach`.

    The segment is owner-only (mode 0600): only processes of the creator's user
    (or root) can attach to it.
    """

    def __init__(self, name: str, mm: Any, *, shm: SharedMemory | None, n_slots: int, size: int):
        # `shm` is set for the owner only (unlinked on close); `mm` maps the segment.
        self.name, self.n_slots, self.slot_size, self.max_packet = name, n_slots, size, size - 4
        self._shm, self._mm, self._open = shm, mm, True
        # ctrl: uint64[CONTROL_BYTES // 8]; slots: uint8[n_slots, slot_size]; both C-contiguous.
        self._ctrl: np.ndarray | None = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        self._slots: Any = np.frombuffer(mm, np.uint8, n_slots * size, CONTROL_BYTES).reshape(
            n_slots, size
        )
        self._sender: RingSender | None = None
        self._receiver: RingReceiver | None = None

    @classmethod
    def create(
        cls, *, n_slots: int = 1024, slot_size: int = 256, name: str | None = None
    ) -> ShmRing:
        """Create and own a new ring (mode 0600, owner-only); :meth:`close` unlinks it.

        ``n_slots``: a power of two >= 2. ``slot_size``: a multiple of 64 in
        64..65536 (max_packet = slot_size - 4). ``name``: the shared-memory name
        (None = a unique one). A ring of that name left by a process that no
        longer runs is removed first (with a warning); one whose creator still
        runs raises FileExistsError naming that process.

        >>> with ShmRing.create(n_slots=8, slot_size=128) as r:
        ...     r.n_slots, r.max_packet, r.occupancy()
        (8, 124, 0)
        """
        check_geometry(n_slots, slot_size)
        if name is not None and (not name or "/" in name):
            raise ValueError(f"name={name!r} must be a non-empty name without '/', or None")
        size = CONTROL_BYTES + n_slots * slot_size
        name = name or unique_name()
        # SharedMemory creates (mode 0600) and tracks the name (the tracker unlinks it
        # if we crash); we map it like an attacher so both sides share one code path.
        try:
            shm = SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            remove_if_stale(name)
            shm = SharedMemory(name=name, create=True, size=size)
        shm.close()
        try:
            ring = cls(shm.name, map_segment(shm.name), shm=shm, n_slots=n_slots, size=slot_size)
        except BaseException:
            shm.unlink()
            raise
        ctrl = ring._control()
        ctrl[W_NSLOTS], ctrl[W_SLOTSIZE] = n_slots, slot_size
        ctrl[W_CREATOR] = process_token(os.getpid()) << 32 | os.getpid()
        store(ctrl, W_LAYOUT, LAYOUT_WORD)  # last: attachers wait for it
        return ring

    @classmethod
    def attach(cls, name: str, *, wait_s: float = 1.0) -> ShmRing:
        """Attach to the ring another process created as ``name``; waits up to
        ``wait_s`` for a just-created ring to finish initialising.

        >>> ShmRing.attach("qhil-no-such-ring")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no ring named 'qhil-no-such-ring'; is the producer running? ...
        """
        mm = map_segment(name)
        try:
            n_slots, slot_size = read_layout(mm, name, wait_s)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, shm=None, n_slots=n_slots, size=slot_size)

    def _control(self) -> np.ndarray:
        if self._ctrl is None:
            raise RuntimeError(f"ring {self.name!r} is closed; open a new one")
        return self._ctrl

    def sender(self, *, spin_s: float = 200e-6) -> RingSender:
        """This ring's producer end (one per ring; calling again returns the same)."""
        if self._sender is None:
            self._sender = RingSender(self.name, self._control(), self._slots, spin_s=spin_s)
        return self._sender

    def receiver(self, *, spin_s: float = 200e-6) -> RingReceiver:
        """This ring's consumer end (one per ring; calling again returns the same)."""
        if self._receiver is None:
            self._receiver = RingReceiver(self.name, self._control(), self._slots, spin_s=spin_s)
        return self._receiver

    def occupancy(self) -> int:
        """Packets published and not yet consumed (a snapshot)."""
        ctrl = self._control()
        tail = load(ctrl, W_TAIL)
        return max(0, min(self.n_slots, int(load(ctrl, W_HEAD)) - int(tail)))

    def mark_closed(self) -> None:
        """Flag end-of-stream / shutdown: the receiver drains, then raises
        TransportClosed; the sender raises TransportClosed."""
        store(self._control(), W_CLOSED, 1)

    @property
    def is_closed(self) -> bool:
        """Whether the ring is marked closed (or this handle is detached)."""
        return self._ctrl is None or bool(load(self._ctrl, W_CLOSED))

    def close(self) -> None:
        """Detach; the owner also marks the ring closed and unlinks it. Idempotent."""
        if not self._open:
            return
        self._open = False
        for end in (self._sender, self._receiver):
            if end is not None:
                end.close()
                end._release()
        if self._shm is not None:
            self.mark_closed()
        self._ctrl = self._slots = self._sender = self._receiver = None
        mm, self._mm = self._mm, None
        with contextlib.suppress(BufferError):  # a held reserve() view keeps the map
            mm.close()
        if self._shm is not None:
            self._shm.unlink()
            self._shm = None

    def __enter__(self) -> ShmRing:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "owner" if self._shm is not None else "attached" if self._open else "detached"
        geometry = f"n_slots={self.n_slots}, slot_size={self.slot_size}"
        return f"ShmRing(name={self.name!r}, {geometry}, {state})"
