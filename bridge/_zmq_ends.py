"""The sending and receiving ends (PacketSender, PacketReceiver) that both sides of a
ZeroMQ link hand out: the front end's (:class:`~qhil.bridge._zmq.ZmqClient`) and the
decoder's (:class:`~qhil.bridge._zmq_server.ZmqServer`). They hold no socket of
their own: each works through the link that made it."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import zmq

from qhil.bridge._control import Kind, encode_control
from qhil.bridge._transport import TransportClosed, as_packet, check_recv_buffers
from qhil.bridge._zmq_sockets import recv_data

if TYPE_CHECKING:
    from qhil.bridge._zmq import ZmqClient
    from qhil.bridge._zmq_server import ZmqServer

__all__ = ["ZmqClientReceiver", "ZmqClientSender", "ZmqServerReceiver", "ZmqServerSender"]


class ZmqClientSender:
    """Sending end of a :class:`ZmqClient` (a PacketSender)."""

    def __init__(self, client: ZmqClient) -> None:
        self._client, self.max_packet = client, client.max_packet
        self._scratch = np.zeros(client.max_packet, dtype=np.uint8)
        self._reserved = self._closed = False

    def reserve(self) -> np.ndarray | None:
        """uint8[max_packet] scratch buffer to fill, or None when the queue is full."""
        if self._closed:
            raise TransportClosed("this sender was closed (BYE sent)")
        self._reserved = bool(self._client._live_socket().getsockopt(zmq.EVENTS) & zmq.POLLOUT)
        return self._scratch if self._reserved else None

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
        if self._closed:
            raise TransportClosed("this sender was closed (BYE sent)")
        pkt = as_packet(packet, self.max_packet)
        try:
            self._client._live_socket().send(pkt, zmq.NOBLOCK, copy=True)
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
            self._client._live_socket().poll(max(1, math.ceil(left * 1000)), zmq.POLLOUT)
        return True

    def close(self) -> None:
        """End the session with BYE (best effort, never blocks). Idempotent."""
        c = self._client
        if not self._closed and c._sock is not None:
            body = encode_control(Kind.BYE, session=c.session, instance=c.instance)
            try:
                c._sock.send_multipart([b"", body], zmq.NOBLOCK)
            except zmq.Again:
                pass  # the decoder's queue is full or it is gone; its session times out
        self._closed = True


class ZmqClientReceiver:
    """Receiving end of a :class:`ZmqClient` (a PacketReceiver): corrections in; control
    messages are handled on the way (a decoder restart re-opens the session)."""

    def __init__(self, client: ZmqClient, *, spin_s: float = 50e-6) -> None:
        self._client, self.max_packet, self._spin_s = client, client.max_packet, spin_s

    def _take(self, sock: Any, row: np.ndarray) -> int:
        while True:
            n, body = recv_data(sock, row, self._client.counts)
            if body is None:
                return n
            self._client.on_control(body.bytes)

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        n_max = check_recv_buffers(out, lengths, self.max_packet)
        sock = self._client._live_socket()
        start = time.perf_counter()
        while (n := self._take(sock, out[0])) < 0:
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
        """Nothing to release (the client owns the socket); kept for the protocol."""


class ZmqServerReceiver:
    """Receiving end of a :class:`ZmqServer` (a PacketReceiver): data packets of the open
    session only. Raises :class:`SessionEnded` once when the session it was serving
    ends, so the caller drops that session's state; the next call serves the new one."""

    def __init__(self, server: ZmqServer, *, spin_s: float = 50e-6) -> None:
        self._server, self.max_packet, self._spin_s = server, server.max_packet, spin_s

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        n_max = check_recv_buffers(out, lengths, self.max_packet)
        srv = self._server
        sessions = srv._sessions
        sessions.check_served()
        sock = srv._live_socket()
        start = time.perf_counter()
        while (n := srv._take(sock, out[0])) < 0:
            sessions.check_served()
            srv._check_monitor()
            waited = time.perf_counter() - start
            if waited >= timeout_s:
                return 0
            if waited >= self._spin_s:
                sock.poll(max(1, math.ceil((timeout_s - waited) * 1000)), zmq.POLLIN)
        sessions.serve()
        lengths[0] = n
        k = 1
        while k < n_max and (n := srv._take(sock, out[k])) >= 0:
            lengths[k] = n
            k += 1
        return k

    def close(self) -> None:
        """Nothing to release (the server owns the socket); kept for the protocol."""


class ZmqServerSender:
    """Sending end of a :class:`ZmqServer` (a PacketSender): to the open session's front
    end. With no session, or once its front end is gone, sends return False at once."""

    def __init__(self, server: ZmqServer) -> None:
        self._server, self.max_packet = server, server.max_packet
        self._scratch = np.zeros(server.max_packet, dtype=np.uint8)
        self._reserved = self._gone = False

    def reserve(self) -> np.ndarray | None:
        """uint8[max_packet] scratch buffer to fill, or None when there is no session."""
        self._reserved = self._server.session is not None
        return self._scratch if self._reserved else None

    def commit(self, length: int) -> None:
        """Send the first ``length`` bytes of the reserved scratch buffer."""
        if not self._reserved:
            raise RuntimeError("commit() needs a successful reserve() first (it returned None?)")
        self._reserved = False
        self.try_send(self._scratch[:length])

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Queue ``packet`` for the session's front end; False if full or unroutable."""
        srv = self._server
        pkt = as_packet(packet, self.max_packet)
        s = srv.session
        self._gone = s is None
        if s is None:
            return False
        try:
            srv._live_socket().send_multipart([s.peer, pkt], zmq.NOBLOCK, copy=True)
        except zmq.Again:
            return False
        except zmq.ZMQError:  # EHOSTUNREACH: that front end is gone
            srv._counts["unroutable"] += 1
            self._gone = True
            return False
        return True

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Like :meth:`try_send`, waiting up to ``timeout_s`` while the queue is full."""
        srv = self._server
        deadline = time.perf_counter() + timeout_s
        while not self.try_send(packet):
            left = deadline - time.perf_counter()
            if left <= 0 or self._gone:
                return False
            srv._live_socket().poll(max(1, math.ceil(left * 1000)), zmq.POLLOUT)
        return True

    def close(self) -> None:
        """Nothing to send: sessions end from the front end's side (BYE)."""
