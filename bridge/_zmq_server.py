"""The decoder's end of a ZeroMQ link: a ROUTER socket that serves one front-end session
at a time.

Session rules (a front end opens a session with HELLO; see ``_control.py``):

- With no session open, a HELLO opens one at once (WELCOME).
- A HELLO while a session is open replaces it when the same front end restarted
  (the same CURVE client key) or when the open session has been silent for
  ``idle_s``; otherwise it is refused ``busy``, naming who holds the session.
  The old session's state is dropped: its receiver raises :class:`SessionEnded`
  once, so the decoder service starts afresh.
- BYE from the session's front end closes it.
- Data from any other peer is dropped and counted ``not_in_session``; the peer
  is told so (at most once a second), which lets a front end re-open its session
  after a decoder restart.

The session table that applies these rules is in ``_zmq_sessions.py``; the link's
sender and receiver are in ``_zmq_ends.py``.

Every message received is counted once in :meth:`ZmqServer.counts`: as ``data``
(a packet of the open session, handed on), ``control`` (a HELLO or BYE acted
on), or under the reason it was dropped: ``not_in_session``, ``bad_frames``,
``oversized`` or ``bad_control``; so ``packets`` equals their sum. Refused peers
are also counted in ``refused_*``.

>>> from qhil.bridge._transport import packet_buffers
>>> from qhil.bridge._zmq import ZmqClient
>>> out, lengths = packet_buffers(4, 252)
>>> with ZmqServer.bind("inproc://srv-doc") as server:
...     first = ZmqClient.connect("inproc://srv-doc", name="first", hello_timeout_s=0)
...     second = ZmqClient.connect("inproc://srv-doc", name="second", hello_timeout_s=0)
...     first.sender().send(b"mine", timeout_s=1.0), second.sender().send(b"me too", timeout_s=1.0)
...     server.receiver().recv_into(out, lengths, timeout_s=1.0), bytes(out[0, :4])
...     server.session.name, server.counts()["refused_busy"], server.counts()["not_in_session"]
...     second.receiver().recv_into(out, lengths, timeout_s=0.5), second.refused[:35]
...     first.close(); second.close()
(True, True)
(1, b'mine')
('first', 1, 1)
(0, 'busy: serving front end first (sess')
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import zmq

from qhil.bridge._control import ControlError, Kind, new_id, parse_control
from qhil.bridge._curve import CurveKeys, ZapGate, restrict_ipc, secure_server
from qhil.bridge._transport import TransportClosed
from qhil.bridge._zmq import is_loopback
from qhil.bridge._zmq_ends import ZmqServerReceiver, ZmqServerSender
from qhil.bridge._zmq_sessions import SessionTable
from qhil.bridge._zmq_sockets import check_endpoint, configure_socket, own_context, recv_data

__all__ = ["SessionInfo", "ZmqServer", "check_server_endpoint"]

_log = logging.getLogger("qhil.bridge")
_COUNTERS = (
    "packets",
    "data",
    "control",
    "not_in_session",
    "bad_frames",
    "oversized",
    "bad_control",
    "unroutable",
    "sessions",
    "sessions_replaced",
    "refused_busy",
    "refused_bad_hello",
    "refused_layout",
    "refused_unauthenticated",
    "refused_handshake",
    "disconnects",
)
_MONITOR_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_DISCONNECTED
)


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """Who holds a session. ``client_key``: CURVE public key (Z85; "" without CURVE).
    ``replaced``: id of the session it replaced (its front end restarted), else 0."""

    session: int
    peer: bytes
    name: str
    client_key: str
    address: str
    started_s: float  # time.time() when it opened
    replaced: int = 0


class ZmqServer:
    """A ROUTER-socket link for the decoder; build with :meth:`bind`.

    ``keys``: the decoder's CURVE keys (:meth:`CurveKeys.for_server`); None runs
    without authentication, which :meth:`bind` only allows on loopback.
    ``layout``: ``layout_fingerprint`` of the decoder's experiment (0 = not checked).
    ``idle_s``: silence after which another front end may take the session over.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        max_packet: int,
        hwm: int,
        keys: CurveKeys | None,
        layout: int,
        idle_s: float,
    ) -> None:
        check_endpoint(endpoint)
        self.max_packet, self.layout, self.idle_s, self.keys = max_packet, layout, idle_s, keys
        self.instance = new_id()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        # Its own context (I/O thread), so no other link in this process can slow it;
        # ZAP is one handler per context too. inproc:// only joins sockets of one context.
        self._ctx: Any = own_context(endpoint)
        self._gate = ZapGate(self._ctx, keys.for_server()) if keys else None
        self._sock: Any = self._ctx.socket(zmq.ROUTER)
        try:
            configure_socket(self._sock, max_packet=max_packet, hwm=hwm)
            self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unroutable sends raise, not vanish
            if keys is not None:
                secure_server(self._sock, keys)
            self._sock.bind(endpoint)
            self._monitor: Any = self._sock.get_monitor_socket(
                _MONITOR_EVENTS, addr=f"inproc://qhil-monitor-{new_id():x}"
            )
        except (zmq.ZMQError, ValueError) as ex:
            self.close()
            if isinstance(ex, zmq.ZMQError):
                raise OSError(f"cannot bind to {endpoint!r}: {ex}") from ex
            raise
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        restrict_ipc(self.endpoint)
        self._sessions = SessionTable(
            instance=self.instance,
            layout=layout,
            idle_s=idle_s,
            counts=self._counts,
            reply=self._reply,
        )
        self._next_monitor = 0.0
        self._tx = ZmqServerSender(self)
        self._rx = ZmqServerReceiver(self)

    @classmethod
    def bind(
        cls,
        endpoint: str,
        *,
        max_packet: int = 252,
        hwm: int = 100_000,
        keys: CurveKeys | None = None,
        layout: int = 0,
        idle_s: float = 2.0,
    ) -> ZmqServer:
        """Listen on ``endpoint`` ('tcp://127.0.0.1:*' picks a free port; read
        ``.endpoint``). Refuses a non-loopback endpoint without ``keys``."""
        check_server_endpoint(endpoint, keys=keys)
        return cls(
            endpoint, max_packet=max_packet, hwm=hwm, keys=keys, layout=layout, idle_s=idle_s
        )

    @property
    def session(self) -> SessionInfo | None:
        """Who holds the session now (None: nobody)."""
        return self._sessions.session

    @property
    def served(self) -> SessionInfo | None:
        """The session the receiver last returned data of."""
        return self._sessions.served

    def counts(self) -> dict[str, int]:
        """Every link-level counter by name (a copy)."""
        out = dict(self._counts)
        if self._gate is not None:
            out["refused_unauthenticated"] = self._gate.refused
        return out

    def reload_keys(self, keys: CurveKeys) -> None:
        """Admit ``keys.authorized`` from now on (SIGHUP); open sessions stay open."""
        if self._gate is None:
            raise ValueError("this link runs without CURVE; there are no keys to reload")
        self._gate.update(keys)
        self.keys = keys

    def sender(self) -> ZmqServerSender:
        return self._tx

    def receiver(self) -> ZmqServerReceiver:
        return self._rx

    def close(self) -> None:
        """Close the socket (and the ZAP handler). Idempotent."""
        if self._sock is not None:
            if hasattr(self, "_monitor"):
                self._monitor.close(linger=0)
            self._sock.close(linger=0)
            self._sock = None
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
        if self._ctx is not zmq.Context.instance():
            self._ctx.term()

    def __enter__(self) -> ZmqServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the receiver calls ---------------------------------------------------------

    def _live_socket(self) -> Any:
        if self._sock is None:
            raise TransportClosed(f"zmq link {self.endpoint!r} is closed")
        return self._sock

    def _take(self, sock: Any, row: np.ndarray) -> int:
        """One data packet of the open session into ``row``; -1 when none is ready."""
        c, table = self._counts, self._sessions
        while True:
            try:
                peer = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return -1
            c["packets"] += 1
            n, body = recv_data(sock, row, c)
            if body is not None:
                self._on_control(peer, body)
                if table.changed():
                    return -1  # the receiver says so first
            elif n >= 0:
                if table.heard_from(peer.bytes):
                    c["data"] += 1
                    return n
                c["not_in_session"] += 1
                table.notice(peer.bytes)

    def _check_monitor(self) -> None:
        """Count failed handshakes and dropped peers (ZeroMQ drops one that sends a frame
        over the maximum message size). Called while idle, at most every 50 ms."""
        from zmq.utils.monitor import recv_monitor_message

        now = time.monotonic()
        if now < self._next_monitor:
            return
        self._next_monitor = now + 0.05
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._counts["disconnects"] += 1
            else:
                self._counts["refused_handshake"] += 1
                if self._sessions.rate_ok(b"handshake"):
                    _log.warning("a peer failed the handshake (not CURVE, or the wrong key)")

    def _on_control(self, peer: Any, frame: Any) -> None:
        try:
            msg = parse_control(frame.bytes)
        except ControlError:
            msg = None
        if msg is not None and msg.kind == Kind.BYE and self._sessions.bye(peer.bytes, msg.session):
            self._counts["control"] += 1
        elif msg is not None and msg.kind == Kind.HELLO:
            self._counts["control"] += 1
            new = SessionInfo(
                msg.session,
                peer.bytes,
                msg.text[:64],
                _prop(frame, "User-Id"),
                _prop(frame, "Peer-Address"),
                time.time(),
            )
            self._sessions.hello(new, msg)
        else:  # unparseable, a BYE for another session, or a decoder-only kind
            self._counts["bad_control"] += 1

    def _reply(self, peer: bytes, body: bytes) -> None:
        try:
            self._live_socket().send_multipart([peer, b"", body], zmq.NOBLOCK)
        except zmq.ZMQError:  # gone, or its queue is full: it will retry
            self._counts["unroutable"] += 1


def _prop(frame: Any, name: str) -> str:
    try:
        return str(frame.get(name))
    except (zmq.ZMQError, KeyError, UnicodeDecodeError):
        return ""


def check_server_endpoint(endpoint: str, *, keys: CurveKeys | None) -> None:
    """Raise ValueError if a decoder may not bind ``endpoint`` with these keys: beyond
    loopback, only CURVE-authenticated front ends may reach it.

    >>> check_server_endpoint("tcp://127.0.0.1:5555", keys=None)
    """
    if keys is None and not is_loopback(endpoint):
        raise ValueError(
            f"endpoint {endpoint!r} is reachable from other machines, so it needs CURVE "
            "authentication: pass --keys DIR (make one with `qhil keys generate DIR`), "
            "or bind tcp://127.0.0.1"
        )
