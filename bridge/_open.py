"""Open both directions of the FPGA <-> host bridge from one spec.

A bridge is two packet streams: *up* (fpga -> host: syndrome packets) and
*down* (host -> fpga: correction packets). ``open_bridge(spec, side=...)``
returns the :class:`Bridge` for one side, whose ``tx``/``rx`` are that side's
ends of the two streams.

- ``shm``: the fpga side creates two rings named ``{name}-up`` and
  ``{name}-down``; the host side attaches to them. Open the fpga side first and
  give the host the returned ``bridge.spec``, which has the concrete name.
- ``zmq``: the host side binds ``endpoint`` (a :class:`ZmqServer`), the fpga side
  connects (a :class:`ZmqClient`) and opens a session, so the host side must be
  up first (the fpga side retries for ``hello_timeout_s``). The returned host
  ``spec`` has the resolved endpoint (the real port for ``tcp://host:*``).
  Over tcp:// beyond loopback both sides need CURVE keys: ``spec.keys_dir``
  (see ``_curve.py``) or ``keys=``.

Both transports carry packets up to ``slot_size - 4`` bytes.

>>> spec = BridgeSpec(transport="shm", n_slots=8, slot_size=64)
>>> with open_bridge(spec, side="fpga") as fpga, open_bridge(fpga.spec, side="host") as host:
...     fpga.tx.try_send(b"syndrome"), host.tx.try_send(b"correction")
...     out, lengths = packet_buffers(4, host.rx.max_packet)
...     host.rx.recv_into(out, lengths, timeout_s=1.0), bytes(out[0, : lengths[0]])
...     fpga.rx.recv_into(out, lengths, timeout_s=1.0), bytes(out[0, : lengths[0]])
(True, True)
(1, b'syndrome')
(1, b'correction')
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from qhil.bridge._curve import CurveKeys
from qhil.bridge._ring import ShmRing
from qhil.bridge._ring_segment import check_geometry, unique_name
from qhil.bridge._transport import PacketReceiver, PacketSender, packet_buffers
from qhil.bridge._zmq import ZmqClient
from qhil.bridge._zmq_server import ZmqServer
from qhil.bridge._zmq_sockets import check_endpoint

__all__ = [
    "SIDES",
    "TRANSPORTS",
    "Bridge",
    "BridgeSpec",
    "open_bridge",
    "packet_buffers",
    "warm_up",
]

TRANSPORTS = ("shm", "zmq")
SIDES = ("fpga", "host")


@dataclasses.dataclass(frozen=True)
class BridgeSpec:
    """How to reach the other side. ``transport``: one of :data:`TRANSPORTS`.
    ``n_slots``/``slot_size``: ring geometry (shm; max packet = slot_size - 4 for
    both). ``endpoint``: zmq address ('tcp://...', 'ipc://...', 'inproc://...').
    ``name``: shm ring-name prefix; empty = a unique one, chosen by the fpga side.
    ``keys_dir``: zmq only: folder of CURVE keys (``qhil keys generate``); "" = none.

    >>> BridgeSpec(transport="udp")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: transport='udp' is not supported; choose one of ('shm', 'zmq')...
    """

    transport: str
    n_slots: int = 4096
    slot_size: int = 256
    endpoint: str = ""
    name: str = ""
    keys_dir: str = ""

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"transport={self.transport!r} is not supported; choose one of {TRANSPORTS} "
                "(shm: same machine, zmq: across machines)"
            )
        check_geometry(self.n_slots, self.slot_size)
        if self.transport == "zmq":
            if not self.endpoint:
                raise ValueError(
                    "transport='zmq' needs an endpoint, e.g. endpoint='tcp://127.0.0.1:5555'"
                )
            check_endpoint(self.endpoint)
        elif self.endpoint or self.keys_dir:
            raise ValueError(
                f"endpoint={self.endpoint!r} and keys_dir={self.keys_dir!r} only apply to "
                "transport='zmq'; leave them empty for 'shm' (rings are found by name)"
            )
        if "/" in self.name or len(self.name) > 20:
            raise ValueError(
                f"name={self.name!r} must have no '/' and at most 20 characters "
                "(it prefixes POSIX shm names, capped at 31 on macOS)"
            )

    @property
    def max_packet(self) -> int:
        """Largest packet either direction carries, in bytes."""
        return self.slot_size - 4


@dataclasses.dataclass(frozen=True)
class Bridge:
    """One side's ends of a bridge: send on ``tx``, receive on ``rx``.

    ``spec`` is concrete (name / endpoint filled in): pass it to the other side.
    ``close()`` ends this side's outgoing stream, then releases the transport.
    """

    spec: BridgeSpec
    side: str
    tx: PacketSender
    rx: PacketReceiver
    _resources: tuple[Any, ...] = dataclasses.field(repr=False)

    @property
    def link(self) -> ZmqServer | ZmqClient | None:
        """The ZeroMQ link behind a zmq bridge (sessions, counters); None over shm."""
        res = self._resources[0]
        return res if isinstance(res, ZmqServer | ZmqClient) else None

    def close(self) -> None:
        """Close both ends and the rings/link. Idempotent."""
        self.tx.close()
        self.rx.close()
        for res in self._resources:
            res.close()  # a ZmqClient lingers briefly so its BYE reaches the decoder

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_bridge(
    spec: BridgeSpec, *, side: str, keys: CurveKeys | None = None, layout: int = 0
) -> Bridge:
    """Open ``side`` ("fpga" or "host") of the bridge ``spec`` describes.

    zmq only: ``keys`` are CURVE keys held in memory (instead of ``spec.keys_dir``);
    ``layout``: ``layout_fingerprint`` of the experiment, checked at the handshake.

    >>> open_bridge(BridgeSpec(transport="shm"), side="host")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: the host side attaches to rings the fpga side made: ...
    """
    if side not in SIDES:
        raise ValueError(f"side={side!r} must be one of {SIDES}")
    if spec.transport == "zmq":
        return _open_zmq(spec, side, keys, layout)
    if side == "fpga":
        base = spec.name or unique_name()
        up = ShmRing.create(n_slots=spec.n_slots, slot_size=spec.slot_size, name=f"{base}-up")
        try:
            down = ShmRing.create(
                n_slots=spec.n_slots, slot_size=spec.slot_size, name=f"{base}-down"
            )
        except BaseException:
            up.close()
            raise
        spec = dataclasses.replace(spec, name=base)
        return Bridge(spec, side, up.sender(), down.receiver(), (up, down))
    if not spec.name:
        raise ValueError(
            "the host side attaches to rings the fpga side made: pass it the spec "
            "returned by open_bridge(..., side='fpga'), whose name is filled in"
        )
    rings: list[ShmRing] = []
    try:
        for direction in ("up", "down"):
            ring = ShmRing.attach(f"{spec.name}-{direction}")
            rings.append(ring)
            if (ring.n_slots, ring.slot_size) != (spec.n_slots, spec.slot_size):
                raise ValueError(
                    f"ring {ring.name!r} is {ring.n_slots} x {ring.slot_size} but the spec "
                    f"says {spec.n_slots} x {spec.slot_size}; use the fpga side's spec"
                )
    except BaseException:
        for ring in rings:
            ring.close()
        raise
    up, down = rings
    return Bridge(spec, side, down.sender(), up.receiver(), (up, down))


def _open_zmq(spec: BridgeSpec, side: str, keys: CurveKeys | None, layout: int) -> Bridge:
    if keys is None and spec.keys_dir:
        keys = CurveKeys.load(spec.keys_dir)
    link: ZmqServer | ZmqClient
    if side == "host":
        link = ZmqServer.bind(spec.endpoint, max_packet=spec.max_packet, keys=keys, layout=layout)
    else:
        link = ZmqClient.connect(
            spec.endpoint, max_packet=spec.max_packet, keys=keys, layout=layout
        )
    spec = dataclasses.replace(spec, endpoint=link.endpoint)
    return Bridge(spec, side, link.sender(), link.receiver(), (link,))


def warm_up() -> None:
    """Run every ring hot path once on a private ring, so numba's compile or cache load
    happens now and not on a run's first packets."""
    from qhil.bridge._transport import packet_buffers

    with ShmRing.create(n_slots=2, slot_size=64) as ring:
        tx, rx = ring.sender(), ring.receiver()
        out, lengths = packet_buffers(2, ring.max_packet)
        slot = tx.reserve()
        assert slot is not None
        tx.commit(1)
        tx.send(np.zeros(8, dtype=np.uint8), timeout_s=0.1)
        rx.recv_into(out, lengths, timeout_s=0.1)
        tx.send(b"\0", timeout_s=0.1)  # bytes arrive as a read-only array: its own compile
        rx.recv_into(out, lengths, timeout_s=0.0)
