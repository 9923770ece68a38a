"""Wire format v1: syndrome and correction packets. This module is the one place it is defined.

Every integer is little-endian. Every packet ends with a CRC-32 (IEEE 802.3,
the ``zlib.crc32`` function) over all the bytes before it. Bit payloads are
packed LSB-first: bit ``i`` is ``(payload[i // 8] >> (i % 8)) & 1``, which is
``numpy.packbits(bits, bitorder="little")``. Unused high bits of the last
payload byte are zero.

Syndrome packet (front end -> decoder), one per QEC round, 44 + ceil(n_bits/8) bytes::

    offset size field
         0    4 magic      b"QSYN"
         4    1 version    1
         5    1 flags      bit0 FIRST_ROUND, bit1 LAST_ROUND (of the shot),
                           bit7 END_OF_STREAM (no payload; the run is over)
         6    2 n_bits     detection events in this round
         8    4 stream_id  logical qubit / patch
        12    4 round      round index within the shot (the detector time coordinate)
        16    8 shot       shot index within the stream
        24    8 seq        per-stream packet counter, +1 per packet
        32    8 t_fpga     front-end cycle counter at emission
        40    P payload    detection events, P = ceil(n_bits / 8)
      40+P    4 crc32

Correction packet (decoder -> front end), one per shot, 60 + ceil(n_obs/8) + ceil(n_frame/8) bytes::

    offset size field
         0    4 magic      b"QCOR"
         4    1 version    1
         5    1 flags      bit7 END_OF_STREAM (acknowledges the front end's)
         6    2 n_obs      logical-frame flips carried
         8    4 stream_id  echoed
        12    1 status     CorrectionStatus
        13    1 reserved   0
        14    2 n_frame    frame bits carried (see CorrectionStatus)
        16    8 shot       echoed
        24    8 seq        echoed: seq of the shot's last syndrome packet
        32    8 t_fpga     echoed: t_fpga of that packet
        40    8 t_host_rx  host monotonic ns when that packet was received
        48    8 t_host_tx  host monotonic ns when this correction was sent
        56    O obs flips  O = ceil(n_obs / 8)
      56+O    F frame      F = ceil(n_frame / 8)
    56+O+F    4 crc32

A receiver never raises on bad bytes in the hot path: the batch parsers return a
``Reason`` per packet, and the caller counts it. ``SyndromePacket.decode`` and
``CorrectionPacket.decode`` raise ``PacketError`` (carrying the ``Reason``) for
tools and tests.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import numpy as np

from qhil.bridge._crc import crc32
from qhil.bridge._jit import njit_cached

__all__ = [
    "CORRECTION_HEADER_SIZE",
    "CORRECTION_MAGIC",
    "COR_N_FRAME_AT",
    "COR_N_OBS_AT",
    "COR_OBS_AT",
    "COR_RESERVED_AT",
    "COR_SEQ_AT",
    "COR_SHOT_AT",
    "COR_STATUS_AT",
    "COR_STREAM_AT",
    "COR_T_FPGA_AT",
    "COR_T_HOST_RX_AT",
    "COR_T_HOST_TX_AT",
    "CRC_SIZE",
    "FLAGS_AT",
    "FLAG_END_OF_STREAM",
    "FLAG_FIRST_ROUND",
    "FLAG_LAST_ROUND",
    "MAGIC_AT",
    "SYNDROME_HEADER_SIZE",
    "SYNDROME_MAGIC",
    "SYN_N_BITS_AT",
    "SYN_PAYLOAD_AT",
    "SYN_ROUND_AT",
    "SYN_SEQ_AT",
    "SYN_SHOT_AT",
    "SYN_STREAM_AT",
    "SYN_T_FPGA_AT",
    "VERSION_AT",
    "WIRE_VERSION",
    "CorrectionStatus",
    "Reason",
    "correction_size",
    "parse_correction",
    "parse_syndrome",
    "syndrome_size",
    "write_correction",
    "write_syndrome",
]

WIRE_VERSION = 1
SYNDROME_MAGIC = b"QSYN"
CORRECTION_MAGIC = b"QCOR"
SYNDROME_HEADER_SIZE = 40
CORRECTION_HEADER_SIZE = 56
CRC_SIZE = 4

FLAG_FIRST_ROUND = 0x01
FLAG_LAST_ROUND = 0x02
FLAG_END_OF_STREAM = 0x80

# Field offsets, in bytes from the start of a packet: every parser and writer, on the
# host, in the persistent GPU kernel and on the board, reads and writes through these.
MAGIC_AT, VERSION_AT, FLAGS_AT = 0, 4, 5  # shared by both packets
SYN_N_BITS_AT, SYN_STREAM_AT, SYN_ROUND_AT = 6, 8, 12
SYN_SHOT_AT, SYN_SEQ_AT, SYN_T_FPGA_AT, SYN_PAYLOAD_AT = 16, 24, 32, SYNDROME_HEADER_SIZE
COR_N_OBS_AT, COR_STREAM_AT, COR_STATUS_AT, COR_RESERVED_AT, COR_N_FRAME_AT = 6, 8, 12, 13, 14
COR_SHOT_AT, COR_SEQ_AT, COR_T_FPGA_AT = 16, 24, 32
COR_T_HOST_RX_AT, COR_T_HOST_TX_AT, COR_OBS_AT = 40, 48, CORRECTION_HEADER_SIZE

# Magics as little-endian u32, for comparisons inside numba.
_SYN_MAGIC_U32 = int.from_bytes(SYNDROME_MAGIC, "little")
_COR_MAGIC_U32 = int.from_bytes(CORRECTION_MAGIC, "little")


class Reason(enum.IntEnum):
    """Why a packet was not taken as-is. Receivers count every one of these.

    The first group is found by parsing one packet; the second needs the
    receiver's per-stream state.
    """

    OK = 0
    BAD_MAGIC = 1
    BAD_VERSION = 2
    TRUNCATED = 3
    BAD_CRC = 4
    BAD_LENGTH = 5  # length disagrees with n_bits, or n_bits with the stream's layout
    SEQ_GAP = 6
    DUPLICATE = 7
    UNKNOWN_STREAM = 8
    UNKNOWN_SHOT = 9  # a correction for a shot that is not awaiting one
    BAD_FIELD = 10  # a header field holds a value the format does not define
    STALE = 11  # outside the assembly window: its shot was already closed, or far ahead

    @property
    def label(self) -> str:
        return self.name.lower()


class CorrectionStatus(enum.IntEnum):
    """What a correction packet says about its shot.

    DECODED: ``obs`` holds the logical-frame flips; ``frame`` is empty or holds
        data-qubit Pauli-frame updates.
    INCOMPLETE: some rounds of the shot never arrived intact, so it was not
        decoded; ``frame`` holds one bit per round, set where the round arrived.
    DECODER_ERROR: the decoder raised on this shot; ``obs`` is empty.
    """

    DECODED = 0
    INCOMPLETE = 1
    DECODER_ERROR = 2


_MAX_STATUS = int(max(CorrectionStatus))

# Integer arguments of the numba encoders: Python ints, or numpy ints such as
# np.uint64 (numba types a Python int >= 2**63 as int64 and overflows).
Int: TypeAlias = "int | np.integer[Any]"


def syndrome_size(n_bits: int) -> int:
    """Bytes in a syndrome packet carrying ``n_bits`` detection events.

    >>> syndrome_size(24)
    47
    """
    return SYNDROME_HEADER_SIZE + (n_bits + 7) // 8 + CRC_SIZE


def correction_size(n_obs: int, n_frame: int) -> int:
    """Bytes in a correction packet.

    >>> correction_size(1, 0)
    61
    """
    return CORRECTION_HEADER_SIZE + (n_obs + 7) // 8 + (n_frame + 7) // 8 + CRC_SIZE


@njit_cached(nogil=True)
def _put(buf: np.ndarray, offset: int, value: Int, width: int) -> None:
    v = np.uint64(value)
    for i in range(width):
        buf[offset + i] = np.uint8((v >> np.uint64(8 * i)) & np.uint64(0xFF))


@njit_cached(nogil=True)
def _get(buf: np.ndarray, offset: int, width: int) -> np.uint64:
    v = np.uint64(0)
    for i in range(width):
        v |= np.uint64(buf[offset + i]) << np.uint64(8 * i)
    return v


@njit_cached(nogil=True)
def write_syndrome(
    out: np.ndarray,
    stream_id: Int,
    shot: Int,
    round_index: Int,
    seq: Int,
    t_fpga: Int,
    flags: Int,
    payload: np.ndarray,
    n_bits: Int,
) -> int:
    """Encode a syndrome packet into ``out``; returns its length in bytes.

    Args:
        out: uint8[>= syndrome_size(n_bits)], C-contiguous; written from offset 0.
        payload: uint8[>= ceil(n_bits/8)], the detection events packed LSB-first
            (``np.packbits(bits, bitorder="little")``).
    """
    n_bytes = (n_bits + 7) // 8
    size = SYN_PAYLOAD_AT + n_bytes + CRC_SIZE
    if out.shape[0] < size:
        raise ValueError("syndrome packet does not fit in the output buffer")
    _put(out, MAGIC_AT, _SYN_MAGIC_U32, 4)
    out[VERSION_AT] = WIRE_VERSION
    out[FLAGS_AT] = flags
    _put(out, SYN_N_BITS_AT, n_bits, 2)
    _put(out, SYN_STREAM_AT, stream_id, 4)
    _put(out, SYN_ROUND_AT, round_index, 4)
    _put(out, SYN_SHOT_AT, shot, 8)
    _put(out, SYN_SEQ_AT, seq, 8)
    _put(out, SYN_T_FPGA_AT, t_fpga, 8)
    for i in range(n_bytes):
        out[SYN_PAYLOAD_AT + i] = payload[i]
    end = SYN_PAYLOAD_AT + n_bytes
    _put(out, end, crc32(out, end), CRC_SIZE)
    return size


@njit_cached(nogil=True)
def _check_frame(buf: np.ndarray, length: int, magic: int, header: int) -> int:
    """Reason code for the parts every packet shares; payload size checked by callers."""
    if length < FLAGS_AT + 1:
        return 3  # TRUNCATED: not even magic + version + flags
    if _get(buf, MAGIC_AT, 4) != magic:
        return 1  # BAD_MAGIC
    if buf[VERSION_AT] != WIRE_VERSION:
        return 2  # BAD_VERSION
    if length < header + CRC_SIZE:
        return 3  # TRUNCATED
    return 0


@njit_cached(nogil=True)
def _check_body(buf: np.ndarray, length: int, size: int) -> int:
    if length < size:
        return 3  # TRUNCATED
    if length > size:
        return 5  # BAD_LENGTH: trailing bytes
    if crc32(buf, size - CRC_SIZE) != _get(buf, size - CRC_SIZE, CRC_SIZE):
        return 4  # BAD_CRC
    return 0


@njit_cached(nogil=True)
def parse_syndrome(buf: np.ndarray, length: int, fields: np.ndarray) -> int:
    """Validate a syndrome packet and extract its header; returns a ``Reason`` code.

    Args:
        buf: uint8[>= length], the packet from offset 0. On success its payload
            is ``buf[40 : 40 + ceil(n_bits/8)]``.
        length: the packet's length as received.
        fields: uint64[7], C-contiguous, overwritten with
            (flags, n_bits, stream_id, round, shot, seq, t_fpga) when the
            packet is valid; unspecified otherwise.
    """
    r = _check_frame(buf, length, _SYN_MAGIC_U32, SYN_PAYLOAD_AT)
    if r != 0:
        return r
    n_bits = int(_get(buf, SYN_N_BITS_AT, 2))
    r = _check_body(buf, length, SYN_PAYLOAD_AT + (n_bits + 7) // 8 + CRC_SIZE)
    if r != 0:
        return r
    fields[0] = buf[FLAGS_AT]
    fields[1] = n_bits
    fields[2] = _get(buf, SYN_STREAM_AT, 4)
    fields[3] = _get(buf, SYN_ROUND_AT, 4)
    fields[4] = _get(buf, SYN_SHOT_AT, 8)
    fields[5] = _get(buf, SYN_SEQ_AT, 8)
    fields[6] = _get(buf, SYN_T_FPGA_AT, 8)
    return 0


@njit_cached(nogil=True)
def write_correction(
    out: np.ndarray,
    stream_id: Int,
    shot: Int,
    seq: Int,
    t_fpga: Int,
    status: Int,
    flags: Int,
    obs: np.ndarray,
    n_obs: Int,
    frame: np.ndarray,
    n_frame: Int,
    t_host_rx: Int,
    t_host_tx: Int,
) -> int:
    """Encode a correction packet into ``out``; returns its length in bytes.

    Args:
        out: uint8[>= correction_size(n_obs, n_frame)], C-contiguous.
        obs: uint8[>= ceil(n_obs/8)], logical-frame flips packed LSB-first.
        frame: uint8[>= ceil(n_frame/8)], frame bits packed LSB-first.
    """
    n_ob = (n_obs + 7) // 8
    n_fb = (n_frame + 7) // 8
    size = COR_OBS_AT + n_ob + n_fb + CRC_SIZE
    if out.shape[0] < size:
        raise ValueError("correction packet does not fit in the output buffer")
    _put(out, MAGIC_AT, _COR_MAGIC_U32, 4)
    out[VERSION_AT] = WIRE_VERSION
    out[FLAGS_AT] = flags
    _put(out, COR_N_OBS_AT, n_obs, 2)
    _put(out, COR_STREAM_AT, stream_id, 4)
    out[COR_STATUS_AT] = status
    out[COR_RESERVED_AT] = 0
    _put(out, COR_N_FRAME_AT, n_frame, 2)
    _put(out, COR_SHOT_AT, shot, 8)
    _put(out, COR_SEQ_AT, seq, 8)
    _put(out, COR_T_FPGA_AT, t_fpga, 8)
    _put(out, COR_T_HOST_RX_AT, t_host_rx, 8)
    _put(out, COR_T_HOST_TX_AT, t_host_tx, 8)
    for i in range(n_ob):
        out[COR_OBS_AT + i] = obs[i]
    for i in range(n_fb):
        out[COR_OBS_AT + n_ob + i] = frame[i]
    _put(out, size - CRC_SIZE, crc32(out, size - CRC_SIZE), CRC_SIZE)
    return size


@njit_cached(nogil=True)
def parse_correction(buf: np.ndarray, length: int, fields: np.ndarray) -> int:
    """Validate a correction packet and extract its header; returns a ``Reason`` code.

    Args:
        buf: uint8[>= length], the packet from offset 0. On success the obs
            flips are ``buf[56 : 56 + O]`` and the frame bits follow them.
        fields: uint64[10], C-contiguous, overwritten with (flags, n_obs,
            stream_id, status, n_frame, shot, seq, t_fpga, t_host_rx, t_host_tx).
    """
    r = _check_frame(buf, length, _COR_MAGIC_U32, COR_OBS_AT)
    if r != 0:
        return r
    n_obs = int(_get(buf, COR_N_OBS_AT, 2))
    n_frame = int(_get(buf, COR_N_FRAME_AT, 2))
    r = _check_body(buf, length, COR_OBS_AT + (n_obs + 7) // 8 + (n_frame + 7) // 8 + CRC_SIZE)
    if r != 0:
        return r
    if buf[COR_STATUS_AT] > _MAX_STATUS:
        return 10  # BAD_FIELD
    fields[0] = buf[FLAGS_AT]
    fields[1] = n_obs
    fields[2] = _get(buf, COR_STREAM_AT, 4)
    fields[3] = buf[COR_STATUS_AT]
    fields[4] = n_frame
    fields[5] = _get(buf, COR_SHOT_AT, 8)
    fields[6] = _get(buf, COR_SEQ_AT, 8)
    fields[7] = _get(buf, COR_T_FPGA_AT, 8)
    fields[8] = _get(buf, COR_T_HOST_RX_AT, 8)
    fields[9] = _get(buf, COR_T_HOST_TX_AT, 8)
    return 0
