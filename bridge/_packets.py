"""Wire format v1 as frozen records, for tools, tests and anything off the hot path.

The hot paths call the numba encoders and parsers in ``_wire`` directly; these
records wrap the same functions, so both always agree on the bytes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from qhil.bridge._wire import (
    CORRECTION_HEADER_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    SYNDROME_HEADER_SIZE,
    CorrectionStatus,
    Reason,
    correction_size,
    parse_correction,
    parse_syndrome,
    syndrome_size,
    write_correction,
    write_syndrome,
)

__all__ = ["CorrectionPacket", "PacketError", "SyndromePacket"]

_U32 = 2**32
_U64 = 2**64
_MAX_BITS = 2**16 - 1


class PacketError(ValueError):
    """A packet was rejected; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.label}: {message}")
        self.reason = reason


def _as_u8(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(f"packet arrays must be 1-D uint8; got {data.dtype}{data.shape}")
        return np.ascontiguousarray(data)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def _bits(value: npt.ArrayLike, name: str) -> np.ndarray:
    bits = np.asarray(value)
    if bits.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {bits.shape}")
    if bits.dtype != np.bool_:
        if bits.size and not np.isin(bits, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0/1 values")
        bits = bits.astype(np.bool_)
    if bits.size > _MAX_BITS:
        raise ValueError(
            f"{name} holds {bits.size} bits; the wire format carries at most {_MAX_BITS}"
        )
    bits = bits.copy()
    bits.flags.writeable = False
    return bits


def _check_range(name: str, value: int, limit: int) -> None:
    if not 0 <= value < limit:
        raise ValueError(f"{name}={value} is out of range [0, {limit})")


def _unpack(packed: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(packed, count=n, bitorder="little").astype(np.bool_)


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, bitorder="little") if bits.size else np.zeros(1, np.uint8)


@dataclasses.dataclass(frozen=True, init=False)
class SyndromePacket:
    """One round of detection events from the front end.

    ``bits`` is bool[n_bits], the round's detection events in the circuit's
    detector order.

    >>> p = SyndromePacket(stream_id=0, shot=7, round=2, seq=20, t_fpga=1234, bits=[1, 0, 1])
    >>> data = p.encode()
    >>> len(data)
    45
    >>> SyndromePacket.decode(data) == p
    True
    >>> SyndromePacket.decode(data[:-1])
    Traceback (most recent call last):
    ...
    qhil.bridge._packets.PacketError: truncated: syndrome packet of 44 bytes ...
    """

    stream_id: int
    shot: int
    round: int
    seq: int
    t_fpga: int
    bits: np.ndarray
    flags: int = 0

    def __init__(
        self,
        *,
        stream_id: int,
        shot: int,
        round: int,
        seq: int,
        t_fpga: int,
        bits: npt.ArrayLike,
        flags: int = 0,
    ) -> None:
        """``bits``: any 1-D array-like of 0/1; stored as a read-only bool ndarray."""
        for name, value in (
            ("stream_id", stream_id),
            ("shot", shot),
            ("round", round),
            ("seq", seq),
            ("t_fpga", t_fpga),
            ("flags", flags),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "bits", _bits(bits, "bits"))
        _check_range("stream_id", self.stream_id, _U32)
        _check_range("round", self.round, _U32)
        for name in ("shot", "seq", "t_fpga"):
            _check_range(name, getattr(self, name), _U64)
        _check_range("flags", self.flags, 256)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SyndromePacket):
            return NotImplemented
        return self._key() == other._key() and np.array_equal(self.bits, other.bits)

    def __hash__(self) -> int:
        return hash((self._key(), self.bits.tobytes()))

    def _key(self) -> tuple[int, ...]:
        return (self.stream_id, self.shot, self.round, self.seq, self.t_fpga, self.flags)

    @property
    def first_round(self) -> bool:
        return bool(self.flags & FLAG_FIRST_ROUND)

    @property
    def last_round(self) -> bool:
        return bool(self.flags & FLAG_LAST_ROUND)

    @property
    def end_of_stream(self) -> bool:
        return bool(self.flags & FLAG_END_OF_STREAM)

    def encode(self) -> bytes:
        out = np.zeros(syndrome_size(self.bits.size), dtype=np.uint8)
        u = np.uint64  # numba types a Python int >= 2**63 as int64 and overflows
        n = write_syndrome(
            out,
            u(self.stream_id),
            u(self.shot),
            u(self.round),
            u(self.seq),
            u(self.t_fpga),
            self.flags,
            _pack(self.bits),
            self.bits.size,
        )
        return out[:n].tobytes()

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | np.ndarray) -> SyndromePacket:
        """Parse one packet; raises ``PacketError`` naming the reason if it is malformed."""
        buf = _as_u8(data)
        fields = np.zeros(7, dtype=np.uint64)
        reason = Reason(parse_syndrome(buf, buf.size, fields))
        if reason != Reason.OK:
            raise PacketError(reason, f"syndrome packet of {buf.size} bytes rejected")
        flags, n_bits, stream_id, rnd, shot, seq, t_fpga = (int(f) for f in fields)
        payload = buf[SYNDROME_HEADER_SIZE : SYNDROME_HEADER_SIZE + (n_bits + 7) // 8]
        return cls(
            stream_id=stream_id,
            shot=shot,
            round=rnd,
            seq=seq,
            t_fpga=t_fpga,
            bits=_unpack(payload, n_bits),
            flags=flags,
        )


@dataclasses.dataclass(frozen=True, init=False)
class CorrectionPacket:
    """The decoder's answer for one shot.

    ``obs`` is bool[n_obs], the logical-frame flips (one per observable).
    ``frame`` is bool[n_frame]; its meaning depends on ``status``
    (see ``CorrectionStatus``).

    >>> c = CorrectionPacket(stream_id=0, shot=7, seq=25, t_fpga=99, obs=[True])
    >>> CorrectionPacket.decode(c.encode()) == c
    True
    >>> c.status
    <CorrectionStatus.DECODED: 0>
    """

    stream_id: int
    shot: int
    seq: int
    t_fpga: int
    obs: np.ndarray
    status: CorrectionStatus
    frame: np.ndarray
    t_host_rx: int
    t_host_tx: int
    flags: int

    def __init__(
        self,
        *,
        stream_id: int,
        shot: int,
        seq: int,
        t_fpga: int,
        obs: npt.ArrayLike,
        status: CorrectionStatus | int = CorrectionStatus.DECODED,
        frame: npt.ArrayLike = (),
        t_host_rx: int = 0,
        t_host_tx: int = 0,
        flags: int = 0,
    ) -> None:
        """``obs`` and ``frame``: 1-D array-likes of 0/1, stored as read-only bool ndarrays."""
        for name, value in (
            ("stream_id", stream_id),
            ("shot", shot),
            ("seq", seq),
            ("t_fpga", t_fpga),
            ("t_host_rx", t_host_rx),
            ("t_host_tx", t_host_tx),
            ("flags", flags),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "obs", _bits(obs, "obs"))
        object.__setattr__(self, "frame", _bits(frame, "frame"))
        try:
            object.__setattr__(self, "status", CorrectionStatus(status))
        except ValueError:
            valid = ", ".join(f"{s.name}={s.value}" for s in CorrectionStatus)
            raise ValueError(f"status={status!r} is not one of {valid}") from None
        _check_range("stream_id", self.stream_id, _U32)
        for name in ("shot", "seq", "t_fpga", "t_host_rx", "t_host_tx"):
            _check_range(name, getattr(self, name), _U64)
        _check_range("flags", self.flags, 256)

    def _key(self) -> tuple[int, ...]:
        return (
            self.stream_id,
            self.shot,
            self.seq,
            self.t_fpga,
            int(self.status),
            self.t_host_rx,
            self.t_host_tx,
            self.flags,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CorrectionPacket):
            return NotImplemented
        return (
            self._key() == other._key()
            and np.array_equal(self.obs, other.obs)
            and np.array_equal(self.frame, other.frame)
        )

    def __hash__(self) -> int:
        return hash((self._key(), self.obs.tobytes(), self.frame.tobytes()))

    def encode(self) -> bytes:
        out = np.zeros(correction_size(self.obs.size, self.frame.size), dtype=np.uint8)
        u = np.uint64
        n = write_correction(
            out,
            u(self.stream_id),
            u(self.shot),
            u(self.seq),
            u(self.t_fpga),
            int(self.status),
            self.flags,
            _pack(self.obs),
            self.obs.size,
            _pack(self.frame),
            self.frame.size,
            u(self.t_host_rx),
            u(self.t_host_tx),
        )
        return out[:n].tobytes()

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | np.ndarray) -> CorrectionPacket:
        """Parse one packet; raises ``PacketError`` naming the reason if it is malformed."""
        buf = _as_u8(data)
        fields = np.zeros(10, dtype=np.uint64)
        reason = Reason(parse_correction(buf, buf.size, fields))
        if reason != Reason.OK:
            raise PacketError(reason, f"correction packet of {buf.size} bytes rejected")
        flags, n_obs, stream_id, status, n_frame, shot, seq, t_fpga, t_rx, t_tx = (
            int(f) for f in fields
        )
        o = CORRECTION_HEADER_SIZE
        n_ob = (n_obs + 7) // 8
        return cls(
            stream_id=stream_id,
            shot=shot,
            seq=seq,
            t_fpga=t_fpga,
            obs=_unpack(buf[o : o + n_ob], n_obs),
            status=CorrectionStatus(status),
            frame=_unpack(buf[o + n_ob : o + n_ob + (n_frame + 7) // 8], n_frame),
            t_host_rx=t_rx,
            t_host_tx=t_tx,
            flags=flags,
        )
