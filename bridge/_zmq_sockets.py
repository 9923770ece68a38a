"""Socket plumbing both ends of a ZeroMQ link share: which endpoints qhil supports,
contexts, socket options, and taking one message without trusting the peer."""

from __future__ import annotations

from typing import Any

import numpy as np
import zmq

from qhil.bridge._control import CONTROL_MAX

__all__ = ["SCHEMES", "check_endpoint", "configure_socket", "own_context", "recv_data"]

SCHEMES = ("tcp://", "ipc://", "inproc://")
_MIN_MAXMSGSIZE = 4096


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
