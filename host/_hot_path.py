"""The decoder service's compiled hot path over the shared-memory ring.

Over any ``PacketReceiver`` the service's loop makes, per packet, one Python call to
receive and one to assemble, and per correction one to encode and one to send. Numba's
dispatch of a call with many array arguments costs about a microsecond, and in lockstep
the rounds of a shot arrive a microsecond or two apart, so those calls queue up behind
each other and the last round waits for the earlier ones. Over the shm ring with a
batch decoder, :class:`RingHotPath` makes two compiled calls per shot instead:

- :meth:`RingHotPath.take`: pop and assemble in compiled code, stamping each batch with
  ``clock_ns()``, until a shot is ready, end of stream arrives, the ring closes, or
  ``until_ns`` passes. Its dispatch happens before the shot's first round arrives, so
  it is off the reaction path.
- :meth:`RingHotPath.send_decoded`: encode each decoded shot's correction straight into
  the outgoing ring's next slot and publish it.

Decoding, expiry, statistics and end of stream stay the service's. A streaming decoder,
which is handed each packet in Python, takes the general loop.
"""

from __future__ import annotations

import numpy as np

from qhil.bridge import (
    PacketReceiver,
    PacketSender,
    RingReceiver,
    RingSender,
    TransportClosed,
    clock_ns,
    closed_ring_args,
    njit_cached,
    ring_pop,
    ring_publish,
    ring_room,
    write_correction,
)
from qhil.host._assembler import EOS, ShotAssembler, assemble

__all__ = ["RingHotPath"]

_SPINS = 2048  # compiled polls between clock reads while waiting (~10 µs)


@njit_cached(nogil=True)
def _take(ctrl, slots, local, buf, lengths, nbits, det_off, stream_state, seen, slot_shot,
          slot_closed, slot_nrecv, received, dets, meta, counters, ready, accepted, window,
          until_ns, out):  # type: ignore[no-untyped-def]  # fmt: skip
    """Pop and assemble until a shot is ready (returns how many), end of stream was
    counted, ``until_ns`` passed (0), or the ring is closed and drained (-1) or corrupt
    (-2). ``out``: int64[2] = packets taken, the clock at return."""
    taken = 0
    while True:
        k = ring_pop(ctrl, slots, local, buf, lengths, _SPINS)
        now = clock_ns()
        if k < 0:
            out[0], out[1] = taken, now
            return k
        if k > 0:
            taken += k
            eos = counters[EOS]
            n = assemble(buf, lengths, k, now, nbits, det_off, stream_state, seen, slot_shot,
                         slot_closed, slot_nrecv, received, dets, meta, counters, ready,
                         accepted, window)  # fmt: skip
            if n > 0 or counters[EOS] != eos:
                out[0], out[1] = taken, now
                return n
        if now >= until_ns:
            out[0], out[1] = taken, now
            return 0


@njit_cached(nogil=True)
def _send(ctrl, slots, local, ready, obs, status, slot_shot, meta, scratch, spins):  # type: ignore[no-untyped-def]
    """Encode and publish one correction per row of ``ready``, ``obs[i]`` (uint8 0/1)
    its logical flips; returns how many went out before the ring stayed full for
    ``spins`` polls (or was closed)."""
    n_slots, n_obs = slots.shape[0], obs.shape[1]
    for i in range(ready.shape[0]):
        if ring_room(ctrl, n_slots, local, spins) != 1:
            return i
        for b in range((n_obs + 7) // 8):
            scratch[b] = 0
        for k in range(n_obs):  # packed LSB-first, as the wire carries them
            scratch[k >> 3] |= (obs[i, k] != 0) << (k & 7)
        st, sl = ready[i, 0], ready[i, 1]
        t_rx = meta[st, sl, 4] if meta[st, sl, 4] != 0 else meta[st, sl, 1]
        out = slots[local[0] & (n_slots - 1), 4:]
        n = write_correction(out, st, slot_shot[st, sl], meta[st, sl, 2], meta[st, sl, 3],
                             status, 0, scratch, n_obs, scratch, 0, t_rx, clock_ns())  # fmt: skip
        ring_publish(ctrl, slots, local, n)
    return ready.shape[0]


class RingHotPath:
    """The compiled take and send of one service run over a ring pair; build with
    :meth:`for_link`, which says None where the general loop must run instead."""

    def __init__(self, rx: RingReceiver, tx: RingSender, asm: ShotAssembler, max_batch: int):
        self._rx, self._tx, self._asm = rx, tx, asm
        self.buf = np.zeros((max_batch, rx.max_packet), dtype=np.uint8)
        self.lengths = np.zeros(max_batch, dtype=np.uint32)
        self._out = np.zeros(2, dtype=np.int64)
        self._scratch = np.zeros(8192, dtype=np.uint8)  # one shot's obs, packed: any u16 count
        # The calls' arguments, gathered once: each Python-side step costs on this path.
        # The ring views stay valid while the service runs (its ends close after it).
        state = asm.assemble_args()
        self._take_args = (*rx.kernel_args(), self.buf, self.lengths, *state)
        self._tx_ring = tx.kernel_args()
        self._send_tail = (asm.slot_shot, asm.meta, self._scratch, _SPINS)
        self._ready = asm.ready_buffer

    @classmethod
    def for_link(cls, rx: PacketReceiver, tx: PacketSender | object, asm: ShotAssembler,
                 *, max_batch: int) -> RingHotPath | None:  # fmt: skip
        """The hot path when both ends are the shm ring's, else None."""
        if isinstance(rx, RingReceiver) and isinstance(tx, RingSender):
            return cls(rx, tx, asm, max_batch)
        return None

    @staticmethod
    def warm_up(asm: ShotAssembler) -> None:
        """Compile (or load) both compiled calls with a run's argument types, on a closed
        stand-in ring: the first real shot then finds them ready."""
        ring = closed_ring_args()
        buf, lengths = np.zeros((1, 252), dtype=np.uint8), np.zeros(1, dtype=np.uint32)
        _take(*ring, buf, lengths, *asm.assemble_args(), 0, np.zeros(2, dtype=np.int64))  # type: ignore[call-arg]  # a variadic tuple mypy cannot count
        obs, scratch = np.zeros((1, 1), dtype=np.uint8), np.zeros(8192, dtype=np.uint8)
        _send(*ring, asm.ready_buffer[:1], obs, 0, asm.slot_shot, asm.meta, scratch, 1)

    def take(self, until_ns: int) -> tuple[int, np.ndarray, int]:
        """Wait in compiled code for the next ready shot(s), at most until ``until_ns``
        (``time.monotonic_ns`` clock). Returns (packets taken, ready (stream, slot)
        pairs as ``ShotAssembler.add`` gives them, the clock at return). Raises
        ``TransportClosed`` once the ring is closed and drained."""
        n = _take(*self._take_args, until_ns, self._out)  # type: ignore[call-arg]  # a variadic tuple mypy cannot count
        if n == -1:
            raise TransportClosed(f"ring {self._rx.name!r} is closed and drained (end of stream)")
        if n == -2:
            raise RuntimeError(
                f"ring {self._rx.name!r}: a slot length exceeds max_packet (corrupt)"
            )
        return int(self._out[0]), self._ready[: max(n, 0)], int(self._out[1])

    def send_decoded(self, ready: np.ndarray, obs: np.ndarray, status: int) -> int:
        """Send the corrections of ``ready`` (int64[n, 2] (stream, slot)); ``obs``:
        bool[n, n_obs], the predictions (copied only if not C-contiguous bool). Returns
        how many went out; the caller sends the rest the slow way (waiting for room)."""
        if obs.dtype != np.bool_ or not obs.flags.c_contiguous:
            obs = np.ascontiguousarray(obs, dtype=np.bool_)
        return int(_send(*self._tx_ring, ready, obs.view(np.uint8), status, *self._send_tail))
