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
Socket plumbing both ends share is in ``_zmq_sockets.py``, the ends the links hand
out (``sender()``, ``receiver()``) in ``_zmq_ends.py``.

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
from qhil.bridge._transport import TransportClosed
from qhil.bridge._zmq_ends import ZmqClientReceiver, ZmqClientSender
from qhil.bridge._zmq_sockets import check_endpoint, configure_socket, own_context, recv_data

__all__ = ["SessionEnded", "ZmqClient", "is_loopback"]

_log = logging.getLogger("qhil.bridge")
_HELLO_RETRY_S = 0.25


class SessionEnded(TransportClosed):
    """The session this end was serving is over (its front end said BYE, or a restarted
    front end opened a new one). The link itself stays open for the next session."""


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost.

    >>> is_loopback("tcp://127.0.0.1:5555"), is_loopback("tcp://0.0.0.0:5555")
    (True, False)
    """
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


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
