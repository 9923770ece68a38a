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

import collections
import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np
import zmq

from qhil.bridge._control import (
    ControlError,
    ControlMessage,
    Kind,
    Refusal,
    encode_control,
    new_id,
    parse_control,
)
from qhil.bridge._curve import CurveKeys, ZapGate, restrict_ipc, secure_server
from qhil.bridge._transport import TransportClosed, as_packet, check_recv_buffers
from qhil.bridge._zmq import SessionEnded
from qhil.bridge._zmq_sockets import check_endpoint, configure_socket, own_context, recv_data

__all__ = ["SessionInfo", "ZmqServer", "check_server_endpoint"]

_log = logging.getLogger("qhil.bridge")
_NOTICE_EVERY_S = 1.0
_REOPEN_MIN_S = 1.0  # least time between sessions of one front end
_PEERS_REMEMBERED = 1024  # bounded: a flood of new peers cannot grow this
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
        self.session: SessionInfo | None = None
        self.served: SessionInfo | None = None  # the session the receiver last returned data of
        self._last_heard = 0.0
        self._pending: SessionInfo | None = None
        self._bound = 0  # session id the receiver is serving (0: none yet)
        self._noticed: collections.OrderedDict[bytes, float] = collections.OrderedDict()
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
        c = self._counts
        while True:
            try:
                peer = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return -1
            c["packets"] += 1
            n, body = recv_data(sock, row, c)
            if body is not None:
                self._on_control(peer, body)
                if self._pending is not None or (self._bound and self.session is None):
                    return -1  # the session changed: the receiver says so first
            elif n >= 0:
                s = self.session
                if s is not None and peer.bytes == s.peer:
                    self._last_heard = time.monotonic()
                    c["data"] += 1
                    return n
                c["not_in_session"] += 1
                self._notice(peer.bytes)

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
                if self._rate_ok(b"handshake"):
                    _log.warning("a peer failed the handshake (not CURVE, or the wrong key)")

    def _rate_ok(self, peer: bytes) -> bool:
        """True at most once a second per peer: replies and log lines a flood cannot amplify."""
        now = time.monotonic()
        last = self._noticed.pop(peer, -_NOTICE_EVERY_S)
        ok = now - last >= _NOTICE_EVERY_S
        self._noticed[peer] = now if ok else last
        if len(self._noticed) > _PEERS_REMEMBERED:
            self._noticed.popitem(last=False)
        return ok

    def _on_control(self, peer: Any, frame: Any) -> None:
        try:
            msg = parse_control(frame.bytes)
        except ControlError:
            msg = None
        s = self.session
        if (
            msg is not None
            and msg.kind == Kind.BYE
            and s is not None
            and peer.bytes == s.peer
            and msg.session == s.session
        ):
            self._counts["control"] += 1
            _log.info("session %016x of %s ended (BYE)", s.session, s.name or "a front end")
            self.session = None
        elif msg is not None and msg.kind == Kind.HELLO:
            self._counts["control"] += 1
            self._on_hello(peer.bytes, frame, msg)
        else:  # unparseable, a BYE for another session, or a decoder-only kind
            self._counts["bad_control"] += 1

    def _on_hello(self, pid: bytes, frame: Any, msg: ControlMessage) -> None:
        if self.layout and msg.layout and msg.layout != self.layout:
            self._refuse(
                pid,
                msg,
                Refusal.LAYOUT,
                "the front end runs another experiment "
                f"(layout {msg.layout:016x}, decoder {self.layout:016x}); use the "
                "same distance, rounds, basis and noise on both sides",
            )
            return
        new = SessionInfo(
            msg.session,
            pid,
            msg.text[:64],
            _prop(frame, "User-Id"),
            _prop(frame, "Peer-Address"),
            time.time(),
        )
        s = self.session
        if s is not None and pid == s.peer and msg.session == s.session:
            self._welcome(s)  # a repeated HELLO: our WELCOME was lost or late
            return
        if s is None:
            if self._bound:  # the receiver still serves the ended one: it says so first
                self._pending = new
            else:
                self._open(new)
            return
        same_front_end = pid == s.peer or (new.client_key and new.client_key == s.client_key)
        if same_front_end and time.time() - s.started_s < _REOPEN_MIN_S:
            # A real restart takes far longer; a HELLO flood must not churn sessions.
            self._refuse(pid, msg, Refusal.BAD_HELLO, "session re-opened too soon; wait 1 s")
            return
        if same_front_end or time.monotonic() - self._last_heard > self.idle_s:
            self._pending = dataclasses.replace(new, replaced=s.session)
            if self._bound != s.session:  # nobody is serving the old one: switch now
                self._switch()
            return
        self._refuse(
            pid,
            msg,
            Refusal.BUSY,
            f"busy: serving front end {s.name or s.address or '?'} (session {s.session:016x}, "
            f"since {time.strftime('%H:%M:%S', time.localtime(s.started_s))})",
        )

    def _open(self, info: SessionInfo) -> None:
        self.session, self._last_heard = info, time.monotonic()
        self._counts["sessions"] += 1
        self._counts["sessions_replaced"] += bool(info.replaced)
        if not self._rate_ok(b"opened:" + info.peer):  # a HELLO flood must not flood the log
            return self._welcome(info)
        _log.info(
            "session %016x opened by %s%s",
            info.session,
            info.name or info.address or "a peer",
            f" (replacing {info.replaced:016x}: the front end restarted)" if info.replaced else "",
        )
        self._welcome(info)

    def _welcome(self, info: SessionInfo) -> None:
        self._reply(
            info.peer,
            encode_control(
                Kind.WELCOME, session=info.session, instance=self.instance, layout=self.layout
            ),
        )

    def _switch(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._open(pending)

    def _refuse(self, peer: bytes, msg: ControlMessage, code: Refusal, why: str) -> None:
        self._counts[f"refused_{code.label}"] += 1
        if self._rate_ok(peer):
            _log.warning("refused %s: %s", msg.text[:64] or "a front end", why)
            self._reply(
                peer,
                encode_control(
                    Kind.REFUSED, session=msg.session, instance=self.instance, code=code, text=why
                ),
            )

    def _notice(self, peer: bytes) -> None:
        """Tell a peer without a session so (rate-limited)."""
        if self._rate_ok(peer):
            self._reply(
                peer,
                encode_control(
                    Kind.REFUSED,
                    session=0,
                    instance=self.instance,
                    code=Refusal.NOT_IN_SESSION,
                    text="no session: send HELLO first",
                ),
            )

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


class ZmqServerReceiver:
    """Receiving end of a :class:`ZmqServer` (a PacketReceiver): data packets of the open
    session only. Raises :class:`SessionEnded` once when the session it was serving
    ends, so the caller drops that session's state; the next call serves the new one."""

    def __init__(self, server: ZmqServer, *, spin_s: float = 50e-6) -> None:
        self._server, self.max_packet, self._spin_s = server, server.max_packet, spin_s

    def _check_session(self) -> None:
        """Raise SessionEnded once when the served session is over; open a pending one."""
        srv = self._server
        current = srv.session.session if srv.session is not None else 0
        if srv._bound and (srv._bound != current or srv._pending is not None):
            ended, srv._bound = srv._bound, 0
            raise SessionEnded(f"session {ended:016x} ended")
        if srv._pending is not None:
            srv._switch()

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        n_max = check_recv_buffers(out, lengths, self.max_packet)
        srv = self._server
        self._check_session()
        sock = srv._live_socket()
        start = time.perf_counter()
        while (n := srv._take(sock, out[0])) < 0:
            self._check_session()
            srv._check_monitor()
            waited = time.perf_counter() - start
            if waited >= timeout_s:
                return 0
            if waited >= self._spin_s:
                sock.poll(max(1, math.ceil((timeout_s - waited) * 1000)), zmq.POLLIN)
        if srv._bound == 0:
            srv._bound, srv.served = srv.session.session, srv.session  # type: ignore[union-attr]
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


def check_server_endpoint(endpoint: str, *, keys: CurveKeys | None) -> None:
    """Raise ValueError if a decoder may not bind ``endpoint`` with these keys: beyond
    loopback, only CURVE-authenticated front ends may reach it.

    >>> check_server_endpoint("tcp://127.0.0.1:5555", keys=None)
    """
    from qhil.bridge._zmq import is_loopback

    if keys is None and not is_loopback(endpoint):
        raise ValueError(
            f"endpoint {endpoint!r} is reachable from other machines, so it needs CURVE "
            "authentication: pass --keys DIR (make one with `qhil keys generate DIR`), "
            "or bind tcp://127.0.0.1"
        )
