"""Thread 0's part of the streaming kernel: frame, judge, open, record, count.

Each function is an ``inline_device`` step of ``_kernel.streaming_kernel`` that only
thread 0 runs. Its state across packets lives in ``st``, an int64[ST_LEN] local array
indexed by the ``ST_*`` names; what it tells the block goes through the shared int64
scalars ``sh[S_*]``. Every packet taken is counted in ``cnt`` (shared
int64[N_COUNTERS]) under a ``C_*`` index or its ``Reason``.
"""

from __future__ import annotations

import numpy as np
from numba import types

from qhil.bridge import (
    CRC_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    FLAGS_AT,
    H_CORRECTIONS,
    H_ROUNDS,
    H_SEQ,
    H_SHOT,
    H_STATUS,
    H_STREAM,
    H_T_FPGA,
    MAGIC_AT,
    SYN_N_BITS_AT,
    SYN_PAYLOAD_AT,
    SYN_ROUND_AT,
    SYN_SEQ_AT,
    SYN_SHOT_AT,
    SYN_STREAM_AT,
    SYN_T_FPGA_AT,
    SYNDROME_MAGIC,
    VERSION_AT,
    W_COUNTERS,
    WIRE_VERSION,
    Reason,
)
from qhil.kernels.persistent._device import flag_store, inline_device

__all__ = ["COUNTER_NAMES", "N_COUNTERS", "judge", "open_shot", "write_record"]

# Counter block: Reason codes index their own rejections (SEQ_GAP counts gap events, not
# packets); index 0 (Reason.OK) counts rounds accepted; the rest follow.
C_ROUNDS = int(Reason.OK)
C_PACKETS, C_EOS, C_MISSING, C_DECODED, C_INCOMPLETE, C_SHUTDOWN_DROPPED = 16, 17, 18, 19, 20, 21
N_COUNTERS = 22
COUNTER_NAMES: dict[int, str] = {
    **{int(r): r.label for r in Reason if r not in (Reason.OK, Reason.UNKNOWN_SHOT)},
    C_ROUNDS: "rounds_accepted",
    C_PACKETS: "packets",
    C_EOS: "end_of_stream",
    C_MISSING: "packets_missing",
    C_DECODED: "shots_decoded",
    C_INCOMPLETE: "shots_incomplete",
    C_SHUTDOWN_DROPPED: "dropped_at_shutdown",
}
"""Counter index -> name (``Reason`` labels for the rejections)."""

# Thread 0's state: the open shot (-1: none), its next round, rounds taken, and the seq
# and t_fpga of its last packet; its output slot; the stream's last shot opened and next
# seq; records emitted (m); the packet being judged; the heartbeat; the kernel's stream.
(ST_CUR_SHOT, ST_CUR_NEXT, ST_CUR_ROUNDS, ST_CUR_SEQ, ST_CUR_TF, ST_OSLOT, ST_LAST_SHOT,
 ST_NEXT_SEQ, ST_M, ST_P_SHOT, ST_P_SEQ, ST_P_TF, ST_BEAT, ST_STREAM,
 ST_LEN) = range(15)  # fmt: skip
# Thread 0's decision, as bits: abandon the open shot, open a new one, stream this round.
A_ABANDON, A_OPEN, A_ACCEPT = 1, 2, 4
# Shared int64 scalars thread 0 broadcasts to the block.
S_GO, S_LEN, S_REASON, S_SIZE, S_ACT, S_ROUND, S_OSLOT, S_NCORR, S_LEN_ALL = range(9)

# Plain ints: Numba freezes module globals as compile-time constants.
_TRUNCATED, _BAD_MAGIC = int(Reason.TRUNCATED), int(Reason.BAD_MAGIC)
_BAD_VERSION, _BAD_CRC = int(Reason.BAD_VERSION), int(Reason.BAD_CRC)
_BAD_LENGTH, _BAD_FIELD = int(Reason.BAD_LENGTH), int(Reason.BAD_FIELD)
_SEQ_GAP, _DUPLICATE, _STALE = int(Reason.SEQ_GAP), int(Reason.DUPLICATE), int(Reason.STALE)
_UNKNOWN_STREAM = int(Reason.UNKNOWN_STREAM)
_MAGIC = tuple(SYNDROME_MAGIC)
_I64 = types.int64
_PAIR = types.UniTuple(types.int64, 2)
_TRIPLE = types.UniTuple(types.int64, 3)


@inline_device(_I64)
def le_field(pkt, at, n):  # type: ignore[no-untyped-def]
    """The ``n``-byte little-endian field at byte ``at`` (u64 >= 2**63 reads negative)."""
    v = np.int64(0)
    for b in range(n):
        v |= np.int64(pkt[at + b]) << (8 * b)
    return v


@inline_device(_PAIR)
def frame_reason(pkt, ln, reason):  # type: ignore[no-untyped-def]
    """Thread 0: the frame checks ``parse_syndrome`` makes before the CRC.

    Returns ``(reason, size)``: 0 and the packet's size, or the first rejection.
    """
    size = np.int64(0)
    if reason != 0:
        return np.int64(reason), size
    if ln < FLAGS_AT + 1:
        return np.int64(_TRUNCATED), size
    for b in range(4):
        if pkt[MAGIC_AT + b] != _MAGIC[b]:
            return np.int64(_BAD_MAGIC), size
    if pkt[VERSION_AT] != WIRE_VERSION:
        return np.int64(_BAD_VERSION), size
    if ln < SYN_PAYLOAD_AT + CRC_SIZE:
        return np.int64(_TRUNCATED), size
    size = SYN_PAYLOAD_AT + (le_field(pkt, SYN_N_BITS_AT, 2) + 7) // 8 + CRC_SIZE
    if ln < size:
        return np.int64(_TRUNCATED), size
    if ln > size:
        return np.int64(_BAD_LENGTH), size  # trailing bytes
    return np.int64(0), size


@inline_device(_I64)
def crc_share(pkt, crc_tab, nb, tid, nth):  # type: ignore[no-untyped-def]
    """This thread's XOR share of the CRC-32 of ``pkt[:nb]`` (one table row per byte)."""
    c = np.int64(0)
    for i in range(tid, nb, nth):
        c ^= np.int64(crc_tab[nb - 1 - i, pkt[i]])
    return c


@inline_device(_I64)
def judge_round(st, cnt, flags, p_rnd, p_bits, n_bits, t_n):  # type: ignore[no-untyped-def]
    """Thread 0: the actions (``A_*`` bits) for an in-order packet of this stream, after
    its seq was taken, or a rejection reason as ``-reason``."""
    first = (flags & FLAG_FIRST_ROUND) != 0
    last = (flags & FLAG_LAST_ROUND) != 0
    cur, p_shot = st[ST_CUR_SHOT], st[ST_P_SHOT]
    if flags & FLAG_END_OF_STREAM:
        cnt[C_EOS] += 1
        return np.int64(A_ABANDON if cur >= 0 else 0)
    if p_rnd >= t_n or p_bits != n_bits[p_rnd]:
        return np.int64(-_BAD_LENGTH)  # not this layout's round
    if first != (p_rnd == 0) or last != (p_rnd == t_n - 1):
        return np.int64(-_BAD_FIELD)
    if cur >= 0 and p_shot == cur:
        if p_rnd == st[ST_CUR_NEXT]:
            return np.int64(A_ACCEPT)
        if p_rnd < st[ST_CUR_NEXT]:
            return np.int64(-_DUPLICATE)  # a round already taken, under a new seq
        cnt[_STALE] += 1  # rounds lost: it cannot finish
        return np.int64(A_ABANDON)
    if p_shot <= st[ST_LAST_SHOT]:
        return np.int64(-_STALE)  # its shot was opened (or skipped) already
    st[ST_LAST_SHOT] = p_shot
    acts = np.int64(A_ABANDON if cur >= 0 else 0)
    if p_rnd == 0:
        return acts | A_OPEN | A_ACCEPT
    cnt[_STALE] += 1  # its first rounds never came
    return acts


@inline_device(_PAIR)
def judge(pkt, st, cnt, n_bits, size, crc, crc_zero, t_n):  # type: ignore[no-untyped-def]
    """Thread 0: judge a framed packet (``size`` bytes, block CRC ``crc``) against the
    stream and the open shot; count a rejection. Returns ``(actions, round)``."""
    nb = size - CRC_SIZE
    if (crc ^ np.int64(crc_zero[nb])) != le_field(pkt, nb, CRC_SIZE):
        cnt[_BAD_CRC] += 1
        return np.int64(0), np.int64(0)
    p_rnd = le_field(pkt, SYN_ROUND_AT, 4)
    st[ST_P_SHOT] = le_field(pkt, SYN_SHOT_AT, 8)
    st[ST_P_SEQ] = p_seq = le_field(pkt, SYN_SEQ_AT, 8)
    st[ST_P_TF] = le_field(pkt, SYN_T_FPGA_AT, 8)
    next_seq = st[ST_NEXT_SEQ]
    reason = 0
    if p_seq < 0 or st[ST_P_SHOT] < 0:
        reason = _BAD_FIELD
    elif le_field(pkt, SYN_STREAM_AT, 4) != st[ST_STREAM]:
        reason = _UNKNOWN_STREAM
    elif p_seq < next_seq:
        reason = _DUPLICATE if p_seq == next_seq - 1 else _STALE
    if reason != 0:
        cnt[reason] += 1
        return np.int64(0), p_rnd
    if p_seq > next_seq:
        cnt[_SEQ_GAP] += 1  # an event; this packet is still judged below
        cnt[C_MISSING] += p_seq - next_seq
    st[ST_NEXT_SEQ] = p_seq + 1
    p_bits = le_field(pkt, SYN_N_BITS_AT, 2)
    acts = judge_round(st, cnt, np.int64(pkt[FLAGS_AT]), p_rnd, p_bits, n_bits, t_n)
    if acts < 0:
        cnt[-acts] += 1
        return np.int64(0), p_rnd
    return acts, p_rnd


@inline_device(_I64)
def write_record(out_hdr, out_obs, st, obs_acc, status, ncorr, with_obs, stream_id):  # type: ignore[no-untyped-def]
    """Thread 0: write the open shot's record (``status``, ``ncorr`` corrections, and
    ``obs_acc`` as its ``pre_L`` if ``with_obs``, else zeros) into its output slot.
    Publish it with ``publish_record`` after a system fence. Returns the slot."""
    oslot = st[ST_OSLOT]
    out_hdr[oslot, H_STREAM], out_hdr[oslot, H_SHOT] = stream_id, st[ST_CUR_SHOT]
    out_hdr[oslot, H_SEQ], out_hdr[oslot, H_CORRECTIONS] = st[ST_CUR_SEQ], ncorr
    out_hdr[oslot, H_STATUS], out_hdr[oslot, H_T_FPGA] = status, st[ST_CUR_TF]
    out_hdr[oslot, H_ROUNDS] = st[ST_CUR_ROUNDS]
    for o in range(out_obs.shape[1]):
        out_obs[oslot, o] = obs_acc[o] if with_obs else 0
    return oslot


@inline_device(_I64)
def publish_record(out_seq, st):  # type: ignore[no-untyped-def]
    """Thread 0, after the fence: publish the open shot's record (release, system scope)
    and close the shot."""
    flag_store(out_seq, st[ST_OSLOT], st[ST_M] + 1)
    st[ST_M] += 1
    st[ST_CUR_SHOT] = -1
    return np.int64(0)


@inline_device(_I64)
def start_state(st, cnt, stream_id):  # type: ignore[no-untyped-def]
    """Thread 0: the kernel's stream; no shot open, nothing seen, every counter 0."""
    for i in range(ST_LEN):
        st[i] = 0
    st[ST_CUR_SHOT], st[ST_LAST_SHOT], st[ST_STREAM] = -1, -1, stream_id
    for i in range(N_COUNTERS):
        cnt[i] = 0
    return np.int64(0)


@inline_device(_I64)
def open_shot(st, sh, obs_acc, cnt, status, n_slots):  # type: ignore[no-untyped-def]
    """Thread 0, once output slot ``m`` is free (``status`` 1) or at shutdown (-1): open
    the judged packet's shot in that slot, or count the packet as dropped at shutdown."""
    sh[S_GO] = status
    if status < 0:  # taken, but its shot never opened: counted, as every packet is
        cnt[C_SHUTDOWN_DROPPED] += 1
        cnt[C_PACKETS] += 1
        return np.int64(0)
    oslot = st[ST_M] & (n_slots - 1)
    st[ST_OSLOT] = oslot
    sh[S_OSLOT], sh[S_NCORR] = oslot, 0
    for o in range(obs_acc.shape[0]):
        obs_acc[o] = 0
    st[ST_CUR_SHOT], st[ST_CUR_NEXT], st[ST_CUR_ROUNDS] = st[ST_P_SHOT], 0, 0
    return np.int64(0)


@inline_device(_I64)
def took_round(st, cnt, t):  # type: ignore[no-untyped-def]
    """Thread 0: round ``t`` of the open shot was streamed."""
    cnt[C_ROUNDS] += 1
    st[ST_CUR_NEXT], st[ST_CUR_ROUNDS] = t + 1, st[ST_CUR_ROUNDS] + 1
    st[ST_CUR_SEQ], st[ST_CUR_TF] = st[ST_P_SEQ], st[ST_P_TF]
    return np.int64(0)


@inline_device(_I64)
def store_counters(ctrl, cnt):  # type: ignore[no-untyped-def]
    """Thread 0: the counter block into ``ctrl``; ``C_PACKETS`` last, with release, so
    the others are at least as new as it when the host reads it."""
    for i in range(N_COUNTERS):
        if i != C_PACKETS:
            ctrl[W_COUNTERS + i] = np.uint64(cnt[i])
    flag_store(ctrl, W_COUNTERS + C_PACKETS, cnt[C_PACKETS])
    return np.int64(0)
