"""Assembling rounds into shots on the decoder side: validate, de-duplicate, order, expire.

All per-packet work runs in one numba call per received batch. The Python
side only sees whole shots: those ready to decode and those that can no longer
complete.

Per stream the assembler keeps:
- the next expected ``seq`` and a window of recently seen ``seq`` values, so a
  gap is counted once (``seq_gap``, with the number of packets missing) and a
  repeat is rejected (``duplicate``); a packet arriving after a gap was counted
  is ``reordered`` and still accepted;
- a table of open shots indexed by ``shot % slots``. A shot is *ready* when
  all its rounds arrived. It *expires* (incomplete) when a shot ``window``
  or more newer has been seen, when it has been open longer than the assembly
  timeout, or at the end of the stream. Packets for a shot that already closed
  are ``stale``.

A ``shot`` more than ``2**20`` ahead of the newest one is ``stale`` and a
``seq`` that far ahead of the next expected one is ``bad_field``, and neither
moves the stream's state: one corrupt or hostile packet cannot make every later
round look old (a stream's first round may start anywhere).

``seq`` and ``shot`` are u64 on the wire, but values of 2**63 or more are
rejected as ``bad_field``: a front end at a 1 MHz round clock reaches them
after about 290,000 years, and keeping them below 2**63 lets the tables use
int64 with -1 as the empty marker.

Every packet taken in is counted exactly once: as a round accepted into a
shot, or under a ``Reason``, or as end-of-stream. After each ``add`` the
``accepted`` buffer says which packets of the batch were rounds accepted into
a shot, so a streaming decoder can be handed exactly those, in arrival order.

>>> asm = ShotAssembler(bits_per_round=(4, 4), num_streams=1)
>>> asm.slots, asm.num_detectors
(512, 8)
"""

from __future__ import annotations

import numpy as np

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    SYN_PAYLOAD_AT,
    Reason,
    njit_cached,
    parse_syndrome,
)

__all__ = ["EOS", "ShotAssembler", "assemble"]

# Counter indices beyond the Reason codes.
PACKETS = 16
ROUNDS_ACCEPTED = 17
REORDERED = 18
PACKETS_MISSING = 19
EOS = 20
N_COUNTERS = 21

# Reason codes as plain ints: numba freezes module globals as constants.
_BAD_LENGTH = int(Reason.BAD_LENGTH)
_SEQ_GAP = int(Reason.SEQ_GAP)
_DUPLICATE = int(Reason.DUPLICATE)
_UNKNOWN_STREAM = int(Reason.UNKNOWN_STREAM)
_BAD_FIELD = int(Reason.BAD_FIELD)
_STALE = int(Reason.STALE)

_SEEN = 4096  # seq values remembered per stream for duplicate detection
_MAX_AHEAD = 1 << 20  # farthest a shot or seq may jump ahead (see the module docstring)

# slot_meta columns
_FIRST_RX, _LAST_RX, _LAST_SEQ, _LAST_TFPGA, _RX_DONE = 0, 1, 2, 3, 4
# stream_state columns
_NEXT_SEQ, _MAX_SHOT = 0, 1


@njit_cached(nogil=True)
def assemble(
    buf,
    lengths,
    count,
    now,
    nbits,
    det_off,
    stream_state,
    seen,
    slot_shot,
    slot_closed,
    slot_nrecv,
    slot_recv,
    slot_dets,
    slot_meta,
    counters,
    ready,
    accepted,
    window,
):  # type: ignore[no-untyped-def]
    fields = np.zeros(7, dtype=np.uint64)
    n_slots = slot_shot.shape[1]
    r1 = nbits.shape[0]
    n_ready = 0
    for i in range(count):
        counters[PACKETS] += 1
        accepted[i] = 0
        p = buf[i]
        r = parse_syndrome(p, lengths[i], fields)
        if r != 0:
            counters[r] += 1
            continue
        flags = np.int64(fields[0])
        n_bits = np.int64(fields[1])
        st = np.int64(fields[2])
        rnd = np.int64(fields[3])
        shot = np.int64(fields[4])
        seq = np.int64(fields[5])
        r = _take_seq(st, seq, shot, stream_state, seen, counters)
        if r != 0:
            counters[r] += 1
            continue
        if flags & FLAG_END_OF_STREAM:
            counters[EOS] += 1
            continue
        r = _check_layout(flags, n_bits, rnd, nbits)
        if r != 0:
            counters[r] += 1
            continue
        s = shot % n_slots
        if slot_shot[st, s] != shot:
            too_old = shot <= stream_state[st, _MAX_SHOT] - window
            if slot_closed[st, s] == shot or too_old or slot_shot[st, s] >= 0:
                counters[_STALE] += 1
                continue
            _open_slot(st, s, shot, now, slot_shot, slot_nrecv, slot_recv, slot_dets, slot_meta)
        if slot_recv[st, s, rnd]:
            counters[_DUPLICATE] += 1  # the same round under a new seq
            continue
        if shot > stream_state[st, _MAX_SHOT]:
            stream_state[st, _MAX_SHOT] = shot
        base = det_off[rnd]
        for b in range(n_bits):
            slot_dets[st, s, base + b] = (p[SYN_PAYLOAD_AT + (b >> 3)] >> (b & 7)) & 1
        slot_recv[st, s, rnd] = 1
        slot_nrecv[st, s] += 1
        slot_meta[st, s, _LAST_RX] = now
        if rnd == r1 - 1:
            slot_meta[st, s, _LAST_SEQ] = seq
            slot_meta[st, s, _LAST_TFPGA] = np.int64(fields[6])
        counters[ROUNDS_ACCEPTED] += 1
        accepted[i] = 1
        if slot_nrecv[st, s] == r1:
            slot_meta[st, s, _RX_DONE] = now
            ready[n_ready, 0] = st
            ready[n_ready, 1] = s
            n_ready += 1
    return n_ready


@njit_cached(nogil=True)
def _take_seq(st, seq, shot, stream_state, seen, counters):  # type: ignore[no-untyped-def]
    """Check a packet's stream, seq and shot against its stream's state and, if it
    passes, record its seq (counting a gap or a reordering); returns a Reason code."""
    if seq < 0 or shot < 0:
        return _BAD_FIELD  # >= 2**63 on the wire: see the module docstring
    if st >= stream_state.shape[0]:
        return _UNKNOWN_STREAM
    started = stream_state[st, _MAX_SHOT] >= 0
    if started and seq > stream_state[st, _NEXT_SEQ] + _MAX_AHEAD:
        return _BAD_FIELD
    if started and shot > stream_state[st, _MAX_SHOT] + _MAX_AHEAD:
        return _STALE
    k = seq % _SEEN
    if seen[st, k] == seq:
        return _DUPLICATE
    seen[st, k] = seq
    nxt = stream_state[st, _NEXT_SEQ]
    if seq > nxt:
        counters[_SEQ_GAP] += 1  # once per gap
        counters[PACKETS_MISSING] += seq - nxt
        stream_state[st, _NEXT_SEQ] = seq + 1
    elif seq == nxt:
        stream_state[st, _NEXT_SEQ] = seq + 1
    else:
        counters[REORDERED] += 1
    return 0


@njit_cached(nogil=True)
def _check_layout(flags, n_bits, rnd, nbits):  # type: ignore[no-untyped-def]
    """A round's size and first/last flags against the stream's layout; a Reason code."""
    r1 = nbits.shape[0]
    if rnd >= r1 or n_bits != nbits[rnd]:
        return _BAD_LENGTH
    first = (flags & FLAG_FIRST_ROUND) != 0
    last = (flags & FLAG_LAST_ROUND) != 0
    if first != (rnd == 0) or last != (rnd == r1 - 1):
        return _BAD_FIELD
    return 0


@njit_cached(nogil=True)
def _open_slot(st, s, shot, now, slot_shot, slot_nrecv, slot_recv, slot_dets, slot_meta):  # type: ignore[no-untyped-def]
    """Give slot ``s`` to a new shot, with nothing received yet."""
    slot_shot[st, s] = shot
    slot_nrecv[st, s] = 0
    slot_recv[st, s, :] = 0
    slot_dets[st, s, :] = 0
    slot_meta[st, s, :] = 0
    slot_meta[st, s, _FIRST_RX] = now


class ShotAssembler:
    """Turns a stream of syndrome packets into whole shots.

    Args:
        bits_per_round: detection events in each round of a shot (the last is
            the final data-measurement round), as the front end packs them.
        num_streams: stream ids ``0..num_streams-1`` are known; others are
            rejected ``unknown_stream``.
        window: a shot expires once a shot this many newer has been seen.
        timeout_s: a shot expires when open longer than this.
        max_batch: most packets passed to one ``add`` call.

    Buffers (read them only between calls):
        dets: uint8[num_streams, slots, num_detectors], a shot's detection
            events in stim order, 0/1.
        received: uint8[num_streams, slots, rounds], 1 where the round arrived.
        meta: int64[num_streams, slots, 5]: first rx ns, last rx ns, seq and
            t_fpga of the last round's packet, and the ns it became ready.
        accepted: uint8[max_batch], C-contiguous: after ``add(..., count, ...)``,
            entry ``i < count`` is 1 if packet ``i`` was accepted as a round of
            an open shot (counted in ``rounds_accepted``), else 0; entries from
            ``count`` on are stale.
    """

    def __init__(
        self,
        *,
        bits_per_round: tuple[int, ...],
        num_streams: int = 1,
        window: int = 4,
        timeout_s: float = 0.05,
        max_batch: int = 256,
    ) -> None:
        if not bits_per_round or min(bits_per_round) < 0:
            raise ValueError(
                f"bits_per_round must be non-empty and non-negative; got {bits_per_round}"
            )
        if num_streams < 1 or window < 1 or timeout_s <= 0 or max_batch < 1:
            raise ValueError("num_streams, window, max_batch must be >= 1 and timeout_s > 0")
        r1 = len(bits_per_round)
        # Enough slots that one batch can never wrap onto a shot still open.
        need = max(64, 2 * (max_batch // r1 + 1) + 2 * window)
        self.slots = 1 << (need - 1).bit_length()
        self.window = window
        self.timeout_ns = int(timeout_s * 1e9)
        self.nbits = np.asarray(bits_per_round, dtype=np.int64)
        self.det_off = np.concatenate([[0], np.cumsum(self.nbits)]).astype(np.int64)
        self.num_detectors = int(self.det_off[-1])
        self.rounds = r1
        self.stream_state = np.zeros((num_streams, 2), dtype=np.int64)
        self.stream_state[:, _MAX_SHOT] = -1
        self.seen = np.full((num_streams, _SEEN), -1, dtype=np.int64)
        self.slot_shot = np.full((num_streams, self.slots), -1, dtype=np.int64)
        self.slot_closed = np.full((num_streams, self.slots), -1, dtype=np.int64)
        self.slot_nrecv = np.zeros((num_streams, self.slots), dtype=np.int64)
        self.received = np.zeros((num_streams, self.slots, r1), dtype=np.uint8)
        self.dets = np.zeros((num_streams, self.slots, self.num_detectors), dtype=np.uint8)
        self.meta = np.zeros((num_streams, self.slots, 5), dtype=np.int64)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self._ready = np.zeros((max_batch, 2), dtype=np.int64)
        self.accepted = np.zeros(max_batch, dtype=np.uint8)
        self._expired = np.zeros((num_streams * self.slots, 2), dtype=np.int64)

    def add(self, buf: np.ndarray, lengths: np.ndarray, count: int, now_ns: int) -> np.ndarray:
        """Take ``count`` received packets; returns the shots that became ready.

        Args:
            buf: uint8[>= count, max_packet], C-contiguous, row i holds packet i.
            lengths: uint32[>= count], packet lengths.
            now_ns: host monotonic ns at receipt.

        Returns:
            int64[n_ready, 2] view of (stream, slot) pairs; valid until the next call.
            ``accepted[:count]`` says which packets were rounds taken into a shot.
        """
        if count > self._ready.shape[0]:
            raise ValueError(f"at most {self._ready.shape[0]} packets per add(); got {count}")
        n = assemble(buf, lengths, count, now_ns, *self.assemble_args())
        return self._ready[:n]

    def assemble_args(self) -> tuple[np.ndarray | int, ...]:
        """The state ``assemble(buf, lengths, count, now_ns, *state)`` takes, for compiled
        callers (the service's hot path); it returns how many shots became ready, listed
        in ``ready_buffer[:n]``."""
        return (
            self.nbits, self.det_off, self.stream_state, self.seen, self.slot_shot,
            self.slot_closed, self.slot_nrecv, self.received, self.dets, self.meta,
            self.counters, self._ready, self.accepted, self.window,
        )  # fmt: skip

    @property
    def ready_buffer(self) -> np.ndarray:
        """int64[max_batch, 2]: where ``assemble`` lists the (stream, slot) of ready shots."""
        return self._ready

    def expired(self, now_ns: int, *, flush: bool = False) -> np.ndarray:
        """Open shots that can no longer complete (or all open shots if ``flush``).

        Returns:
            int64[n, 2] view of (stream, slot) pairs; close each with ``close``.
        """
        n = _find_expired(
            now_ns,
            self.timeout_ns,
            self.window,
            flush,
            self.stream_state,
            self.slot_shot,
            self.slot_nrecv,
            self.meta,
            self.rounds,
            self._expired,
        )
        return self._expired[:n]

    def shot(self, stream: int, slot: int) -> int:
        return int(self.slot_shot[stream, slot])

    def close(self, stream: int, slot: int) -> None:
        """Free a slot after its shot was decoded or reported incomplete."""
        self.slot_closed[stream, slot] = self.slot_shot[stream, slot]
        self.slot_shot[stream, slot] = -1

    @property
    def end_of_stream_seen(self) -> bool:
        return bool(self.counters[EOS])

    @property
    def open_shots(self) -> int:
        return int(np.count_nonzero(self.slot_shot >= 0))

    def counts(self) -> dict[str, int]:
        """Every counter by name: the Reason labels plus the assembler's own."""
        out = {r.label: int(self.counters[r.value]) for r in Reason if r != Reason.OK}
        out.update(
            packets=int(self.counters[PACKETS]),
            rounds_accepted=int(self.counters[ROUNDS_ACCEPTED]),
            reordered=int(self.counters[REORDERED]),
            packets_missing=int(self.counters[PACKETS_MISSING]),
            end_of_stream=int(self.counters[EOS]),
        )
        return out


@njit_cached(nogil=True)
def _find_expired(
    now, timeout_ns, window, flush, stream_state, slot_shot, slot_nrecv, meta, r1, out
):  # type: ignore[no-untyped-def]
    n_streams, n_slots = slot_shot.shape
    n = 0
    for st in range(n_streams):
        newest = stream_state[st, _MAX_SHOT]
        for s in range(n_slots):
            shot = slot_shot[st, s]
            if shot < 0 or slot_nrecv[st, s] == r1:
                continue
            if flush or shot <= newest - window or now - meta[st, s, _FIRST_RX] > timeout_ns:
                out[n, 0] = st
                out[n, 1] = s
                n += 1
    return n
