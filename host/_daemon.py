"""``qhil serve``: the decoder service as a daemon, serving one front-end session after
another until SIGTERM or SIGINT.

Each session gets fresh assembler state; when it ends (end of stream, BYE, or
its front end restarted), one ``session_ended`` log event gives its account,
and the daemon waits for the next. SIGHUP reloads the authorized client keys
(CURVE) without dropping the open session. Over ZeroMQ the socket stays bound
across sessions; over shared memory the daemon attaches to each new pair of
rings the front end creates under the agreed name.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from qhil.bridge import (
    BridgeSpec,
    CurveKeys,
    ShmRing,
    ZmqServer,
    is_loopback,
    open_bridge,
)
from qhil.host._logs import log_event
from qhil.host._service import DecoderService, HostStats

__all__ = ["ServeSignals", "serve_forever"]


class ServeSignals:
    """SIGTERM/SIGINT ask for a stop at the next safe point; SIGHUP for a key reload."""

    def __init__(self) -> None:
        self.stop = False
        self.reload = False

    def install(self) -> None:
        """Take over the signals (main thread only)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stop = True

    def _on_reload(self, signum: int, frame: Any) -> None:
        self.reload = True


def serve_forever(
    service: DecoderService,
    spec: BridgeSpec,
    *,
    signals: ServeSignals,
    keys: CurveKeys | None = None,
    layout: int = 0,
    max_sessions: int = 0,
    on_link: Callable[[ZmqServer | None], None] = lambda link: None,
    on_session_end: Callable[[Any], None] = lambda live: None,
) -> list[HostStats]:
    """Serve sessions until ``signals.stop`` or ``max_sessions`` (0 = no limit) have
    ended; returns their stats. ``on_link`` gets the ZeroMQ link once bound (None
    over shm); ``on_session_end`` gets each session's ``DecoderService.live`` record."""
    if spec.transport == "zmq":
        return _serve_zmq(
            service,
            spec,
            signals=signals,
            keys=keys,
            layout=layout,
            max_sessions=max_sessions,
            on_link=on_link,
            on_session_end=on_session_end,
        )
    on_link(None)
    done: list[HostStats] = []
    while not signals.stop and (max_sessions == 0 or len(done) < max_sessions):
        bridge = _wait_for_rings(spec, signals)
        if bridge is None:
            break
        with bridge:
            stats = _serve_one(service, bridge.rx, bridge.tx, signals, None, on_session_end)
        if stats is not None:
            done.append(stats)
        _wait_for_rings_gone(spec, signals)
    return done


def _serve_zmq(
    service: DecoderService,
    spec: BridgeSpec,
    *,
    signals: ServeSignals,
    keys: CurveKeys | None,
    layout: int,
    max_sessions: int,
    on_link: Callable[[ZmqServer | None], None],
    on_session_end: Callable[[Any], None],
) -> list[HostStats]:
    with ZmqServer.bind(
        spec.endpoint, max_packet=spec.max_packet, keys=keys, layout=layout
    ) as link:
        log_event(
            "listening",
            f"{service.decoder.name} listening on {link.endpoint}"
            + (
                " with CURVE"
                if keys
                else " WITHOUT authentication: any local process "
                "may open a session (pass --keys DIR to require CURVE)"
            ),
            endpoint=link.endpoint,
            decoder=service.decoder.name,
            curve=keys is not None,
            loopback=is_loopback(link.endpoint),
        )
        on_link(link)
        done: list[HostStats] = []
        while not signals.stop and (max_sessions == 0 or len(done) < max_sessions):
            stats = _serve_one(
                service, link.receiver(), link.sender(), signals, link, on_session_end
            )
            if stats is not None:
                done.append(stats)
        return done


def _serve_one(
    service: DecoderService,
    rx: Any,
    tx: Any,
    signals: ServeSignals,
    link: ZmqServer | None,
    on_session_end: Callable[[Any], None],
) -> HostStats | None:
    """One session; None when none had started (an idle wait, or a late BYE)."""
    live: list[Any] = []

    def should_stop() -> bool:
        if service.live is not None and not live:
            live.append(service.live)
        if signals.reload:
            signals.reload = False
            _reload_keys(link)
        return signals.stop

    stats = service.serve(rx, tx, should_stop=should_stop)
    if live:
        on_session_end(live[0])
    if stats.counts["packets"] == 0:
        return None
    session = link.served if link is not None else None
    log_event(
        "session_ended",
        f"session ended ({stats.stopped_by}): {stats.shots_decoded:,} shots decoded, "
        f"{stats.shots_incomplete:,} incomplete, {stats.counts['packets']:,} packets",
        session=f"{session.session:016x}" if session else "",
        front_end=session.name if session else "",
        peer=session.address if session else "",
        client_key=session.client_key if session else "",
        replaced=f"{session.replaced:016x}" if session and session.replaced else "",
        stats=dataclasses.asdict(stats),
        link=link.counts() if link is not None else {},
    )
    return stats


def _reload_keys(link: ZmqServer | None) -> None:
    if link is None or link.keys is None:
        log_event("keys_reloaded", "SIGHUP: no CURVE keys to reload", level=logging.WARNING)
        return
    keys = link.keys.reloaded()
    link.reload_keys(keys)
    log_event(
        "keys_reloaded",
        f"SIGHUP: {len(keys.authorized)} authorized front-end keys",
        authorized=len(keys.authorized),
    )


def _wait_for_rings(spec: BridgeSpec, signals: ServeSignals) -> Any:
    """Attach to the front end's rings once it has made them; None if stopped first."""
    announced = False
    while not signals.stop:
        try:
            return open_bridge(spec, side="host")
        except FileNotFoundError:
            if not announced:
                log_event(
                    "waiting",
                    f"waiting for a front end to create rings {spec.name!r}",
                    rings=spec.name,
                )
                announced = True
            time.sleep(0.2)
    return None


def _wait_for_rings_gone(spec: BridgeSpec, signals: ServeSignals) -> None:
    """After a session, wait for its front end to remove its rings (so the next attach
    finds the next session's), at most a few seconds."""
    deadline = time.monotonic() + 5.0
    while not signals.stop and time.monotonic() < deadline:
        try:
            ShmRing.attach(f"{spec.name}-up", wait_s=0.0).close()
        except (FileNotFoundError, ValueError):
            return
        time.sleep(0.1)
