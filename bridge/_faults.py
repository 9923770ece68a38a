"""Fault injection on the send side of any transport, for testing the receiver.

:class:`FaultInjector` wraps a :class:`PacketSender` and is one itself. For each
packet, with probability ``rate``, it applies one fault kind drawn uniformly
from ``kinds``:

- ``drop``: never sent.
- ``duplicate``: sent twice in a row.
- ``reorder``: held back, sent right after the next packet (``flush()`` and
  ``close()`` send a packet still held).
- ``corrupt``: one random bit of one random byte flipped (CRC-32 catches any
  single-bit flip). An empty packet has no bit to flip and is sent as is.

Draws depend only on ``seed`` and the sequence of accepted packets, so a run
is reproducible: a send that finds the link full keeps its draw for the retry.
Copies that cannot go out at once (a duplicate, a released packet) wait in a
small backlog that is sent before any new packet, so order is exactly the
one the log describes.

>>> from qhil.bridge._ring import ShmRing
>>> with ShmRing.create(n_slots=16, slot_size=64) as ring:
...     tx = FaultInjector(ring.sender(), rate=1.0, kinds=("duplicate",), seed=1)
...     tx.try_send(b"a"), ring.occupancy(), tx.log[0].kind, tx.counts()["duplicate"]
(True, 2, 'duplicate', 1)
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from qhil.bridge._transport import Backoff, PacketSender, as_packet

__all__ = ["KINDS", "FaultInjector", "InjectedFault"]

KINDS = ("drop", "duplicate", "reorder", "corrupt")


@dataclasses.dataclass(frozen=True)
class InjectedFault:
    """One applied fault. ``index``: the packet's position in send order (from 0).
    ``byte``/``bit``: the flipped bit, for ``corrupt`` only (else None).
    ``packet``: the packet as it was before the fault, so a test can tell
    which shot and round it hit.

    >>> InjectedFault(index=3, kind="corrupt", byte=0, bit=7)
    InjectedFault(index=3, kind='corrupt', byte=0, bit=7)
    """

    index: int
    kind: str
    byte: int | None = None
    bit: int | None = None
    packet: bytes = dataclasses.field(default=b"", repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not a fault kind; choose from {KINDS}")
        if self.index < 0:
            raise ValueError(f"index={self.index} must be >= 0 (position in send order)")
        if self.kind == "corrupt":
            if self.byte is None or self.bit is None or self.byte < 0 or not 0 <= self.bit < 8:
                raise ValueError(f"corrupt needs byte >= 0 and bit in 0..7, got {self}")
        elif self.byte is not None or self.bit is not None:
            raise ValueError(f"byte/bit only apply to 'corrupt', not {self.kind!r}")


class FaultInjector:
    """A PacketSender that injects faults into the packets it passes to ``inner``."""

    def __init__(
        self,
        inner: PacketSender,
        *,
        rate: float = 0.01,
        kinds: tuple[str, ...] = KINDS,
        seed: int,
    ):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"rate={rate!r} must be a probability in [0, 1] (e.g. 0.01)")
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad or len(set(kinds)) != len(kinds):
            raise ValueError(
                f"kinds={kinds!r} must be a non-empty tuple of distinct kinds from {KINDS}"
                + (f"; unknown: {bad}" if bad else "")
            )
        self.inner, self.rate, self.kinds = inner, float(rate), kinds
        self.max_packet = inner.max_packet
        self.log: list[InjectedFault] = []
        self._rng = np.random.default_rng(seed)
        self._index = 0  # packets accepted so far
        self._draw: tuple[str, int, int] | None = None  # this packet's fault, kept on retry
        self._held: bytes | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self._scratch = np.zeros(self.max_packet, dtype=np.uint8)
        self._inner_view: np.ndarray | None = None

    def _drain(self) -> bool:
        while self._backlog:
            if not self.inner.try_send(self._backlog[0]):
                return False
            self._backlog.popleft()
        return True

    def _decide(self, n: int) -> tuple[str, int, int]:
        if self._draw is None:
            kind, byte, bit = "none", -1, -1
            if self.rate > 0 and self._rng.random() < self.rate:
                kind = self.kinds[int(self._rng.integers(len(self.kinds)))]
                if kind == "corrupt":
                    byte, bit = int(self._rng.integers(max(n, 1))), int(self._rng.integers(8))
            self._draw = (kind, byte, bit)
        return self._draw

    def _plan(self, pkt: bytes) -> tuple[bytes | None, list[bytes]]:
        """(first packet to send or None, packets to follow it) for an accepted packet."""
        kind, byte, bit = self._decide(len(pkt))
        if kind == "corrupt" and not pkt:
            kind = "none"
        held, self._held = self._held, None
        first: bytes | None = pkt
        rest: list[bytes] = []
        if kind == "drop":
            first = None
        elif kind == "duplicate":
            rest.append(pkt)
        elif kind == "reorder":
            first, self._held = None, pkt
        elif kind == "corrupt":
            flipped = bytearray(pkt)
            flipped[byte] ^= 1 << bit
            first = bytes(flipped)
        if held is not None:
            rest.append(held)
        if first is None and rest:
            first = rest.pop(0)
        if kind != "none":
            corrupt = kind == "corrupt"
            fault = InjectedFault(
                self._index, kind, byte if corrupt else None, bit if corrupt else None, pkt
            )
            self.log.append(fault)
        self._index += 1
        self._draw = None
        return first, rest

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Send ``packet`` with maybe a fault; False (draw kept) if the link is full."""
        pkt = as_packet(packet, self.max_packet).tobytes()
        if not self._drain():
            return False
        kind = self._decide(len(pkt))[0]
        if kind in ("none", "duplicate", "corrupt") or self._held is not None:
            # Something goes out now: it must fit before the packet counts as sent.
            if self.inner.reserve() is None:
                return False
        first, rest = self._plan(pkt)
        self._backlog.extend(([first] if first is not None else []) + rest)
        self._drain()
        return True

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Like :meth:`try_send`, retrying up to ``timeout_s``."""
        backoff = None
        while not self.try_send(packet):
            backoff = backoff or Backoff(timeout_s)
            if not backoff.keep_waiting():
                return False
        return True

    def reserve(self) -> np.ndarray | None:
        """A uint8[max_packet] scratch buffer, or None if the link is full."""
        if not self._drain() or self.inner.reserve() is None:
            return None
        return self._scratch

    def commit(self, length: int) -> None:
        """Send the first ``length`` bytes of the reserved scratch buffer."""
        if not 0 <= length <= self.max_packet:
            raise ValueError(f"length={length} must be in 0..max_packet={self.max_packet}")
        if not self.try_send(self._scratch[:length]):
            raise RuntimeError(
                "link filled up; call commit() only after reserve() returned a buffer"
            )

    def flush(self, *, timeout_s: float = 1.0) -> bool:
        """Send a held (reordered) packet and any backlog; False if still pending."""
        if self._held is not None:
            self._backlog.append(self._held)
            self._held = None
        backoff = None
        while not self._drain():
            backoff = backoff or Backoff(timeout_s)
            if not backoff.keep_waiting():
                return False
        return True

    def counts(self) -> dict[str, int]:
        """Faults applied so far, per kind in ``kinds`` (zeros included)."""
        out = dict.fromkeys(self.kinds, 0)
        for fault in self.log:
            out[fault.kind] += 1
        return out

    def close(self) -> None:
        """Flush (best effort, 1 s), then close ``inner``."""
        self.flush()
        self.inner.close()
