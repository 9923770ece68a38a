"""cocotb testbenches for ``fpga/rtl/qhil_correction_rx.v``; run by ``rtl_correction_rx_test.py``.

Not a pytest module: these coroutines run inside the simulator. The reference
for every verdict is ``parse_correction`` (the reason) and ``CorrectionPacket.decode``
(the fields) on the same bytes, so the RTL is checked against the one
definition of wire format v1.

Environment: ``QHIL_RTL_SEED`` (int) seeds the stimulus; ``QHIL_RTL_PACKETS``
sets how many packets the main test sends.
"""

from __future__ import annotations

import os
import random
import zlib
from collections import Counter
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from qhil.bridge import CorrectionPacket, Reason, parse_correction

SEED = int(os.environ.get("QHIL_RTL_SEED", "1"))
N_PACKETS = int(os.environ.get("QHIL_RTL_PACKETS", "3000"))
# Last byte taken on edge 0: done is high right after it (sampled on edge 1).
DONE_LATENCY = 1
# Every reason the parser can give; each must be exercised.
REASONS = (
    Reason.OK,
    Reason.BAD_MAGIC,
    Reason.BAD_VERSION,
    Reason.TRUNCATED,
    Reason.BAD_CRC,
    Reason.BAD_LENGTH,
    Reason.BAD_FIELD,
)
KINDS = (
    "valid",
    "valid",
    "valid",
    "flip",
    "truncate",
    "trailing",
    "magic",
    "version",
    "status",
    "length_field",
    "junk",
)


def reference(data: bytes) -> Reason:
    buf = np.frombuffer(data, dtype=np.uint8)
    return Reason(parse_correction(buf, buf.size, np.zeros(10, dtype=np.uint64)))


def _recrc(data: bytearray) -> bytes:
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    return bytes(data)


def random_valid(rng: random.Random, max_obs: int, n_obs: int | None = None) -> bytes:
    if n_obs is None:
        n_obs = 1 if rng.random() < 0.8 else rng.randint(0, max_obs)
    n_frame = rng.randint(0, 64)
    return CorrectionPacket(
        stream_id=rng.getrandbits(32),
        shot=rng.getrandbits(64),
        seq=rng.getrandbits(64),
        t_fpga=rng.getrandbits(64),
        obs=[rng.getrandbits(1) for _ in range(n_obs)],
        status=rng.randint(0, 2),
        frame=[rng.getrandbits(1) for _ in range(n_frame)],
        t_host_rx=rng.getrandbits(64),
        t_host_tx=rng.getrandbits(64),
        flags=rng.getrandbits(8),
    ).encode()


def random_packet(rng: random.Random, kind: str, max_obs: int) -> bytes:
    """One packet of the given kind: valid, or corrupted in one way."""
    data = bytearray(random_valid(rng, max_obs))
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
    elif kind == "truncate":
        n = rng.randint(1, 8) if rng.random() < 0.3 else rng.randint(1, len(data) - 1)
        del data[n:]
    elif kind == "trailing":
        data += rng.randbytes(rng.randint(1, 8))
    elif kind == "magic":
        data[rng.randrange(4)] ^= rng.randint(1, 255)
    elif kind == "version":
        data[4] = rng.choice([0, 2, 255, rng.randint(2, 255)])
    elif kind == "status":
        data[12] = rng.randint(3, 255)
        return _recrc(data)
    elif kind == "length_field":
        off = rng.choice((6, 7, 14, 15))
        data[off] ^= 1 << rng.randrange(8)
        return _recrc(data)
    elif kind == "junk":
        return rng.randbytes(rng.randint(1, 80))
    return bytes(data)


async def _start_clock(dut: Any) -> None:
    Clock(dut.clk, 4, unit="ns").start()  # 250 MHz
    dut.rst.value = 1
    dut.in_valid.value = 0
    dut.in_last.value = 0
    dut.in_data.value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


class _Checker:
    """Compares the RTL's outputs with the reference model at every falling edge."""

    def __init__(self, dut: Any) -> None:
        self.dut = dut
        self.counts: Counter[Reason] = Counter()
        self.due: tuple[int, str, bytes] | None = None  # done expected at the next sample
        self.checked = 0

    def sample(self) -> None:
        dut = self.dut
        done = int(dut.done.value)
        if self.due is None:
            assert not done, f"done high with no packet ended (after packet {self.checked - 1})"
            return
        idx, kind, data = self.due
        self.due = None
        where = f"packet {idx} ({kind}, {len(data)} bytes {data.hex()})"
        assert done, f"{where}: done not high {DONE_LATENCY} cycle after the last byte"
        want = reference(data)
        got = int(dut.reason.value)
        assert got == want, f"{where}: field reason: got {got}, want {int(want)} ({want.name})"
        if want == Reason.OK:
            self._check_fields(where, data)
        self.counts[want] += 1
        self.checked += 1

    def _check_fields(self, where: str, data: bytes) -> None:
        dut = self.dut
        p = CorrectionPacket.decode(data)
        obs32 = sum(int(b) << i for i, b in enumerate(p.obs[:32]))
        want = {
            "stream_id": p.stream_id,
            "shot": p.shot,
            "seq": p.seq,
            "t_fpga": p.t_fpga,
            "t_host_rx": p.t_host_rx,
            "t_host_tx": p.t_host_tx,
            "status": int(p.status),
            "flags": p.flags,
            "n_obs": p.obs.size,
            "n_frame": p.frame.size,
            "obs": obs32,
        }
        for name, value in want.items():
            got = int(getattr(dut, name).value)
            assert got == value, f"{where}: field {name}: got {got:#x}, want {value:#x}"


@cocotb.test()
async def correction_rx_matches_parse_correction(dut: Any) -> None:
    """Valid and corrupted packets, back to back or with gaps; every verdict vs the bridge."""
    rng = random.Random(SEED)
    await _start_clock(dut)
    chk = _Checker(dut)
    max_obs = 40
    kinds: Counter[str] = Counter()
    cycles = 0

    async def tick() -> None:
        nonlocal cycles
        await FallingEdge(dut.clk)
        cycles += 1
        chk.sample()

    for idx in range(N_PACKETS):
        kind = rng.choice(KINDS)
        kinds[kind] += 1
        data = random_packet(rng, kind, max_obs)
        p_gap = rng.choice((0.0, 0.0, 0.0, 0.1))
        while rng.random() < 0.1:  # idle between packets, junk on the data lines
            dut.in_valid.value = 0
            dut.in_last.value = rng.getrandbits(1)
            dut.in_data.value = rng.getrandbits(8)
            await tick()
        for k, byte in enumerate(data):
            while rng.random() < p_gap:
                dut.in_valid.value = 0
                dut.in_last.value = rng.getrandbits(1)
                dut.in_data.value = rng.getrandbits(8)
                await tick()
            last = k == len(data) - 1
            dut.in_valid.value = 1
            dut.in_data.value = byte
            dut.in_last.value = int(last)
            if last:
                chk.due = (idx, kind, data)
            await tick()
    dut.in_valid.value = 0
    dut.in_last.value = 0
    for _ in range(3):
        await tick()
    assert chk.checked == N_PACKETS, (chk.checked, N_PACKETS)
    reasons = {r.name: n for r, n in sorted(chk.counts.items())}
    dut._log.info(
        "%d packets checked in %d cycles; kinds %s; reasons %s",
        chk.checked,
        cycles,
        dict(kinds),
        reasons,
    )
    for reason in REASONS:
        assert chk.counts[reason] > 0, f"no packet exercised {reason.name}"


@cocotb.test()
async def correction_rx_latency(dut: Any) -> None:
    """Last byte -> done is DONE_LATENCY cycles, whatever the packet's length."""
    rng = random.Random(SEED + 1)
    await _start_clock(dut)
    for n_frame in (0, 1, 64, 300, 2000):
        data = CorrectionPacket(
            stream_id=1,
            shot=rng.getrandbits(64),
            seq=2,
            t_fpga=3,
            obs=[1],
            frame=[1] * n_frame,
        ).encode()
        for k, byte in enumerate(data):
            dut.in_valid.value = 1
            dut.in_data.value = byte
            dut.in_last.value = int(k == len(data) - 1)
            await FallingEdge(dut.clk)
        dut.in_valid.value = 0
        dut.in_last.value = 0
        # Edge 0 (the one before this falling edge) took the last byte.
        done_at = None
        for cycle in range(1, 12):
            if done_at is None and int(dut.done.value):
                done_at = cycle
                assert int(dut.reason.value) == 0, int(dut.reason.value)
            await FallingEdge(dut.clk)
        dut._log.info("%d-byte packet: last byte -> done %s cycles", len(data), done_at)
        assert done_at == DONE_LATENCY, (len(data), done_at)
