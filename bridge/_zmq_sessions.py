"""The decoder's session table: who holds its one session, who waits to take it over,
and the HELLO/BYE rules (written out in ``_zmq_server.py``) that decide between
them. Replies and log lines are rate-limited per peer, so a flood of hostile
HELLOs or stray data cannot amplify into traffic or log spam."""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from qhil.bridge._control import ControlMessage, Kind, Refusal, encode_control
from qhil.bridge._zmq import SessionEnded

if TYPE_CHECKING:
    from qhil.bridge._zmq_server import SessionInfo

__all__ = ["SessionTable"]

_log = logging.getLogger("qhil.bridge")
_NOTICE_EVERY_S = 1.0
_REOPEN_MIN_S = 1.0  # least time between sessions of one front end
_PEERS_REMEMBERED = 1024  # bounded: a flood of new peers cannot grow this


class SessionTable:
    """The state of a :class:`~qhil.bridge._zmq_server.ZmqServer`'s session.

    ``session``: who holds it now; ``served``: the session the receiver last returned
    data of; ``bound``: that session's id while the receiver serves it (0: none);
    ``pending``: a session waiting to open once the receiver has said that the one it
    serves ended. ``counts`` is the server's counter dict; ``reply(peer, body)`` sends
    a control message to one peer.
    """

    def __init__(
        self,
        *,
        instance: int,
        layout: int,
        idle_s: float,
        counts: dict[str, int],
        reply: Callable[[bytes, bytes], None],
    ) -> None:
        self.instance, self.layout, self.idle_s = instance, layout, idle_s
        self._counts, self._reply = counts, reply
        self.session: SessionInfo | None = None
        self.served: SessionInfo | None = None
        self.bound = 0
        self.pending: SessionInfo | None = None
        self._last_heard = 0.0
        self._noticed: collections.OrderedDict[bytes, float] = collections.OrderedDict()

    # -- what the receiver calls ---------------------------------------------------------

    def heard_from(self, peer: bytes) -> bool:
        """Whether ``peer`` holds the session (then it was heard from just now)."""
        s = self.session
        if s is None or peer != s.peer:
            return False
        self._last_heard = time.monotonic()
        return True

    def changed(self) -> bool:
        """Whether the session changed under the receiver, which must say so first."""
        return self.pending is not None or bool(self.bound and self.session is None)

    def check_served(self) -> None:
        """Raise SessionEnded once when the served session is over; open a pending one."""
        current = self.session.session if self.session is not None else 0
        if self.bound and (self.bound != current or self.pending is not None):
            ended, self.bound = self.bound, 0
            raise SessionEnded(f"session {ended:016x} ended")
        if self.pending is not None:
            self._switch()

    def serve(self) -> None:
        """The receiver returns data of the open session: bind it, if not yet."""
        if self.bound == 0:
            self.bound, self.served = self.session.session, self.session  # type: ignore[union-attr]

    def rate_ok(self, peer: bytes) -> bool:
        """True at most once a second per peer: replies and log lines a flood cannot amplify."""
        now = time.monotonic()
        last = self._noticed.pop(peer, -_NOTICE_EVERY_S)
        ok = now - last >= _NOTICE_EVERY_S
        self._noticed[peer] = now if ok else last
        if len(self._noticed) > _PEERS_REMEMBERED:
            self._noticed.popitem(last=False)
        return ok

    # -- control messages ----------------------------------------------------------------

    def bye(self, peer: bytes, session: int) -> bool:
        """Close the session if ``peer`` holds it as ``session``; False if not."""
        s = self.session
        if s is None or peer != s.peer or session != s.session:
            return False
        _log.info("session %016x of %s ended (BYE)", s.session, s.name or "a front end")
        self.session = None
        return True

    def hello(self, new: SessionInfo, msg: ControlMessage) -> None:
        """Open, replace or refuse on the HELLO ``msg`` from ``new.peer``."""
        pid = new.peer
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
        s = self.session
        if s is not None and pid == s.peer and msg.session == s.session:
            self._welcome(s)  # a repeated HELLO: our WELCOME was lost or late
            return
        if s is None:
            if self.bound:  # the receiver still serves the ended one: it says so first
                self.pending = new
            else:
                self._open(new)
            return
        same_front_end = pid == s.peer or (new.client_key and new.client_key == s.client_key)
        if same_front_end and time.time() - s.started_s < _REOPEN_MIN_S:
            # A real restart takes far longer; a HELLO flood must not churn sessions.
            self._refuse(pid, msg, Refusal.BAD_HELLO, "session re-opened too soon; wait 1 s")
            return
        if same_front_end or time.monotonic() - self._last_heard > self.idle_s:
            self.pending = dataclasses.replace(new, replaced=s.session)
            if self.bound != s.session:  # nobody is serving the old one: switch now
                self._switch()
            return
        self._refuse(
            pid,
            msg,
            Refusal.BUSY,
            f"busy: serving front end {s.name or s.address or '?'} (session {s.session:016x}, "
            f"since {time.strftime('%H:%M:%S', time.localtime(s.started_s))})",
        )

    def notice(self, peer: bytes) -> None:
        """Tell a peer without a session so (rate-limited)."""
        if self.rate_ok(peer):
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

    def _open(self, info: SessionInfo) -> None:
        self.session, self._last_heard = info, time.monotonic()
        self._counts["sessions"] += 1
        self._counts["sessions_replaced"] += bool(info.replaced)
        if not self.rate_ok(b"opened:" + info.peer):  # a HELLO flood must not flood the log
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
        pending, self.pending = self.pending, None
        if pending is not None:
            self._open(pending)

    def _refuse(self, peer: bytes, msg: ControlMessage, code: Refusal, why: str) -> None:
        self._counts[f"refused_{code.label}"] += 1
        if self.rate_ok(peer):
            _log.warning("refused %s: %s", msg.text[:64] or "a front end", why)
            self._reply(
                peer,
                encode_control(
                    Kind.REFUSED, session=msg.session, instance=self.instance, code=code, text=why
                ),
            )
