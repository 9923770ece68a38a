"""Hostile ZeroMQ messages, for the network fuzz tests and ``benchmarks/fuzz_network.py``.

Each message is a list of frames, as a peer's DEALER socket would send it. The
mix covers what a hostile neighbour or a broken peer sends: random bytes,
damaged and CRC-valid syndrome packets with out-of-range fields or forged
end-of-stream flags, multipart messages, forged and malformed control
messages, oversized frames and empty frames.

>>> msgs = hostile_messages(seed=1, count=1000)
>>> len(msgs), sorted({kind for kind, _ in msgs})[:3]
(1000, ['bad_control', 'bad_stream', 'control_garbage'])
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qhil.bridge._control import CONTROL_MAX, Kind, Refusal, encode_control
from qhil.bridge._packets import SyndromePacket
from qhil.bridge._wire import FLAG_END_OF_STREAM, FLAG_FIRST_ROUND, FLAG_LAST_ROUND

__all__ = ["HOSTILE_KINDS", "hostile_messages"]

HOSTILE_KINDS = (
    "random",
    "corrupted",
    "far_future",
    "forged_eos",
    "bad_stream",
    "multipart",
    "control_garbage",
    "bad_control",
    "oversized",
    "empty",
)


def _syndrome(rng: np.random.Generator, **fields: Any) -> bytes:
    n = int(rng.integers(0, 40))
    rnd = int(rng.integers(0, 4))
    base = dict(
        stream_id=0,
        shot=int(rng.integers(0, 1000)),
        round=rnd,
        seq=int(rng.integers(0, 5000)),
        t_fpga=int(rng.integers(0, 2**40)),
        bits=rng.integers(0, 2, n).astype(np.bool_),
        flags=(FLAG_FIRST_ROUND if rnd == 0 else 0) | (FLAG_LAST_ROUND if rnd == 3 else 0),
    )
    base.update(fields)
    return SyndromePacket(**base).encode()  # type: ignore[arg-type]


def _one(kind: str, rng: np.random.Generator, max_packet: int) -> list[bytes]:
    big = 2**63 - 1
    if kind == "random":
        return [rng.bytes(int(rng.integers(1, max_packet + 1)))]
    if kind == "corrupted":
        pkt = bytearray(_syndrome(rng))
        pkt[int(rng.integers(0, len(pkt)))] ^= 1 << int(rng.integers(0, 8))
        return [bytes(pkt[: int(rng.integers(1, len(pkt) + 1))])]
    if kind == "far_future":
        pick = int(rng.integers(0, 3))
        field = {0: {"shot": 2**40}, 1: {"seq": 2**40}, 2: {"shot": big, "seq": big}}[pick]
        return [_syndrome(rng, **field)]
    if kind == "forged_eos":
        return [_syndrome(rng, flags=FLAG_END_OF_STREAM, bits=np.zeros(0, np.bool_))]
    if kind == "bad_stream":
        return [_syndrome(rng, stream_id=int(rng.choice([1, 255, 2**32 - 1])))]
    if kind == "multipart":
        parts = int(rng.integers(2, 6))
        return [
            b"" if i == 0 and rng.random() < 0.5 else rng.bytes(int(rng.integers(0, 64)))
            for i in range(parts)
        ]
    if kind == "control_garbage":
        return [b"", rng.bytes(int(rng.integers(0, CONTROL_MAX + 1)))]
    if kind == "bad_control":
        body = encode_control(
            Kind(int(rng.integers(1, 5))),
            session=int(rng.integers(0, 2**63)),
            instance=1,
            code=Refusal(int(rng.integers(0, 5))),
            text="x" * int(rng.integers(0, 50)),
        )
        damaged = bytearray(body)
        if rng.random() < 0.5:
            damaged[int(rng.integers(0, 8))] ^= 0xFF  # magic, version, kind or code
        return [b"", bytes(damaged)]
    if kind == "oversized":
        return [rng.bytes(int(rng.integers(max_packet + 1, 4097)))]
    return [b""]


def hostile_messages(
    *, seed: int, count: int, max_packet: int = 252, kinds: tuple[str, ...] = HOSTILE_KINDS
) -> list[tuple[str, list[bytes]]]:
    """``count`` hostile messages as ``(kind, frames)``, reproducibly from ``seed``.
    ``oversized`` frames stay within 4096 bytes, ZeroMQ's limit on qhil sockets, so
    they reach qhil's own checks; bigger ones make ZeroMQ drop the peer."""
    bad = [k for k in kinds if k not in HOSTILE_KINDS]
    if bad:
        raise ValueError(f"unknown hostile kinds {bad}; choose from {HOSTILE_KINDS}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(kinds), count)
    return [(kinds[k], _one(kinds[k], rng, max_packet)) for k in picks]
