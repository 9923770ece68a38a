"""ZeroMQ packet transport, for when the FPGA side and the decoder are on
different machines (tcp://) or want kernel-mediated local IPC (ipc://).

One ZeroMQ PAIR socket carries both directions: ``link.sender()`` and
``link.receiver()`` share it, so use a link from one thread only. Each packet is
one single-part message. ``sender.close()`` sends a two-part end-of-stream
marker (an empty frame, then ``b"qhil-eos"``); ZeroMQ keeps order, so the
peer's receiver drains every earlier packet before it raises TransportClosed.
A peer that vanishes without that marker is not detected (PAIR has no
disconnect signal): receivers just time out.

>>> from qhil.bridge._transport import packet_buffers
>>> with ZmqLink.bind("inproc://doc") as a, ZmqLink.connect("inproc://doc") as b:
...     a.sender().send(b"ping", timeout_s=1.0)
...     out, lengths = packet_buffers(4, b.max_packet)
...     n = b.receiver().recv_into(out, lengths, timeout_s=1.0)
...     bytes(out[0, : lengths[0]])
True
b'ping'
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import zmq

from qhil.bridge._transport import TransportClosed, as_packet, check_recv_buffers

__all__ = ["SCHEMES", "ZmqLink"]

SCHEMES = ("tcp://", "ipc://", "inproc://")
_EOS = b"qhil-eos"


def check_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if it names a ZeroMQ transport qhil supports.

    >>> check_endpoint("udp://1.2.3.4:5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: endpoint 'udp://1.2.3.4:5' has an unsupported scheme; use one of 'tcp://', ...
    """
    if not isinstance(endpoint, str) or not endpoint.startswith(SCHEMES):
        raise ValueError(
            f"endpoint {endpoint!r} has an unsupported scheme; use one of "
            f"{', '.join(repr(s) for s in SCHEMES)} (e.g. 'tcp://127.0.0.1:5555' or "
            "'ipc:///tmp/qhil.sock')"
        )
    if not endpoint.partition("://")[2]:
        raise ValueError(f"endpoint {endpoint!r} has no address after the scheme")
    return endpoint


class ZmqLink:
    """A PAIR-socket link; build with :meth:`bind` or :meth:`connect`."""

    def __init__(self, endpoint: str, *, bind: bool, max_packet: int, hwm: int):
        check_endpoint(endpoint)
        if not isinstance(max_packet, int) or max_packet < 1:
            raise ValueError(f"max_packet={max_packet!r} must be a positive int (e.g. 252)")
        if not isinstance(hwm, int) or hwm < 1:
            raise ValueError(f"hwm={hwm!r} must be a positive int: packets queued per direction")
        self.max_packet = max_packet
        # The shared process context: inproc:// only connects sockets of one context.
        self._sock: Any = zmq.Context.instance().socket(zmq.PAIR)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        try:
            (self._sock.bind if bind else self._sock.connect)(endpoint)
        except zmq.ZMQError as ex:
            self._sock.close(linger=0)
            verb = "bind to" if bind else "connect to"
            raise OSError(f"cannot {verb} {endpoint!r}: {ex}") from ex
        # After bind, the resolved address (an OS-chosen tcp port for 'tcp://host:*').
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self._tx = ZmqSender(self)
        self._rx = ZmqReceiver(self)

    @classmethod
    def bind(cls, endpoint: str, *, max_packet: int = 252, hwm: int = 100_000) -> ZmqLink:
        """Listen on ``endpoint`` ('tcp://127.0.0.1:*' picks a free port; read
        ``.endpoint`` for it). ``hwm``: packets queued per direction before
        sends report full."""
        return cls(endpoint, bind=True, max_packet=max_packet, hwm=hwm)

    @classmethod
    def connect(cls, endpoint: str, *, max_packet: int = 252, hwm: int = 100_000) -> ZmqLink:
        """Connect to a link bound at ``endpoint`` (it may bind later; ZeroMQ retries)."""
        return cls(endpoint, bind=False, max_packet=max_packet, hwm=hwm)

    def _live_socket(self) -> Any:
        if self._sock is None:
            raise TransportClosed(f"zmq link {self.endpoint!r} is closed")
        return self._sock

    def sender(self) -> ZmqSender:
        """This link's sending end (the same object on every call)."""
        return self._tx

    def receiver(self) -> ZmqReceiver:
        """This link's receiving end (the same object on every call)."""
        return self._rx

    def close(self, *, linger_s: float = 0.0) -> None:
        """Send end-of-stream (best effort) and close. ``linger_s``: how long queued
        packets may still go out (0 drops them). Idempotent."""
        if self._sock is None:
            return
        self._tx.close()
        # ZeroMQ's I/O thread keeps sending queued packets for up to linger_s.
        self._sock.close(linger=int(linger_s * 1000))
        self._sock = None

    def __enter__(self) -> ZmqLink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ZmqSender:
    """Sending end of a :class:`ZmqLink` (a PacketSender)."""

    def __init__(self, link: ZmqLink):
        self._link, self.max_packet, self._eos_sent = link, link.max_packet, False
        self._scratch = np.zeros(link.max_packet, dtype=np.uint8)  # reserve()'s buffer
        self._reserved = False

    def _socket(self) -> Any:
        if self._eos_sent:
            raise TransportClosed("this sender was closed (end of stream sent)")
        return self._link._live_socket()

    def reserve(self) -> np.ndarray | None:
        """uint8[max_packet] scratch buffer to fill, or None when the queue is full."""
        writable = self._socket().getsockopt(zmq.EVENTS) & zmq.POLLOUT
        self._reserved = bool(writable)
        return self._scratch if writable else None

    def commit(self, length: int) -> None:
        """Send the first ``length`` bytes of the reserved scratch buffer."""
        if not self._reserved:
            raise RuntimeError("commit() needs a successful reserve() first (it returned None?)")
        if not 0 <= length <= self.max_packet:
            raise ValueError(f"length={length} must be in 0..max_packet={self.max_packet}")
        self._reserved = False
        if not self.try_send(self._scratch[:length]):
            raise RuntimeError("zmq queue filled between reserve() and commit()")

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Queue ``packet`` (bytes or uint8 1-D); False when the queue is full."""
        pkt = as_packet(packet, self.max_packet)
        try:
            self._socket().send(pkt, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        return True

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Queue ``packet``, waiting up to ``timeout_s`` for room; False on timeout."""
        deadline = time.perf_counter() + timeout_s
        while not self.try_send(packet):
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self._socket().poll(max(1, math.ceil(left * 1000)), zmq.POLLOUT)
        return True

    def close(self) -> None:
        """Send the end-of-stream marker (best effort, never blocks). Idempotent."""
        if self._eos_sent or self._link._sock is None:
            self._eos_sent = True
            return
        try:
            self._link._sock.send_multipart([b"", _EOS], zmq.NOBLOCK)
        except zmq.Again:
            pass  # peer's queue is full or it is gone; it will time out instead
        self._eos_sent = True


class ZmqReceiver:
    """Receiving end of a :class:`ZmqLink` (a PacketReceiver)."""

    def __init__(self, link: ZmqLink, *, spin_s: float = 50e-6):
        self._link, self.max_packet, self._spin_s = link, link.max_packet, spin_s
        self._eos = False

    def _take(self, sock: Any, row: np.ndarray) -> int:
        """One message into ``row`` (uint8 1-D, C-contiguous); -1 if none ready."""
        try:
            n = sock.recv_into(row, flags=zmq.NOBLOCK)
        except zmq.Again:
            return -1
        if n == 0 and sock.getsockopt(zmq.RCVMORE):
            rest = sock.recv_multipart()
            if rest == [_EOS]:
                self._eos = True
                return -1
            raise RuntimeError(f"unexpected multipart message {rest!r}; is the peer a qhil link?")
        if n > row.shape[0]:
            raise ValueError(
                f"received a {n}-byte packet but max_packet={self.max_packet}; "
                "open both ends with the same max_packet"
            )
        return int(n)

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        n_max = check_recv_buffers(out, lengths, self.max_packet)
        if self._eos:
            raise TransportClosed(f"peer of {self._link.endpoint!r} closed (end of stream)")
        sock = self._link._live_socket()
        start = time.perf_counter()
        while (n := self._take(sock, out[0])) < 0:
            if self._eos:
                raise TransportClosed(f"peer of {self._link.endpoint!r} closed (end of stream)")
            waited = time.perf_counter() - start
            if waited >= timeout_s:
                return 0
            if waited >= self._spin_s:  # spin briefly, then block in zmq_poll
                sock.poll(max(1, math.ceil((timeout_s - waited) * 1000)), zmq.POLLIN)
        lengths[0] = n
        k = 1
        while k < n_max and (n := self._take(sock, out[k])) >= 0:
            lengths[k] = n
            k += 1
        return k

    def close(self) -> None:
        """Nothing to release (the link owns the socket); kept for the protocol."""
