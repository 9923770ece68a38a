"""The bridge's producer end on a GPU ring: wire-v1 packets straight into mapped memory.

:class:`GpuPacketSender` is a :class:`~qhil.bridge._transport.PacketSender`
over the *input* side of a :class:`~qhil.bridge._gpu_ring.MappedSlotRing`. Each
packet lands, as raw bytes, in the slot the persistent kernel polls: no copy
through another buffer, no kernel launch, no ``cudaMemcpy``. It speaks the
ring's flag protocol (``_gpu_ring``'s module docs): wait until the kernel has
handed the slot back (``W_IN_DONE``, acquire), write the bytes and their
length (``H_LENGTH``), then store the slot's flag (release). The kernel parses
and validates the bytes itself (``qhil.kernels.persistent._kernel``), so the
sender never looks inside a packet; one producer thread at a time.

The front end sends one syndrome packet per QEC round. :class:`SyndromeRounds`
holds shots already cut into rounds and packed, and
:meth:`GpuPacketSender.try_send_rounds` encodes and publishes them in one
compiled call (``write_syndrome`` straight into each slot), which is what a
host-side front-end emulator or benchmark needs to keep up with a 1 µs round
clock; the per-packet :meth:`~GpuPacketSender.try_send` costs a Python call
each.

>>> import numpy as np
>>> dets = np.array([[1, 0, 1, 1, 0, 0]], dtype=np.uint8)  # one shot, rounds of 2, 3 and 1 bits
>>> batch = SyndromeRounds.from_detectors(dets, np.array([0, 2, 5, 6]), shot_ids=[7])
>>> batch.num_packets, batch.payloads[0, :, 0].tolist()
(3, [1, 3, 0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from qhil.bridge._gpu_ring import MappedSlotRing, _commit, _reserve
from qhil.bridge._jit import njit_cached
from qhil.bridge._transport import Backoff, TransportClosed, as_packet
from qhil.bridge._wire import FLAG_FIRST_ROUND, FLAG_LAST_ROUND, syndrome_size, write_syndrome

__all__ = ["GpuPacketSender", "SyndromeRounds"]

_I63 = 2**63  # shot and seq travel as u64; the receivers reject values >= 2**63 (BAD_FIELD)


@dataclasses.dataclass(frozen=True, eq=False)
class SyndromeRounds:
    """Shots cut into their per-round syndrome packets, as the front end sends them.

    Packet ``k`` is round ``k % T`` of shot ``shot_ids[k // T]``, with
    ``seq = first_seq + k``, ``t_fpga = 0`` (there is no front-end clock on the
    host) and FIRST_ROUND / LAST_ROUND set on rounds 0 and ``T - 1``.

    Attributes:
        payloads: uint8[shots, T, P], C-contiguous; ``payloads[s, r]`` is round
            ``r`` of shot ``s`` packed LSB-first (``np.packbits(..., bitorder="little")``),
            ``P = ceil(max(n_bits) / 8)``, unused bytes zero.
        n_bits: int64[T], C-contiguous, detection events per round (>= 0, < 2**16).
        shot_ids: int64[shots], C-contiguous, each in 0..2**63-1.
        stream_id: the packets' stream, 0..2**32-1.
        first_seq: the first packet's seq, >= 0.
    """

    payloads: np.ndarray
    n_bits: np.ndarray
    shot_ids: np.ndarray
    stream_id: int = 0
    first_seq: int = 0

    def __post_init__(self) -> None:
        p, nb, ids = self.payloads, self.n_bits, self.shot_ids
        if not (isinstance(p, np.ndarray) and p.dtype == np.uint8 and p.ndim == 3):
            raise ValueError("payloads must be uint8[shots, T, P]; build it with from_detectors")
        if not (isinstance(nb, np.ndarray) and nb.dtype == np.int64 and nb.shape == p.shape[1:2]):
            raise ValueError(
                f"n_bits must be int64[T={p.shape[1]}]; got {getattr(nb, 'shape', nb)}"
            )
        if nb.size and (nb.min() < 0 or nb.max() >= 2**16 or (nb.max() + 7) // 8 > p.shape[2]):
            raise ValueError(f"n_bits must lie in 0..65535 and fit P={p.shape[2]} payload bytes")
        if not (isinstance(ids, np.ndarray) and ids.dtype == np.int64 and ids.shape == p.shape[:1]):
            raise ValueError(f"shot_ids must be int64[shots={p.shape[0]}]")
        if ids.size and ids.min() < 0:
            raise ValueError("shot_ids must be >= 0 (the wire carries them as u64 below 2**63)")
        if not 0 <= self.stream_id < 2**32:
            raise ValueError(f"stream_id={self.stream_id} must lie in 0..2**32-1")
        if not 0 <= self.first_seq or self.first_seq + self.num_packets > _I63:
            raise ValueError(f"first_seq={self.first_seq} must be >= 0, the last seq < 2**63")
        for a in (p, nb, ids):
            if not a.flags.c_contiguous:
                raise ValueError("payloads, n_bits and shot_ids must be C-contiguous")

    @classmethod
    def from_detectors(
        cls,
        dets: np.ndarray,
        round_offsets: np.ndarray | Sequence[int],
        *,
        shot_ids: np.ndarray | Sequence[int],
        stream_id: int = 0,
        first_seq: int = 0,
    ) -> SyndromeRounds:
        """Cut whole shots into rounds.

        Args:
            dets: bool or uint8[shots, num_detectors], stim detector order.
            round_offsets: int[T + 1]; round ``r`` is detectors
                ``round_offsets[r]:round_offsets[r + 1]`` (``DetectorLayout.round_offsets``).
            shot_ids: one id per shot.
        """
        d = np.asarray(dets)
        off = np.asarray(round_offsets, dtype=np.int64)
        if off.ndim != 1 or off.size < 2 or off[0] != 0 or (np.diff(off) < 0).any():
            raise ValueError("round_offsets must be int[T + 1], ascending from 0 (T >= 1 rounds)")
        if d.ndim != 2 or d.shape[1] != off[-1]:
            raise ValueError(f"dets must have shape (shots, {int(off[-1])}); got {d.shape}")
        n_bits = np.ascontiguousarray(np.diff(off))
        width = max(1, int((n_bits.max() + 7) // 8))
        payloads = np.zeros((d.shape[0], n_bits.size, width), dtype=np.uint8)
        bits = d.astype(bool, copy=False)
        for r in range(n_bits.size):
            packed = np.packbits(bits[:, off[r] : off[r + 1]], axis=1, bitorder="little")
            payloads[:, r, : packed.shape[1]] = packed
        ids = np.ascontiguousarray(np.asarray(shot_ids, dtype=np.int64).reshape(-1))
        return cls(payloads, n_bits, ids, stream_id=stream_id, first_seq=first_seq)

    @property
    def rounds(self) -> int:
        """T, packets per shot."""
        return int(self.n_bits.shape[0])

    @property
    def num_packets(self) -> int:
        return int(self.payloads.shape[0]) * self.rounds


@njit_cached(nogil=True)
def _send_rounds(ctrl, in_seq, in_hdr, in_data, local, payloads, n_bits, shot_ids,
                 stream, first_seq, start, stop) -> int:  # fmt: skip
    """Encode and publish packets ``start..stop-1`` of a batch; returns the next index
    (``stop`` unless the ring filled up first)."""
    t_n = n_bits.shape[0]
    k = start
    while k < stop:
        slot = _reserve(ctrl, in_seq, local)
        if slot < 0:
            break
        s = k // t_n
        r = k - s * t_n
        flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (FLAG_LAST_ROUND if r == t_n - 1 else 0)
        size = write_syndrome(in_data[slot], stream, shot_ids[s], r, first_seq + k, 0, flags,
                              payloads[s, r], n_bits[r])  # fmt: skip
        _commit(in_seq, in_hdr, local, size)
        k += 1
    return k


@njit_cached(nogil=True)
def _push(ctrl, in_seq, in_hdr, in_data, local, packet) -> int:
    slot = _reserve(ctrl, in_seq, local)
    if slot < 0:
        return 0
    for i in range(packet.shape[0]):
        in_data[slot, i] = packet[i]
    _commit(in_seq, in_hdr, local, packet.shape[0])
    return 1


class GpuPacketSender:
    """PacketSender into a GPU ring's input slots; get it from the ring's owner.

    Args:
        ring: the ring; this sender is its only producer from now on.
        on_wait: called between back-off sleeps while a send waits for room; it
            may raise (the kernel's owner raises its recorded failure, so a dead
            kernel is reported instead of waited on until the timeout).
        spin_s: busy-spin this long before backing off with sleeps.
    """

    def __init__(
        self,
        ring: MappedSlotRing,
        *,
        on_wait: Callable[[], None] | None = None,
        spin_s: float = 200e-6,
    ) -> None:
        self._ring = ring
        self.max_packet = ring.spec.in_width
        self._on_wait = on_wait
        self._spin_s = spin_s
        self._reserved = -1
        self._open = True

    def _args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._open:
            raise TransportClosed("this GpuPacketSender is closed; get a new one from its owner")
        h = self._ring._host
        return h["ctrl"], h["in_seq"], h["in_hdr"], h["in_data"], self._ring._local

    def _wait(self, backoff: Backoff) -> bool:
        if self._on_wait is not None:
            self._on_wait()
        return backoff.keep_waiting()

    @property
    def sent(self) -> int:
        """Packets published into the ring so far (by any of its producers)."""
        return self._ring.pushed

    def reserve(self) -> np.ndarray | None:
        """Writable uint8[max_packet] view of the next slot (mapped memory), or None if full."""
        ctrl, in_seq, _, in_data, local = self._args()
        self._reserved = int(_reserve(ctrl, in_seq, local))
        return None if self._reserved < 0 else in_data[self._reserved]

    def commit(self, length: int) -> None:
        """Publish the slot from :meth:`reserve`, holding ``length`` bytes."""
        _, in_seq, in_hdr, _, local = self._args()
        if self._reserved < 0:
            raise RuntimeError("commit() needs a successful reserve() first (it returned None?)")
        if not 0 <= length <= self.max_packet:
            raise ValueError(f"length={length} must be in 0..max_packet={self.max_packet}")
        _commit(in_seq, in_hdr, local, length)
        self._reserved = -1

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Copy ``packet`` into the next slot and publish it; False if the ring is full."""
        return self.send(packet, timeout_s=0.0)

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Like :meth:`try_send`, waiting up to ``timeout_s`` for room; False on timeout."""
        pkt = np.ascontiguousarray(as_packet(packet, self.max_packet))
        args = self._args()
        backoff = Backoff(timeout_s, spin_s=self._spin_s)
        while not _push(*args, pkt):
            if not self._wait(backoff):
                return False
        self._reserved = -1  # the head moved: a pending reservation is void
        return True

    def try_send_rounds(
        self, batch: SyndromeRounds, start: int = 0, stop: int | None = None
    ) -> int:
        """Encode and publish ``batch``'s packets ``start..stop-1`` while there is room.

        ``stop`` defaults to ``batch.num_packets``. Returns the index of the next
        packet to send (``stop`` when all were published).
        """
        end = batch.num_packets if stop is None else stop
        if not 0 <= start <= end <= batch.num_packets:
            raise ValueError(f"need 0 <= start={start} <= stop={end} <= {batch.num_packets}")
        need = syndrome_size(int(batch.n_bits.max())) if batch.rounds else 0
        if need > self.max_packet:
            raise ValueError(
                f"this batch's largest packet is {need} bytes but the ring's slots hold "
                f"{self.max_packet}; build the ring for this circuit's rounds"
            )
        self._reserved = -1
        b = batch
        args = (b.payloads, b.n_bits, b.shot_ids, b.stream_id, b.first_seq, start, end)
        return int(_send_rounds(*self._args(), *args))

    def send_rounds(self, batch: SyndromeRounds, *, timeout_s: float, start: int = 0) -> int:
        """Like :meth:`try_send_rounds`, but wait for room whenever the ring is full,
        giving up after ``timeout_s`` without progress.

        Returns the next packet index: ``batch.num_packets`` unless it timed out.
        """
        k = self.try_send_rounds(batch, start)
        backoff = Backoff(timeout_s, spin_s=self._spin_s)
        while k < batch.num_packets:
            if not self._wait(backoff):
                break
            k, before = self.try_send_rounds(batch, k), k
            if k > before:
                backoff = Backoff(timeout_s, spin_s=self._spin_s)
        return k

    def close(self) -> None:
        """Stop sending on this end (the ring stays with its owner). Idempotent."""
        self._open = False
