"""ZeroMQ packet transport, for a front end and a decoder on different machines
(tcp://) or in separate processes (ipc://).

The decoder binds a ROUTER socket (:class:`~qhil.bridge._zmq_server.ZmqServer`),
front ends connect a DEALER (:class:`ZmqClient`). Before sending data a front
end opens a *session* with a HELLO control message (``_control.py``); the
decoder serves one session at a time and refuses a second front end with a
reason, so no peer can silently lock another out. Data packets are one-frame
messages; control messages are two frames (empty, body). Over tcp:// the link
should run CURVE (``_curve.py``): then the decoder only admits known front
ends, and a front end only talks to the decoder whose key it holds.

Hostile input never raises on the receiving side: oversized, multipart and
malformed messages and data from peers without a session are dropped and
counted under a reason (``ZmqServer.counts()``). ZeroMQ itself drops a peer
that sends a frame over the socket's maximum message size before buffering it.

>>> from qhil.bridge._transport import packet_buffers
>>> from qhil.bridge._zmq_server import ZmqServer
>>> with ZmqServer.bind("inproc://doc") as server, ZmqClient.connect(
...         "inproc://doc", hello_timeout_s=0) as client:
...     client.sender().send(b"ping", timeout_s=1.0)
...     out, lengths = packet_buffers(4, server.max_packet)
...     n = server.receiver().recv_into(out, lengths, timeout_s=1.0)
...     bytes(out[0, : lengths[0]])
True
b'ping'
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import zmq

from qhil.bridge._control import (
    CONTROL_MAX,
    ControlError,
    Kind,
    Refusal,
    encode_control,
    new_id,
    parse_control,
)
from qhil.bridge._curve import CurveKeys, secure_client
from qhil.bridge._transport import TransportClosed, as_packet, check_recv_buffers

__all__ = [
    "SCHEMES",
    "SessionEnded",
    "ZmqClient",
    "check_endpoint",
    "configure_socket",
    "is_loopback",
    "own_context",
    "recv_data",
]

SCHEMES = ("tcp://", "ipc://", "inproc://")
_log = logging.getLogger("qhil.bridge")
_HELLO_RETRY_S = 0.25
_MIN_MAXMSGSIZE = 4096


class SessionEnded(TransportClosed):
    """The session this end was serving is over (its front end said BYE, or a restarted
    front end opened a new one). The link itself stays open for the next session."""


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


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost.

    >>> is_loopback("tcp://127.0.0.1:5555"), is_loopback("tcp://0.0.0.0:5555")
    (True, False)
    """
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def own_context(endpoint: str) -> Any:
    """A fresh ZeroMQ context for one link, except over inproc:// (one process-wide
    context, the only way inproc sockets find each other)."""
    return zmq.Context.instance() if endpoint.startswith("inproc://") else zmq.Context()


def configure_socket(sock: Any, *, max_packet: int, hwm: int) -> None:
    """Options both ends share: no linger, bounded queues, and a maximum message size,
    so ZeroMQ drops a peer sending anything larger before buffering it."""
    if not isinstance(max_packet, int) or max_packet < 1:
        raise ValueError(f"max_packet={max_packet!r} must be a positive int (e.g. 252)")
    if not isinstance(hwm, int) or hwm < 1:
        raise ValueError(f"hwm={hwm!r} must be a positive int: packets queued per direction")
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    # Above max_packet so a too-long packet is counted, not just dropped; the CURVE
    # handshake's own commands (up to a few hundred bytes) must fit too.
    sock.setsockopt(zmq.MAXMSGSIZE, max(max_packet, CONTROL_MAX, _MIN_MAXMSGSIZE))
    # Heartbeats let ZeroMQ notice a peer that vanished without closing.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 5000)


def recv_data(sock: Any, row: np.ndarray, counts: dict[str, int]) -> tuple[int, Any]:
    """Take one message (the routing frame already read, if any) without blocking.

    Returns ``(n, None)`` for a data packet now in ``row[:n]``; ``(-1, frame)`` for a
    two-frame control message (``frame``: its body as a ``zmq.Frame``, which carries
    the peer's ``User-Id`` and ``Peer-Address``); ``(-1, None)`` when nothing was ready
    or the message was dropped (counted in ``counts`` under its reason).
    """
    try:
        n = sock.recv_into(row, flags=zmq.NOBLOCK)
    except zmq.Again:
        return -1, None
    if sock.getsockopt(zmq.RCVMORE):
        frames = [sock.recv(copy=False) for _ in _more(sock)]
        if n == 0 and len(frames) == 1 and len(frames[0].bytes) <= CONTROL_MAX:
            return -1, frames[0]
        counts["bad_frames"] += 1
        return -1, None
    if n > row.shape[0]:
        counts["oversized"] += 1
        return -1, None
    return int(n), None


def _more(sock: Any) -> Any:
    """Yield once per remaining frame of the current message."""
    more = True
    while more:
        yield None
        more = bool(sock.getsockopt(zmq.RCVMORE))


class ZmqClient:
    """The front end's end of a ZeroMQ link: connects, opens a session, sends rounds and
    takes corrections. Use it from one thread.

    ``keys``: CURVE keys with this front end's key pair and the decoder's public key
    (:meth:`CurveKeys.for_client`); required by a decoder that runs CURVE.
    ``layout``: ``layout_fingerprint`` of the experiment, checked by the decoder (0 = not).
    ``name``: how the decoder's log names this front end.
    ``hello_timeout_s``: how long :meth:`connect` waits for the session, retrying HELLO
    while the decoder is busy or not up yet; 0 sends one HELLO and returns at once
    (data sent right after it is served if the decoder admits the session).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        max_packet: int = 252,
        hwm: int = 100_000,
        keys: CurveKeys | None = None,
        layout: int = 0,
        name: str = "",
        hello_timeout_s: float = 10.0,
    ) -> None:
        check_endpoint(endpoint)
        self.endpoint, self.max_packet, self.layout, self.name = endpoint, max_packet, layout, name
        self.instance = new_id()
        self.session = 0
        self.refused = ""  # the decoder's last refusal, if any
        self.decoder_instance = 0
        self.decoder_restarts: list[float] = []  # monotonic s of each restart seen
        self.counts: dict[str, int] = {"bad_frames": 0, "oversized": 0, "bad_control": 0}
        self._ctx: Any = own_context(endpoint)
        self._sock: Any = self._ctx.socket(zmq.DEALER)
        try:
            configure_socket(self._sock, max_packet=max_packet, hwm=hwm)
            if keys is not None:
                secure_client(self._sock, keys.for_client())
            self._monitor: Any = self._sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_DISCONNECTED,
                addr=f"inproc://qhil-monitor-{self.instance:x}",  # unique: fds get reused
            )
            self._sock.connect(endpoint)
        except (zmq.ZMQError, ValueError, FileNotFoundError) as ex:
            self._sock.close(linger=0)
            if self._ctx is not zmq.Context.instance():
                self._ctx.term()
            if isinstance(ex, zmq.ZMQError):
                raise OSError(f"cannot connect to {endpoint!r}: {ex}") from ex
            raise
        self._secure = keys is not None
        self._last_hello = 0.0
        self._drops = 0  # disconnects seen during the handshake
        self._tx = ZmqClientSender(self)
        self._rx = ZmqClientReceiver(self)
        try:
            self._handshake(hello_timeout_s)
        except BaseException:
            self.close()
            raise

    @classmethod
    def connect(cls, endpoint: str, **options: Any) -> ZmqClient:
        """Connect to a decoder bound at ``endpoint`` and open a session (see the class)."""
        return cls(endpoint, **options)

    def _live_socket(self) -> Any:
        if self._sock is None:
            raise TransportClosed(f"zmq link to {self.endpoint!r} is closed")
        return self._sock

    def _hello(self) -> None:
        self._last_hello = time.monotonic()
        body = encode_control(
            Kind.HELLO,
            session=self.session,
            instance=self.instance,
            layout=self.layout,
            text=self.name,
        )
        try:
            self._live_socket().send_multipart([b"", body], zmq.NOBLOCK)
        except zmq.Again:
            pass  # queue full: the retry timer sends it again

    def _handshake(self, timeout_s: float) -> None:
        """Send HELLO until WELCOME, a final refusal, or ``timeout_s``."""
        self.session = new_id()
        if timeout_s == 0:
            self._hello()
            return
        deadline = time.monotonic() + timeout_s
        refusal = ""
        row = np.zeros(max(self.max_packet, CONTROL_MAX), dtype=np.uint8)
        while time.monotonic() < deadline:
            if time.monotonic() - self._last_hello >= _HELLO_RETRY_S:
                self._hello()
            self._check_handshake_failures()
            if not self._sock.poll(50, zmq.POLLIN):
                continue
            _, body = recv_data(self._sock, row, self.counts)
            if body is None:
                continue  # a data packet before WELCOME cannot be ours: drop it
            msg = self._control(body.bytes)
            if msg is not None and msg.kind == Kind.WELCOME and msg.session == self.session:
                self.decoder_instance = msg.instance
                return
            if msg is not None and msg.kind == Kind.REFUSED:
                if msg.code != Refusal.BUSY:
                    raise ConnectionRefusedError(
                        f"the decoder at {self.endpoint} refused: {msg.text}"
                    )
                refusal = msg.text
        raise ConnectionError(
            f"no session with a decoder at {self.endpoint} within {timeout_s:g} s"
            + (
                f": it refused ({refusal})"
                if refusal
                else "; is `qhil serve` running there"
                + (" and is server.key its public key?" if self._secure else "?")
            )
        )

    def _check_handshake_failures(self) -> None:
        """Turn a failed CURVE handshake into a clear error instead of a silent wait."""
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                # Dropped twice before any WELCOME: the handshake itself fails (a decoder
                # restart drops us once at most).
                self._drops += 1
                if self._drops < 2:
                    continue
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                raise ConnectionRefusedError(
                    f"the decoder at {self.endpoint} refused this front end's CURVE key; "
                    "copy client.key into its authorized_clients/ folder and reload it"
                )
            if not self._secure:
                raise ConnectionRefusedError(
                    f"the decoder at {self.endpoint} requires CURVE authentication; pass "
                    "--keys DIR with this front end's client.key_secret and its server.key"
                )
            raise ConnectionRefusedError(
                f"the CURVE handshake with {self.endpoint} failed: the peer is not the decoder "
                "whose public key is server.key (a different or forged decoder), or it does "
                "not run CURVE"
            )

    def _control(self, body: bytes) -> Any:
        try:
            return parse_control(body)
        except ControlError:
            self.counts["bad_control"] += 1
            return None

    def on_control(self, body: bytes) -> None:
        """A control message during the session: re-open it after a decoder restart."""
        msg = self._control(body)
        if msg is None:
            return
        if msg.kind == Kind.REFUSED and msg.code != Refusal.NOT_IN_SESSION:
            self.refused = msg.text
            _log.warning("the decoder at %s refused this front end: %s", self.endpoint, msg.text)
        elif msg.kind == Kind.REFUSED:
            if time.monotonic() - self._last_hello >= _HELLO_RETRY_S:
                self.session = new_id()
                self._hello()
        elif msg.kind == Kind.WELCOME and msg.session == self.session:
            if msg.instance != self.decoder_instance:
                self.decoder_restarts.append(time.monotonic())
                _log.warning("the decoder at %s restarted; new session opened", self.endpoint)
            self.decoder_instance = msg.instance

    def sender(self) -> ZmqClientSender:
        return self._tx

    def receiver(self) -> ZmqClientReceiver:
        return self._rx

    def close(self, *, linger_s: float = 0.5) -> None:
        """Say BYE (best effort) and close; queued packets may go out for ``linger_s``."""
        if self._sock is None:
            return
        self._tx.close()
        self._monitor.close(linger=0)
        self._sock.close(linger=int(linger_s * 1000))
        self._sock = None
        if self._ctx is not zmq.Context.instance():
            self._ctx.term()  # waits up to linger_s for the BYE to go out

    def __enter__(self) -> ZmqClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
