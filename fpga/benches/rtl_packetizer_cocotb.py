"""cocotb testbenches for the packetizer and CRC; run by ``rtl_packetizer_test.py`` in Icarus.

Not a pytest module: these coroutines run inside the simulator. The reference
for every byte is ``SyndromePacket(...).encode()`` and ``zlib.crc32``, so the RTL
is checked against the one definition of wire format v1. The packetizer's output
is a 64-bit AXI stream: byte k of the packet is ``out_data[8*(k%8) +: 8]`` of
beat k/8, and ``out_keep`` marks the bytes of the last beat.

Environment: ``QHIL_RTL_SEED`` (int) seeds the stimulus; ``QHIL_RTL_PACKETS``
sets how many random packets the packetizer test drives.
"""

from __future__ import annotations

import os
import random
import zlib
from collections import deque
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge, Timer

from qhil.bridge import SYNDROME_HEADER_SIZE, SyndromePacket

SEED = int(os.environ.get("QHIL_RTL_SEED", "1"))
N_PACKETS = int(os.environ.get("QHIL_RTL_PACKETS", "2000"))
# Detectors per round of a distance-d rotated surface code, d^2 - 1: d = 3, 5, ..., 13.
SURFACE_SIZES = (8, 24, 48, 80, 120, 168)
_HEADER_FIELDS = (
    (0, 4, "magic"),
    (4, 1, "version"),
    (5, 1, "flags"),
    (6, 2, "n_bits"),
    (8, 4, "stream_id"),
    (12, 4, "round"),
    (16, 8, "shot"),
    (24, 8, "seq"),
    (32, 8, "t_fpga"),
)


def field_at(offset: int, n_bits: int) -> str:
    """Name of the syndrome-packet field holding byte ``offset``."""
    for start, size, name in _HEADER_FIELDS:
        if start <= offset < start + size:
            return f"{name}[{offset - start}]"
    payload_end = SYNDROME_HEADER_SIZE + (n_bits + 7) // 8
    if offset < payload_end:
        return f"payload[{offset - SYNDROME_HEADER_SIZE}]"
    if offset < payload_end + 4:
        return f"crc32[{offset - payload_end}]"
    return "past the end"


def first_difference(got: bytes, want: bytes, n_bits: int) -> str:
    """Describe the first byte where two packet streams differ, or ``""`` if equal."""
    if got == want:
        return ""
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None)
    if i is None:
        i = min(len(got), len(want))
        where = field_at(i, n_bits)
        return f"length {len(got)} != {len(want)}; first extra/missing byte {i} ({where})"
    return (
        f"byte {i} ({field_at(i, n_bits)}): got 0x{got[i]:02x}, want 0x{want[i]:02x}"
        f" (lengths {len(got)} / {len(want)})"
    )


async def _start_clock(dut: Any) -> None:
    Clock(dut.clk, 4, unit="ns").start()  # 250 MHz
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


def _random_n_bits(rng: random.Random, max_bits: int) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.choice(SURFACE_SIZES)
    if r < 0.7:
        return rng.choice((0, 1, 7, 8, 9, max_bits - 1, max_bits))
    if r < 0.71:
        return max_bits + rng.randint(1, 20)  # documented: zero payload past MAX_BITS
    return rng.randint(0, max_bits)


class _Round:
    """One round's inputs and the packet the bridge expects for them."""

    def __init__(self, rng: random.Random, max_bits: int, n_bits: int | None = None) -> None:
        self.stream_id = rng.getrandbits(32)
        self.round = rng.getrandbits(32)
        self.shot = rng.getrandbits(64)
        self.seq = rng.getrandbits(64)
        self.t_fpga = rng.getrandbits(64)
        self.flags = rng.getrandbits(8)
        self.n_bits = _random_n_bits(rng, max_bits) if n_bits is None else n_bits
        # Junk above n_bits checks that the RTL zeroes the unused payload bits.
        self.bits = rng.getrandbits(max_bits)
        raw = np.frombuffer(self.bits.to_bytes((max_bits + 7) // 8, "little"), np.uint8)
        events = np.unpackbits(raw, bitorder="little")[:max_bits]
        events = np.concatenate([events, np.zeros(max(0, self.n_bits - max_bits), np.uint8)])
        self.expected = SyndromePacket(
            stream_id=self.stream_id,
            shot=self.shot,
            round=self.round,
            seq=self.seq,
            t_fpga=self.t_fpga,
            flags=self.flags,
            bits=events[: self.n_bits],
        ).encode()

    def drive(self, dut: Any) -> None:
        dut.stream_id.value = self.stream_id
        dut.round.value = self.round
        dut.shot.value = self.shot
        dut.seq.value = self.seq
        dut.t_fpga.value = self.t_fpga
        dut.flags.value = self.flags
        dut.n_bits.value = self.n_bits & 0xFFFF
        dut.bits.value = self.bits


def beat_bytes(data: int, keep: int, last: int) -> bytes:
    """The packet bytes a beat carries; checks the keep rules (full beats, low bytes last)."""
    n = bin(keep).count("1")
    assert keep == (1 << n) - 1 and n > 0, f"out_keep {keep:#04x} is not 1..8 low bytes"
    assert last or n == 8, f"out_keep {keep:#04x} on a beat that is not the last"
    assert data >> (8 * n) == 0, f"bytes past out_keep are not zero: {data:#018x}"
    return data.to_bytes(8, "little")[:n]


@cocotb.test()
async def packetizer_matches_syndrome_packet_encode(dut: Any) -> None:
    """Random rounds under random back-pressure; every byte vs SyndromePacket.encode()."""
    rng = random.Random(SEED)
    max_bits = len(dut.bits)
    dut.start.value = 0
    dut.out_ready.value = 0
    await _start_clock(dut)

    todo = [_Round(rng, max_bits) for _ in range(N_PACKETS)]
    todo.reverse()
    in_flight: deque[_Round] = deque()
    got = bytearray()
    done = 0
    p_ready = 1.0
    ready = 0
    cycles = 0
    limit = 100 * N_PACKETS + 1000
    while done < N_PACKETS:
        cycles += 1
        assert cycles < limit, f"stalled: {done}/{N_PACKETS} packets after {cycles} cycles"
        # Falling edge: outputs have settled from the last rising edge; inputs set
        # here are sampled by the next one.
        valid = int(dut.out_valid.value)
        last = int(dut.out_last.value) if valid else 0
        busy = bool(in_flight)
        ready = int(rng.random() < p_ready)
        dut.out_ready.value = ready
        start_ready = (not busy) or (ready and valid and last)
        if start_ready and todo and rng.random() < 0.8:
            rnd = todo.pop()
            rnd.drive(dut)
            dut.start.value = 1
            in_flight.append(rnd)
            # Each packet gets its own back-pressure: none, light, or heavy.
            p_ready = rng.choice((1.0, 1.0, 0.9, 0.6, 0.35))
        elif not start_ready and rng.random() < 0.05:
            # A start while busy must be ignored: drive junk to prove it.
            _Round(rng, 16).drive(dut)
            dut.start.value = 1
        else:
            dut.start.value = 0
        await ReadOnly()
        assert int(dut.start_ready.value) == int(start_ready), f"start_ready wrong at {cycles}"

        if valid and ready:
            assert in_flight, f"beat {int(dut.out_data.value):#x} with no packet started"
            got += beat_bytes(int(dut.out_data.value), int(dut.out_keep.value), last)
            want = in_flight[0].expected
            if last or len(got) >= len(want):
                diff = first_difference(bytes(got), want, in_flight[0].n_bits)
                if not diff and not last:
                    diff = f"out_last low on the beat holding the final byte {len(got) - 1}"
                assert not diff, (
                    f"packet {done} (seed {SEED}, n_bits {in_flight[0].n_bits}): {diff}"
                )
                in_flight.popleft()
                got.clear()
                done += 1
        await FallingEdge(dut.clk)
    dut._log.info("%d packets, %d cycles, all bytes match", done, cycles)


def expected_last_edge(n_bits: int) -> int:
    """The edge (after the one sampling start) that moves the last beat, out_ready high."""
    body = 40 + (n_bits + 7) // 8
    nfull, rem = divmod(body, 8)
    crc_done = nfull + bin(rem).count("1")
    edge = max(crc_done + 2, nfull + 2)  # the beat holding the first CRC byte
    return edge + ((body + 3) // 8 - nfull)  # and the spill-over beat, if any


async def _edges_to_last_beat(dut: Any, rnd: _Round) -> tuple[int, int, bytes]:
    """Edges from the one sampling start to those moving the first and last beats."""
    dut.out_ready.value = 1
    rnd.drive(dut)
    dut.start.value = 1
    await RisingEdge(dut.clk)  # edge 0 samples start
    await FallingEdge(dut.clk)
    dut.start.value = 0
    data = bytearray()
    first = 0
    edge = 0
    while True:
        edge += 1
        if int(dut.out_valid.value):
            first = first or edge
            last = int(dut.out_last.value)
            data += beat_bytes(int(dut.out_data.value), int(dut.out_keep.value), last)
            if last:
                await FallingEdge(dut.clk)
                return first, edge, bytes(data)
        await FallingEdge(dut.clk)


@cocotb.test()
async def packetizer_latency(dut: Any) -> None:
    """Start -> first beat is 2 edges; start -> last beat as ``expected_last_edge`` says."""
    rng = random.Random(SEED + 1)
    dut.start.value = 0
    await _start_clock(dut)
    sizes = sorted({0, 1, 4, 8, 12, *SURFACE_SIZES, 60, 84, 160, len(dut.bits)})
    for n_bits in sizes:
        rnd = _Round(rng, len(dut.bits), n_bits)
        first, last, data = await _edges_to_last_beat(dut, rnd)
        diff = first_difference(data, rnd.expected, n_bits)
        assert not diff, f"n_bits {n_bits}: {diff}"
        dut._log.info(
            "n_bits=%d: %d bytes, %d beats, first beat edge %d, last beat edge %d",
            n_bits,
            len(data),
            (len(data) + 7) // 8,
            first,
            last,
        )
        assert (first, last) == (2, expected_last_edge(n_bits)), (n_bits, first, last)


@cocotb.test()
async def crc32_next_matches_zlib(dut: Any) -> None:
    """qhil_crc32_next (combinational, BYTES bytes a step) against zlib.crc32."""
    rng = random.Random(SEED + 2)
    n = len(dut.data) // 8
    mask = 0xFFFFFFFF
    for k in range(2000):
        state = rng.choice((mask, 0, rng.getrandbits(32)))
        data = rng.randbytes(n)
        dut.state.value = state
        dut.data.value = int.from_bytes(data, "little")
        await Timer(1, unit="ns")
        # zlib continues from a finalized CRC; the module maps raw state to raw state.
        want = ~zlib.crc32(data, ~state & mask) & mask
        got = int(dut.next.value)
        assert got == want, (
            f"step {k}: state {state:#010x} data {data.hex()}: {got:#010x} != {want:#010x}"
        )
