from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qhil.bridge._crc import crc32
from qhil.bridge._packets import CorrectionPacket, PacketError, SyndromePacket
from qhil.bridge._wire import (
    CORRECTION_HEADER_SIZE,
    FLAG_LAST_ROUND,
    SYNDROME_HEADER_SIZE,
    CorrectionStatus,
    Reason,
    parse_correction,
    parse_syndrome,
    syndrome_size,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
bits = st.lists(st.booleans(), max_size=300).map(lambda b: np.array(b, dtype=np.bool_))

syndromes = st.builds(
    SyndromePacket,
    stream_id=u32,
    shot=u64,
    round=u32,
    seq=u64,
    t_fpga=u64,
    bits=bits,
    flags=st.integers(0, 255),
)
corrections = st.builds(
    CorrectionPacket,
    stream_id=u32,
    shot=u64,
    seq=u64,
    t_fpga=u64,
    obs=bits,
    status=st.sampled_from(list(CorrectionStatus)),
    frame=bits,
    t_host_rx=u64,
    t_host_tx=u64,
    flags=st.integers(0, 255),
)


def _parse_any(data: bytes) -> int:
    buf = np.frombuffer(data, dtype=np.uint8)
    if data[:4] == b"QCOR":
        return parse_correction(buf, buf.size, np.zeros(10, np.uint64))
    return parse_syndrome(buf, buf.size, np.zeros(7, np.uint64))


def test_crc_matches_zlib() -> None:
    rng = np.random.default_rng(1)
    for n in [0, 1, 7, 64, 1000]:
        data = rng.integers(0, 256, n, dtype=np.uint8)
        assert crc32(data, n) == zlib.crc32(data.tobytes())


def test_layout_is_little_endian_lsb_first() -> None:
    p = SyndromePacket(
        stream_id=0x01020304,
        shot=5,
        round=6,
        seq=7,
        t_fpga=8,
        bits=[1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        flags=FLAG_LAST_ROUND,
    )
    data = p.encode()
    assert data[:4] == b"QSYN" and data[4] == 1 and data[5] == FLAG_LAST_ROUND
    assert data[6:8] == (10).to_bytes(2, "little")
    assert data[8:12] == bytes([4, 3, 2, 1])
    assert data[12:16] == (6).to_bytes(4, "little")
    assert data[16:24] == (5).to_bytes(8, "little")
    assert data[24:32] == (7).to_bytes(8, "little")
    assert data[32:40] == (8).to_bytes(8, "little")
    assert data[40:42] == bytes([0b00000001, 0b00000010])
    assert data[42:] == zlib.crc32(data[:42]).to_bytes(4, "little")
    assert len(data) == syndrome_size(10)


@settings(max_examples=300, deadline=None)
@given(syndromes)
def test_syndrome_round_trip(p: SyndromePacket) -> None:
    assert SyndromePacket.decode(p.encode()) == p


@settings(max_examples=300, deadline=None)
@given(corrections)
def test_correction_round_trip(c: CorrectionPacket) -> None:
    assert CorrectionPacket.decode(c.encode()) == c


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    reason = Reason(_parse_any(data))
    if reason == Reason.OK:
        # Only a packet with a correct CRC may pass.
        assert len(data) >= 48


@settings(max_examples=500, deadline=None)
@given(st.one_of(syndromes, corrections), st.data())
def test_any_single_bit_flip_is_rejected(
    p: SyndromePacket | CorrectionPacket, data: st.DataObject
) -> None:
    raw = bytearray(p.encode())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= 1 << data.draw(st.integers(0, 7))
    assert _parse_any(bytes(raw)) != Reason.OK


@settings(max_examples=300, deadline=None)
@given(st.one_of(syndromes, corrections), st.data())
def test_truncation_and_padding_are_rejected(
    p: SyndromePacket | CorrectionPacket, data: st.DataObject
) -> None:
    raw = p.encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert _parse_any(raw[:cut]) in (Reason.TRUNCATED, Reason.BAD_MAGIC)
    pad = data.draw(st.binary(min_size=1, max_size=8))
    assert _parse_any(raw + pad) == Reason.BAD_LENGTH


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b"XSYN" + b[4:], Reason.BAD_MAGIC),
        (lambda b: b[:4] + bytes([2]) + b[5:], Reason.BAD_VERSION),
        (lambda b: b[:10], Reason.TRUNCATED),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), Reason.BAD_CRC),
        (lambda b: b + b"\0", Reason.BAD_LENGTH),
    ],
)
def test_each_reason_is_named(mutate, reason: Reason) -> None:  # type: ignore[no-untyped-def]
    raw = SyndromePacket(stream_id=1, shot=2, round=3, seq=4, t_fpga=5, bits=[1] * 20).encode()
    with pytest.raises(PacketError, match=reason.label) as info:
        SyndromePacket.decode(mutate(raw))
    assert info.value.reason == reason


def test_unknown_correction_status_is_a_bad_field() -> None:
    raw = bytearray(CorrectionPacket(stream_id=0, shot=0, seq=0, t_fpga=0, obs=[1]).encode())
    raw[12] = 9
    raw[-4:] = zlib.crc32(bytes(raw[:-4])).to_bytes(4, "little")
    with pytest.raises(PacketError, match="bad_field"):
        CorrectionPacket.decode(bytes(raw))


def test_bad_record_values_are_refused() -> None:
    with pytest.raises(ValueError, match="stream_id"):
        SyndromePacket(stream_id=-1, shot=0, round=0, seq=0, t_fpga=0, bits=[])
    with pytest.raises(ValueError, match="0/1"):
        SyndromePacket(stream_id=0, shot=0, round=0, seq=0, t_fpga=0, bits=[2])
    with pytest.raises(ValueError, match="DECODED=0"):
        CorrectionPacket(stream_id=0, shot=0, seq=0, t_fpga=0, obs=[], status=7)  # type: ignore[arg-type]


def test_header_sizes() -> None:
    assert SYNDROME_HEADER_SIZE == 40 and CORRECTION_HEADER_SIZE == 56
