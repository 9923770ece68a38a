"""The packet transport interface every bridge transport implements.

A transport moves opaque byte packets, each at most ``max_packet`` bytes, in
order, from one :class:`PacketSender` to one :class:`PacketReceiver`. It never
parses them: the wire format lives in ``_wire.py``.

Implementations: the shared-memory SPSC ring (``_ring.py``), ZeroMQ
(``_zmq.py``), and the :class:`~qhil.bridge._faults.FaultInjector` wrapper.

>>> from qhil.bridge._ring import ShmRing
>>> with ShmRing.create(n_slots=8, slot_size=64) as ring:
...     tx: PacketSender = ring.sender()
...     rx: PacketReceiver = ring.receiver()
...     tx.try_send(b"hi")
...     out, lengths = packet_buffers(4, rx.max_packet)
...     n = rx.recv_into(out, lengths, timeout_s=0.0)
...     bytes(out[0, : lengths[0]])
True
b'hi'
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backoff",
    "PacketReceiver",
    "PacketSender",
    "TransportClosed",
    "check_recv_buffers",
    "packet_buffers",
]


class TransportClosed(RuntimeError):
    """The peer is gone or the link was closed; no more packets will arrive."""


@runtime_checkable
class PacketSender(Protocol):
    """Sends opaque packets of at most ``max_packet`` bytes, in order."""

    max_packet: int

    def reserve(self) -> np.ndarray | None:
        """Zero-copy: a writable ``uint8[max_packet]`` view of the next slot, or
        ``None`` when full. Never blocks. Publish it with :meth:`commit`."""
        ...

    def commit(self, length: int) -> None:
        """Publish the reserved slot, holding ``length`` bytes (0..max_packet)."""
        ...

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Copy and publish ``packet`` (bytes, or uint8 1-D array); False when full."""
        ...

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Like :meth:`try_send`, but spin then back off up to ``timeout_s``; False
        on timeout."""
        ...

    def close(self) -> None:
        """Release this end. Idempotent."""
        ...


@runtime_checkable
class PacketReceiver(Protocol):
    """Receives packets in order into caller-owned buffers."""

    max_packet: int

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` (0 = poll once) for at least one packet, then
        take as many as are ready, at most ``n_max``, in arrival order.

        ``out``: uint8[n_max, >= max_packet], C-contiguous; row i gets packet i
        in bytes ``[0:lengths[i]]``. ``lengths``: uint32[n_max], C-contiguous.
        Returns the count (0 on timeout). Raises :class:`TransportClosed` once
        the peer has closed and every packet has been drained.
        """
        ...

    def close(self) -> None:
        """Release this end. Idempotent."""
        ...


def packet_buffers(n_max: int, max_packet: int) -> tuple[np.ndarray, np.ndarray]:
    """Allocate ``(out, lengths)`` for :meth:`PacketReceiver.recv_into`.

    Returns ``out``: uint8[n_max, max_packet] C-contiguous zeros, and
    ``lengths``: uint32[n_max] zeros.

    >>> out, lengths = packet_buffers(16, 252)
    >>> out.shape, out.dtype, lengths.shape, lengths.dtype
    ((16, 252), dtype('uint8'), (16,), dtype('uint32'))
    """
    if n_max < 1 or max_packet < 1:
        raise ValueError(
            f"n_max={n_max} and max_packet={max_packet} must both be >= 1; "
            "pass the receiver's max_packet and the batch size you want"
        )
    return np.zeros((n_max, max_packet), dtype=np.uint8), np.zeros(n_max, dtype=np.uint32)


def check_recv_buffers(out: np.ndarray, lengths: np.ndarray, max_packet: int) -> int:
    """Validate ``recv_into`` buffers (see :meth:`PacketReceiver.recv_into`);
    return ``n_max``.

    >>> out, lengths = packet_buffers(4, 60)
    >>> check_recv_buffers(out, lengths, 60)
    4
    >>> check_recv_buffers(out[:, :10], lengths, 60)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: out must be uint8[n_max, >=60] C-contiguous, got uint8 (4, 10) ...
    """
    ok = (
        isinstance(out, np.ndarray)
        and out.dtype == np.uint8
        and out.ndim == 2
        and out.shape[1] >= max_packet
        and out.flags.c_contiguous
        and out.flags.writeable
    )
    if not ok:
        desc = (
            f"{out.dtype} {out.shape} C-contiguous={out.flags.c_contiguous}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise ValueError(
            f"out must be uint8[n_max, >={max_packet}] C-contiguous, got {desc}; "
            f"allocate it with packet_buffers(n_max, {max_packet})"
        )
    n_max = out.shape[0]
    ok = (
        isinstance(lengths, np.ndarray)
        and lengths.dtype == np.uint32
        and lengths.ndim == 1
        and lengths.shape[0] >= n_max
        and lengths.flags.c_contiguous
        and lengths.flags.writeable
    )
    if not ok:
        desc = (
            f"{lengths.dtype} {lengths.shape}"
            if isinstance(lengths, np.ndarray)
            else type(lengths).__name__
        )
        raise ValueError(
            f"lengths must be uint32[{n_max}] C-contiguous (one per row of out), got {desc}; "
            f"allocate it with packet_buffers({n_max}, {max_packet})"
        )
    if n_max < 1:
        raise ValueError("out has 0 rows; give it at least one row (n_max >= 1)")
    return int(n_max)


def as_packet(packet: bytes | bytearray | memoryview | np.ndarray, max_packet: int) -> np.ndarray:
    """View ``packet`` as a uint8 1-D array, rejecting ones over ``max_packet``.

    >>> as_packet(b"abc", 8)
    array([97, 98, 99], dtype=uint8)
    """
    if isinstance(packet, np.ndarray):
        arr = packet.reshape(-1) if packet.dtype == np.uint8 else None
        if arr is None:
            raise ValueError(
                f"packet array must have dtype uint8, got {packet.dtype}; "
                "use arr.view(np.uint8) or pass bytes"
            )
    else:
        arr = np.frombuffer(packet, dtype=np.uint8)
    if arr.shape[0] > max_packet:
        raise ValueError(
            f"packet of {arr.shape[0]} bytes exceeds max_packet={max_packet}; "
            "split it, or open the transport with a larger slot_size/max_packet"
        )
    return arr


class Backoff:
    """Deadline and sleep schedule for waits whose tight spin runs in compiled code.

    The caller spins in short compiled bursts and calls :meth:`keep_waiting`
    between them. For the first ``spin_s`` seconds that returns at once (busy
    spin: lowest latency); after that it sleeps, doubling from 20 µs up to
    ``max_sleep_s``, so an idle waiter does not burn a core.

    >>> b = Backoff(0.0)
    >>> b.keep_waiting()
    False
    >>> Backoff(1.0).keep_waiting()
    True
    """

    __slots__ = ("_deadline", "_sleep", "_spin_until", "max_sleep_s")

    def __init__(self, timeout_s: float, *, spin_s: float = 200e-6, max_sleep_s: float = 500e-6):
        if not timeout_s >= 0.0:
            raise ValueError(f"timeout_s={timeout_s!r} must be >= 0 (0 = poll once)")
        now = time.perf_counter()
        self._deadline = now + timeout_s
        self._spin_until = now + spin_s
        self._sleep = 20e-6
        self.max_sleep_s = max_sleep_s

    def keep_waiting(self) -> bool:
        """False once the deadline has passed; otherwise maybe sleep, then True."""
        now = time.perf_counter()
        if now >= self._deadline:
            return False
        if now >= self._spin_until:
            time.sleep(min(self._sleep, self._deadline - now))
            self._sleep = min(self._sleep * 2.0, self.max_sleep_s)
        return True
