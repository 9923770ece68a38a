from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    Reason,
    SyndromePacket,
)
from qhil.host import ShotAssembler

BITS = (3, 10, 3)  # three rounds; the middle one spans two payload bytes
WIDTH = 128
REJECTIONS = [r.label for r in Reason if r not in (Reason.OK, Reason.SEQ_GAP)]


def _flags(rnd: int, rounds: int = len(BITS)) -> int:
    return (FLAG_FIRST_ROUND if rnd == 0 else 0) | (FLAG_LAST_ROUND if rnd == rounds - 1 else 0)


def _bits(shot: int, rnd: int, n: int) -> np.ndarray:
    return np.random.default_rng(1000 * shot + rnd).integers(0, 2, n).astype(np.bool_)


def pkt(
    shot: int,
    rnd: int,
    seq: int,
    *,
    stream: int = 0,
    n_bits: int | None = None,
    flags: int | None = None,
    t_fpga: int | None = None,
) -> bytes:
    n = BITS[rnd] if n_bits is None else n_bits
    return SyndromePacket(
        stream_id=stream,
        shot=shot,
        round=rnd,
        seq=seq,
        t_fpga=1000 + seq if t_fpga is None else t_fpga,
        bits=_bits(shot, rnd, n),
        flags=_flags(rnd) if flags is None else flags,
    ).encode()


def eos(seq: int, stream: int = 0) -> bytes:
    return SyndromePacket(
        stream_id=stream, shot=0, round=0, seq=seq, t_fpga=0, bits=[], flags=FLAG_END_OF_STREAM
    ).encode()


def shot_packets(shot: int, first_seq: int, stream: int = 0) -> list[bytes]:
    return [pkt(shot, r, first_seq + r, stream=stream) for r in range(len(BITS))]


def feed(asm: ShotAssembler, packets: list[bytes], now: int = 0) -> list[tuple[int, int]]:
    """Add packets in one batch; the (stream, slot) pairs that became ready."""
    buf = np.zeros((max(1, len(packets)), WIDTH), dtype=np.uint8)
    lengths = np.zeros(len(buf), dtype=np.uint32)
    for i, p in enumerate(packets):
        buf[i, : len(p)] = np.frombuffer(p, dtype=np.uint8)
        lengths[i] = len(p)
    return [(int(a), int(b)) for a, b in asm.add(buf, lengths, len(packets), now)]


def make(**kwargs: object) -> ShotAssembler:
    kwargs.setdefault("bits_per_round", BITS)
    return ShotAssembler(**kwargs)  # type: ignore[arg-type]


def balanced(asm: ShotAssembler) -> bool:
    c = asm.counts()
    return c["packets"] == c["rounds_accepted"] + c["end_of_stream"] + sum(c[r] for r in REJECTIONS)


def nonzero(asm: ShotAssembler) -> dict[str, int]:
    return {k: v for k, v in asm.counts().items() if v}


def expected_dets(shot: int) -> np.ndarray:
    return np.concatenate([_bits(shot, r, n) for r, n in enumerate(BITS)]).astype(np.uint8)


# -- construction ----------------------------------------------------------------------------


def test_geometry() -> None:
    asm = make(num_streams=2, window=4)
    assert asm.rounds == 3
    assert asm.num_detectors == 16
    assert asm.det_off.tolist() == [0, 3, 13, 16]
    assert asm.slots & (asm.slots - 1) == 0 and asm.slots >= 64
    assert asm.dets.shape == (2, asm.slots, 16)
    assert asm.received.shape == (2, asm.slots, 3)
    assert asm.open_shots == 0
    assert not asm.end_of_stream_seen
    assert set(asm.counts().values()) == {0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits_per_round": ()},
        {"bits_per_round": (3, -1)},
        {"num_streams": 0},
        {"window": 0},
        {"timeout_s": 0.0},
        {"max_batch": 0},
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make(**kwargs)


def test_rejects_batches_over_max_batch() -> None:
    asm = make(max_batch=4)
    with pytest.raises(ValueError, match="at most 4 packets per add"):
        feed(asm, shot_packets(0, 0) + shot_packets(1, 3))


# -- the happy path --------------------------------------------------------------------------


def test_complete_shot_is_ready_with_its_events_and_metadata() -> None:
    asm = make()
    packets = shot_packets(5, 0)
    assert feed(asm, packets[:2], now=100) == []
    assert asm.open_shots == 1
    ready = feed(asm, packets[2:], now=250)
    slot = 5 % asm.slots
    assert ready == [(0, slot)]
    assert asm.shot(0, slot) == 5
    np.testing.assert_array_equal(asm.dets[0, slot], expected_dets(5))
    assert asm.received[0, slot].tolist() == [1, 1, 1]
    first_rx, last_rx, last_seq, last_tfpga, done = asm.meta[0, slot].tolist()
    assert (first_rx, last_rx, last_seq, last_tfpga, done) == (100, 250, 2, 1002, 250)
    assert nonzero(asm) == {"packets": 3, "rounds_accepted": 3}
    assert len(asm.expired(10**12)) == 0, "a complete shot never expires"
    asm.close(0, slot)
    assert asm.open_shots == 0
    assert asm.shot(0, slot) == -1
    assert balanced(asm)


def test_many_shots_in_one_batch() -> None:
    asm = make()
    packets = [p for s in range(20) for p in shot_packets(s, 3 * s)]
    ready = feed(asm, packets)
    assert [asm.shot(st, sl) for st, sl in ready] == list(range(20))
    for st, sl in ready:
        np.testing.assert_array_equal(asm.dets[st, sl], expected_dets(asm.shot(st, sl)))
    assert nonzero(asm) == {"packets": 60, "rounds_accepted": 60}


def test_slots_are_reused_after_close() -> None:
    asm = make()
    seq = 0
    for shot in range(3 * asm.slots):
        ready = feed(asm, shot_packets(shot, seq))
        seq += 3
        assert len(ready) == 1
        st, sl = ready[0]
        assert asm.shot(st, sl) == shot
        asm.close(st, sl)
    assert asm.counts()["rounds_accepted"] == 9 * asm.slots
    assert balanced(asm)


def test_streams_are_independent() -> None:
    asm = make(num_streams=2)
    ready = feed(asm, shot_packets(0, 0, stream=1) + shot_packets(0, 0, stream=0))
    assert sorted(ready) == [(0, 0), (1, 0)]
    assert nonzero(asm) == {"packets": 6, "rounds_accepted": 6}


# -- sequence tracking -----------------------------------------------------------------------


def test_duplicate_seq_is_rejected() -> None:
    asm = make()
    p = pkt(0, 0, 0)
    feed(asm, [p, p])
    feed(asm, [p])
    assert nonzero(asm) == {"packets": 3, "rounds_accepted": 1, "duplicate": 2}
    assert balanced(asm)


def test_same_round_under_a_new_seq_is_a_duplicate() -> None:
    asm = make()
    feed(asm, [pkt(0, 0, 0), pkt(0, 0, 1)])
    assert nonzero(asm) == {"packets": 2, "rounds_accepted": 1, "duplicate": 1}


def test_gap_is_counted_once_with_the_packets_missing() -> None:
    asm = make()
    feed(asm, [pkt(0, 0, 0), pkt(0, 1, 4), pkt(0, 2, 5)])
    c = asm.counts()
    assert c["seq_gap"] == 1
    assert c["packets_missing"] == 3
    assert c["rounds_accepted"] == 3, "a gap is reported, the packet after it is still taken"
    feed(asm, [pkt(1, 0, 9)])
    c = asm.counts()
    assert (c["seq_gap"], c["packets_missing"]) == (2, 6)
    assert balanced(asm)


def test_late_packets_after_a_gap_are_reordered_and_accepted() -> None:
    asm = make()
    a, b, c = shot_packets(0, 0)
    assert feed(asm, [c, a]) == []
    ready = feed(asm, [b])
    assert ready == [(0, 0)]
    np.testing.assert_array_equal(asm.dets[0, 0], expected_dets(0))
    assert nonzero(asm) == {
        "packets": 3,
        "rounds_accepted": 3,
        "seq_gap": 1,
        "packets_missing": 2,
        "reordered": 2,
    }
    assert asm.meta[0, 0, 2] == 2, "the last round's seq is kept, whatever the arrival order"


def test_reordered_rounds_within_a_shot_are_assembled() -> None:
    asm = make()
    a, b, c = shot_packets(7, 0)
    assert feed(asm, [b]) == []
    assert feed(asm, [a]) == []
    assert feed(asm, [c]) == [(0, 7)]
    np.testing.assert_array_equal(asm.dets[0, 7], expected_dets(7))
    assert asm.counts()["reordered"] == 1


# -- layout and field checks ------------------------------------------------------------------


@pytest.mark.parametrize("n_bits", [0, 2, 4, 11])
def test_wrong_n_bits_is_bad_length(n_bits: int) -> None:
    asm = make()
    feed(asm, [pkt(0, 1, 0, n_bits=n_bits)])
    assert nonzero(asm) == {"packets": 1, "bad_length": 1}
    assert asm.open_shots == 0


def test_round_beyond_the_layout_is_bad_length() -> None:
    asm = make()
    beyond = SyndromePacket(stream_id=0, shot=0, round=3, seq=0, t_fpga=0, bits=[0] * 3).encode()
    feed(asm, [beyond])
    assert nonzero(asm) == {"packets": 1, "bad_length": 1}


@pytest.mark.parametrize(
    ("rnd", "flags"),
    [
        (0, 0),  # first round without FIRST_ROUND
        (1, FLAG_FIRST_ROUND),
        (1, FLAG_LAST_ROUND),
        (2, 0),  # last round without LAST_ROUND
        (2, FLAG_FIRST_ROUND | FLAG_LAST_ROUND),
    ],
)
def test_flags_disagreeing_with_the_round_are_bad_field(rnd: int, flags: int) -> None:
    asm = make()
    feed(asm, [pkt(0, rnd, 0, flags=flags)])
    assert nonzero(asm) == {"packets": 1, "bad_field": 1}
    assert asm.open_shots == 0


def test_single_round_shots_need_both_flags() -> None:
    asm = ShotAssembler(bits_per_round=(3,))
    both = FLAG_FIRST_ROUND | FLAG_LAST_ROUND
    p = SyndromePacket(stream_id=0, shot=0, round=0, seq=0, t_fpga=0, bits=[1, 0, 1], flags=both)
    q = SyndromePacket(stream_id=0, shot=1, round=0, seq=1, t_fpga=0, bits=[1, 0, 1], flags=1)
    ready = feed(asm, [p.encode(), q.encode()])
    assert [asm.shot(*r) for r in ready] == [0]
    assert asm.counts()["bad_field"] == 1


@pytest.mark.parametrize(("shot", "seq"), [(0, 2**64 - 1), (0, 2**63), (2**63, 0), (2**64 - 1, 5)])
def test_seq_or_shot_at_or_above_2_63_is_bad_field(shot: int, seq: int) -> None:
    # 2**64 - 1 used to alias the empty marker of the duplicate table and read as a duplicate.
    asm = make()
    feed(asm, [pkt(shot, 0, seq, t_fpga=0)])
    assert nonzero(asm) == {"packets": 1, "bad_field": 1}
    assert balanced(asm)


def test_unknown_stream() -> None:
    asm = make(num_streams=2)
    feed(asm, [pkt(0, 0, 0, stream=2), pkt(0, 0, 0, stream=2**32 - 1)])
    assert nonzero(asm) == {"packets": 2, "unknown_stream": 2}


# -- stale, expiry, flush ---------------------------------------------------------------------


def test_packet_for_a_closed_shot_is_stale() -> None:
    asm = make()
    ((st, sl),) = feed(asm, shot_packets(0, 0))
    asm.close(st, sl)
    feed(asm, [pkt(0, 1, 3)])  # a retransmission under a new seq
    assert nonzero(asm) == {"packets": 4, "rounds_accepted": 3, "stale": 1}
    assert asm.open_shots == 0


def test_packet_for_a_shot_behind_the_window_is_stale() -> None:
    asm = make(window=4)
    feed(asm, [pkt(10, 0, 0)])
    feed(asm, [pkt(6, 0, 1), pkt(7, 0, 2)])
    c = asm.counts()
    assert c["stale"] == 1, "shot 6 is window=4 behind shot 10"
    assert c["rounds_accepted"] == 2
    assert asm.open_shots == 2


def test_packet_for_an_occupied_slot_is_stale() -> None:
    asm = make()
    feed(asm, [pkt(0, 0, 0), pkt(asm.slots, 0, 1)])
    assert asm.counts()["stale"] == 1
    assert asm.shot(0, 0) == 0


def test_a_far_future_shot_or_seq_cannot_poison_the_stream() -> None:
    asm = make()
    feed(asm, shot_packets(0, 0))
    feed(asm, [pkt(2**40, 0, 3), pkt(1, 0, 2**40)])  # one CRC-valid hostile packet each
    assert len(feed(asm, shot_packets(1, 3))) == 1, "later rounds are still taken"
    c = nonzero(asm)
    assert c["stale"] == 1 and c["bad_field"] == 1 and "seq_gap" not in c
    assert c["rounds_accepted"] == 6 and balanced(asm)


def test_window_expiry() -> None:
    asm = make(window=4, timeout_s=10.0)
    feed(asm, [pkt(0, 0, 0), pkt(1, 0, 1)])
    feed(asm, [pkt(3, 0, 2)])
    assert len(asm.expired(0)) == 0
    feed(asm, [pkt(4, 0, 3)])
    assert [asm.shot(*e) for e in asm.expired(0)] == [0]
    feed(asm, [pkt(5, 0, 4)])
    expired = asm.expired(0)
    assert [asm.shot(*e) for e in expired] == [0, 1]
    for st, sl in expired.copy():
        asm.close(st, sl)
    assert len(asm.expired(0)) == 0
    assert asm.open_shots == 3


def test_timeout_expiry() -> None:
    asm = make(timeout_s=0.001)  # 1_000_000 ns
    feed(asm, [pkt(0, 0, 0)], now=5_000_000)
    feed(asm, [pkt(1, 0, 1)], now=5_500_000)
    assert len(asm.expired(6_000_000)) == 0, "exactly at the timeout is not yet expired"
    assert [asm.shot(*e) for e in asm.expired(6_000_001)] == [0]
    assert [asm.shot(*e) for e in asm.expired(6_500_001)] == [0, 1]
    assert asm.received[0, 0].tolist() == [1, 0, 0]


def test_timeout_counts_from_the_first_round() -> None:
    asm = make(timeout_s=0.001)
    feed(asm, [pkt(0, 0, 0)], now=0)
    feed(asm, [pkt(0, 1, 1)], now=900_000)
    assert [asm.shot(*e) for e in asm.expired(1_000_001)] == [0]


def test_flush_returns_every_open_incomplete_shot() -> None:
    asm = make(timeout_s=10.0)
    ready = feed(asm, [pkt(0, 0, 0), pkt(1, 1, 1), *shot_packets(2, 2)])
    assert [asm.shot(*r) for r in ready] == [2]
    assert len(asm.expired(0)) == 0
    flushed = asm.expired(0, flush=True)
    assert sorted(asm.shot(*e) for e in flushed) == [0, 1]
    assert asm.received[0, 1].tolist() == [0, 1, 0]


def test_end_of_stream_is_counted_and_consumes_a_seq() -> None:
    asm = make()
    feed(asm, [*shot_packets(0, 0), eos(3)])
    assert asm.end_of_stream_seen
    assert nonzero(asm) == {"packets": 4, "rounds_accepted": 3, "end_of_stream": 1}
    feed(asm, [eos(3)])
    assert asm.counts()["duplicate"] == 1
    assert asm.counts()["end_of_stream"] == 1


# -- malformed bytes --------------------------------------------------------------------------


def _mutate(data: bytes, offset: int, value: int) -> bytes:
    b = bytearray(data)
    b[offset] = value
    return bytes(b)


def test_malformed_packets_are_counted_by_reason() -> None:
    good = pkt(0, 1, 0)
    cases = {
        "bad_magic": _mutate(good, 0, ord("X")),
        "bad_version": _mutate(good, 4, 2),
        "bad_crc": _mutate(good, 41, good[41] ^ 0x10),
        "truncated": good[:-1],
    }
    asm = make()
    feed(asm, [*cases.values(), good[:3], good + b"\0"])
    c = asm.counts()
    assert c["bad_magic"] == 1
    assert c["bad_version"] == 1
    assert c["bad_crc"] == 1
    assert c["truncated"] == 2
    assert c["bad_length"] == 1  # trailing bytes
    assert c["rounds_accepted"] == 0
    assert c["packets"] == 6
    assert asm.open_shots == 0
    feed(asm, [good])
    assert asm.counts()["rounds_accepted"] == 1, "rejected bytes never mark a seq as seen"
    assert balanced(asm)


def test_a_correction_packet_is_bad_magic() -> None:
    from qhil.bridge import CorrectionPacket

    asm = make()
    feed(asm, [CorrectionPacket(stream_id=0, shot=0, seq=0, t_fpga=0, obs=[1]).encode()])
    assert nonzero(asm) == {"packets": 1, "bad_magic": 1}


def test_every_packet_is_counted_exactly_once() -> None:
    asm = make(num_streams=2, window=4)
    good = [p for s in range(6) for p in shot_packets(s, 3 * s)]
    packets = [
        *good[:5],
        good[2],  # duplicate
        pkt(9, 1, 40, n_bits=2),  # bad length
        pkt(9, 0, 41, flags=0),  # bad field
        pkt(0, 0, 0, stream=7),  # unknown stream
        good[6][:-2],  # truncated
        _mutate(good[7], 0, 0),  # bad magic
        *good[5:],
        eos(60),
    ]
    ready = feed(asm, packets)
    for st, sl in ready:
        asm.close(st, sl)
    feed(asm, [pkt(0, 2, 61)])  # stale
    c = asm.counts()
    assert c["packets"] == len(packets) + 1
    assert c["stale"] == 1
    assert balanced(asm)


def test_accepted_marks_exactly_the_rounds_taken_into_shots() -> None:
    asm = make(window=2)
    a, b = shot_packets(0, 0), shot_packets(1, 3)
    packets = [
        a[1],  # round 1 first: accepted (rounds may arrive in any order)
        a[1],  # duplicate seq
        a[0],
        pkt(0, 0, 20),  # the same round under a new seq: duplicate
        b[0][:-1],  # truncated
        eos(21),
        a[2],  # completes shot 0
        pkt(9, 0, 22, n_bits=2),  # bad length
        b[1],
    ]
    assert feed(asm, packets) == [(0, 0)]
    assert asm.accepted[: len(packets)].tolist() == [1, 0, 1, 0, 0, 0, 1, 0, 1]
    asm.close(0, 0)
    # the flags are rewritten per batch: a later, shorter batch leaves only its own
    assert feed(asm, [a[2], b[2]]) == []
    assert asm.accepted[:2].tolist() == [0, 1]  # a repeat (duplicate); shot 1 takes round 2
    assert asm.accepted.dtype == np.uint8 and asm.accepted.shape == (256,)
    assert balanced(asm)


# -- property: arbitrary damage never crashes and always balances ----------------------------


def _stream(shots: int) -> list[bytes]:
    out = [p for s in range(shots) for p in shot_packets(s, 3 * s)]
    return [*out, eos(3 * shots)]


_op = hst.one_of(
    hst.tuples(hst.just("drop"), hst.integers(0, 10**6)),
    hst.tuples(hst.just("dup"), hst.integers(0, 10**6)),
    hst.tuples(hst.just("swap"), hst.integers(0, 10**6), hst.integers(0, 10**6)),
    hst.tuples(
        hst.just("flip"), hst.integers(0, 10**6), hst.integers(0, 10**6), hst.integers(1, 255)
    ),
    hst.tuples(hst.just("cut"), hst.integers(0, 10**6), hst.integers(0, 10**6)),
    hst.tuples(
        hst.just("forge"),
        hst.integers(0, 10**6),
        hst.integers(0, 3),  # stream
        hst.integers(0, 2**64 - 1),  # shot
        hst.integers(0, 5),  # round
        hst.integers(0, 2**64 - 1),  # seq
        hst.integers(0, 12),  # n_bits
        hst.integers(0, 255),  # flags
    ),
)


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(ops=hst.lists(_op, max_size=25), shots=hst.integers(1, 12), batch=hst.integers(1, 16))
def test_damaged_streams_never_crash_and_balance(
    ops: list[tuple[object, ...]], shots: int, batch: int
) -> None:
    packets = _stream(shots)
    for op in ops:
        if not packets:
            break
        kind, i = op[0], int(op[1]) % len(packets)  # type: ignore[call-overload]
        if kind == "drop":
            del packets[i]
        elif kind == "dup":
            packets.insert(i, packets[i])
        elif kind == "swap":
            j = int(op[2]) % len(packets)  # type: ignore[call-overload]
            packets[i], packets[j] = packets[j], packets[i]
        elif kind == "flip" and packets[i]:  # an earlier cut may have emptied it
            p = bytearray(packets[i])
            p[int(op[2]) % len(p)] ^= int(op[3])  # type: ignore[call-overload]
            packets[i] = bytes(p)
        elif kind == "cut" and packets[i]:
            packets[i] = packets[i][: int(op[2]) % len(packets[i])]  # type: ignore[call-overload]
        elif kind == "forge":
            _, _, stream, shot, rnd, seq, n_bits, flags = op
            packets.insert(
                i,
                SyndromePacket(
                    stream_id=stream,  # type: ignore[arg-type]
                    shot=shot,  # type: ignore[arg-type]
                    round=rnd,  # type: ignore[arg-type]
                    seq=seq,  # type: ignore[arg-type]
                    t_fpga=0,
                    bits=np.ones(n_bits, np.bool_),  # type: ignore[call-overload]
                    flags=flags,  # type: ignore[arg-type]
                ).encode(),
            )
    asm = make(num_streams=2, window=3, timeout_s=1e-6)
    seen_ready: list[int] = []
    now = n_accepted = 0
    for k in range(0, len(packets), batch):
        now += 1000
        before = asm.counts()["rounds_accepted"]
        ready = feed(asm, packets[k : k + batch], now=now)
        got = int(asm.accepted[: len(packets[k : k + batch])].sum())
        assert got == asm.counts()["rounds_accepted"] - before  # one flag per accepted round
        n_accepted += got
        for st, sl in ready:
            assert asm.received[st, sl].all()
            seen_ready.append(asm.shot(st, sl))
            asm.close(st, sl)
        for st, sl in asm.expired(now).copy():
            assert not asm.received[st, sl].all()
            asm.close(st, sl)
    for st, sl in asm.expired(now, flush=True).copy():
        asm.close(st, sl)
    assert asm.open_shots == 0
    c = asm.counts()
    assert c["packets"] == len(packets)
    assert balanced(asm), c
    assert all(v >= 0 for v in c.values())
    assert c["rounds_accepted"] >= 3 * len(seen_ready)
    assert n_accepted == c["rounds_accepted"]


def test_an_undamaged_stream_assembles_every_shot() -> None:
    asm = make()
    ready: list[int] = []
    packets = _stream(40)
    for k in range(0, len(packets), 7):
        for st, sl in feed(asm, packets[k : k + 7]):
            np.testing.assert_array_equal(asm.dets[st, sl], expected_dets(asm.shot(st, sl)))
            ready.append(asm.shot(st, sl))
            asm.close(st, sl)
    assert ready == list(range(40))
    assert nonzero(asm) == {"packets": 121, "rounds_accepted": 120, "end_of_stream": 1}
