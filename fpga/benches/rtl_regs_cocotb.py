"""cocotb testbench for fpga/rtl/qhil_regs.v, checked against ``RegisterFile``.

Run by ``rtl_regs_test.py`` through the cocotb runner (Icarus). A small AXI4-Lite
master drives the slave; every read is compared with the off-board twin
(``qhil.fpga.RegisterFile``) plus the two things the twin does not model: the
HI half of a 64-bit pair is latched when LO is read, and CTRL.CLEAR_COUNTERS is a
self-clearing pulse that reads back 0.

Port convention (checked here): an ro register ``NAME`` is fed by input port
``name``; a ``NAME_LO``/``NAME_HI`` pair by one 64-bit port ``name``; an rw register
drives output port ``name``. ID, VERSION and FABRIC_MHZ are constants.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from qhil.fpga import REGISTERS, RegisterFile
from qhil.fpga._regmap import CTRL_BITS

OKAY, SLVERR = 0b00, 0b10
CONSTANTS = ("ID", "VERSION", "FABRIC_MHZ")
CLEAR = 1 << CTRL_BITS["CLEAR_COUNTERS"]
BY_NAME = {r.name: r for r in REGISTERS}
PAIRS = sorted({r.name[:-3] for r in REGISTERS if r.name.endswith("_LO")})
RW = [r for r in REGISTERS if r.access == "rw"]
RO = [r for r in REGISTERS if r.access == "ro"]
# Addresses outside the map: a gap, past the end, aliases above the map, unaligned.
UNMAPPED = (0x24, 0x88, 0xFC, 0x100, 0x108, 0x7FC, 0xFFC, 0x09, 0x0A, 0x0B, 0x15, 0x2A)


def _port_of(name: str) -> tuple[str, int]:
    """(port, bit offset) that feeds ro register ``name``."""
    for base in PAIRS:
        if name == f"{base}_LO":
            return base.lower(), 0
        if name == f"{base}_HI":
            return base.lower(), 32
    return name.lower(), 0


def _merge(old: int, data: int, strb: int) -> int:
    mask = sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)
    return (old & ~mask) | (data & mask)


class AxiLiteMaster:
    """Minimal AXI4-Lite master: drives on falling edges, transfers on rising ones."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self.clk = dut.aclk

    async def _send(self, valid, ready) -> None:
        """Hold ``valid`` (already set, at a falling edge) until a transfer."""
        valid.value = 1
        while True:
            await Timer(1, unit="ns")  # settle before sampling
            if int(ready.value):
                await RisingEdge(self.clk)
                await FallingEdge(self.clk)
                valid.value = 0
                return
            await FallingEdge(self.clk)

    async def _take(self, valid, ready, payload, delay: int = 0) -> tuple[int, ...]:
        """Raise ``ready`` after ``delay`` cycles; return ``payload`` at the transfer."""
        for _ in range(delay):
            await FallingEdge(self.clk)
        ready.value = 1
        while True:
            await Timer(1, unit="ns")
            if int(valid.value):
                got = tuple(int(sig.value) for sig in payload)
                await RisingEdge(self.clk)
                await FallingEdge(self.clk)
                ready.value = 0
                return got
            await FallingEdge(self.clk)

    async def write(
        self, addr: int, data: int, strb: int = 0xF, order: str = "together", bdelay: int = 0
    ) -> int:
        """One write; returns BRESP. ``order``: "together", "aw_first" or "w_first"."""
        d = self.dut
        await FallingEdge(self.clk)
        d.s_axi_awaddr.value = addr
        d.s_axi_awprot.value = 0
        d.s_axi_wdata.value = data
        d.s_axi_wstrb.value = strb
        b = cocotb.start_soon(self._take(d.s_axi_bvalid, d.s_axi_bready, [d.s_axi_bresp], bdelay))
        aw = (d.s_axi_awvalid, d.s_axi_awready)
        w = (d.s_axi_wvalid, d.s_axi_wready)
        if order == "together":
            task = cocotb.start_soon(self._send(*aw))
            await self._send(*w)
            await task
        elif order in ("aw_first", "w_first"):
            first, second = (aw, w) if order == "aw_first" else (w, aw)
            await self._send(*first)
            for _ in range(3):
                await FallingEdge(self.clk)
            await self._send(*second)
        else:
            raise ValueError(order)
        (resp,) = await b
        return resp

    async def read(self, addr: int, rdelay: int = 0) -> tuple[int, int]:
        """One read; returns (RDATA, RRESP)."""
        d = self.dut
        await FallingEdge(self.clk)
        d.s_axi_araddr.value = addr
        d.s_axi_arprot.value = 0
        payload = [d.s_axi_rdata, d.s_axi_rresp]
        r = cocotb.start_soon(self._take(d.s_axi_rvalid, d.s_axi_rready, payload, rdelay))
        await self._send(d.s_axi_arvalid, d.s_axi_arready)
        data, resp = await r
        return data, resp


class Bench:
    """DUT + master + the twin, with the HI latches the twin does not model."""

    def __init__(self, dut) -> None:
        self.dut = dut
        self.axi = AxiLiteMaster(dut)
        self.model = RegisterFile()
        self.hi_latch = dict.fromkeys(PAIRS, 0)

    async def reset(self) -> None:
        d = self.dut
        cocotb.start_soon(Clock(d.aclk, 10, unit="ns").start())  # type: ignore[arg-type]
        for sig in (d.s_axi_awvalid, d.s_axi_wvalid, d.s_axi_bready):
            sig.value = 0
        for sig in (d.s_axi_arvalid, d.s_axi_rready):
            sig.value = 0
        for r in RO:
            if r.name not in CONSTANTS:
                getattr(d, _port_of(r.name)[0]).value = 0
        d.aresetn.value = 0
        for _ in range(3):
            await RisingEdge(d.aclk)
        await FallingEdge(d.aclk)
        d.aresetn.value = 1
        await FallingEdge(d.aclk)

    def drive(self, name: str, value: int) -> None:
        """Feed ro register (or 64-bit pair base) ``name`` from the hardware side."""
        port = getattr(self.dut, name.lower())
        port.value = value
        if name in PAIRS:
            self.model.set64(name, value)
        else:
            self.model.set(name, value)

    def expected(self, name: str) -> int:
        for base in PAIRS:
            if name == f"{base}_HI":
                return self.hi_latch[base]
        return self.model.read(name)

    async def check_read(self, name: str) -> int:
        reg = BY_NAME[name]
        data, resp = await self.axi.read(reg.offset)
        assert resp == OKAY, f"{name}: RRESP {resp:#b}"
        for base in PAIRS:
            if name == f"{base}_LO":
                self.hi_latch[base] = self.model.read(f"{base}_HI")
        want = self.expected(name)
        assert data == want, f"{name} @ {reg.offset:#04x}: read {data:#010x}, twin {want:#010x}"
        return data

    def check_outputs(self) -> None:
        for r in RW:
            got = int(getattr(self.dut, r.name.lower()).value)
            assert got == self.model.read(r.name), f"output {r.name.lower()}: {got:#x}"


async def _bench(dut) -> Bench:
    bench = Bench(dut)
    await bench.reset()
    return bench


@cocotb.test()
async def reset_values(dut) -> None:
    """Every register reads its reset value; rw outputs start at reset."""
    b = await _bench(dut)
    for r in REGISTERS:
        assert await b.check_read(r.name) == r.reset
    b.check_outputs()
    assert int(dut.clear_counters.value) == 0


@cocotb.test()
async def rw_round_trip_with_strobes(dut) -> None:
    b = await _bench(dut)
    rng = random.Random(1)
    for r in RW:
        for strb in (0xF, 0x1, 0x2, 0x4, 0x8, 0x5, 0xA, 0x0, 0xE):
            data = rng.getrandbits(32) & ~CLEAR if r.name == "CTRL" else rng.getrandbits(32)
            assert await b.axi.write(r.offset, data, strb) == OKAY
            b.model.write(r.name, _merge(b.model.read(r.name), data, strb))
            await b.check_read(r.name)
            b.check_outputs()
    for value in (0, 2**32 - 1):
        assert await b.axi.write(BY_NAME["BUDGET"].offset, value) == OKAY
        b.model.write("BUDGET", value)
        await b.check_read("BUDGET")


@cocotb.test()
async def write_channel_orders_and_backpressure(dut) -> None:
    """AW before W, W before AW, a slow BREADY/RREADY: each write lands exactly once."""
    b = await _bench(dut)
    off = BY_NAME["STREAM_ID"].offset
    for i, order in enumerate(("aw_first", "w_first", "together")):
        assert await b.axi.write(off, 0x1000 + i, order=order, bdelay=i * 3) == OKAY
        b.model.write("STREAM_ID", 0x1000 + i)
        data, resp = await b.axi.read(off, rdelay=i * 3)
        assert (data, resp) == (0x1000 + i, OKAY)
    # Back-to-back writes then reads, no idle cycles between them from the master.
    for value in range(5):
        assert await b.axi.write(BY_NAME["ROUND_PERIOD"].offset, value) == OKAY
    b.model.write("ROUND_PERIOD", 4)
    await b.check_read("ROUND_PERIOD")
    b.check_outputs()


@cocotb.test()
async def ro_writes_refused(dut) -> None:
    """A write to an ro register gets SLVERR and changes nothing (twin: PermissionError)."""
    b = await _bench(dut)
    rng = random.Random(2)
    for name in [
        *PAIRS,
        *(r.name for r in RO if r.name not in CONSTANTS and r.name[:-3] not in PAIRS),
    ]:
        b.drive(name, rng.getrandbits(64 if name in PAIRS else 32))
    for r in RO:
        try:
            b.model.write(r.name, 0xDEAD_BEEF)
        except PermissionError:
            pass
        else:
            raise AssertionError(f"twin accepted a write to ro {r.name}")
        assert await b.axi.write(r.offset, 0xDEAD_BEEF) == SLVERR, r.name
        await b.check_read(r.name)
    for r in REGISTERS:
        await b.check_read(r.name)
    b.check_outputs()


@cocotb.test()
async def unmapped_addresses_slverr(dut) -> None:
    b = await _bench(dut)
    for r in RW:  # non-reset values, to see that nothing moves
        value = 0x5A5A_5A5A & ~CLEAR
        assert await b.axi.write(r.offset, value) == OKAY
        b.model.write(r.name, value)
    for addr in UNMAPPED:
        try:
            b.model.read(addr)
        except KeyError:
            pass
        else:
            raise AssertionError(f"twin has a register at {addr:#x}")
        assert await b.axi.write(addr, 0xFFFF_FFFF) == SLVERR, f"write {addr:#x}"
        data, resp = await b.axi.read(addr)
        assert (data, resp) == (0, SLVERR), f"read {addr:#x}: {data:#x} {resp:#b}"
    for r in REGISTERS:
        await b.check_read(r.name)
    b.check_outputs()
    assert int(dut.clear_counters.value) == 0


@cocotb.test()
async def ro_inputs_and_lo_hi_latch(dut) -> None:
    b = await _bench(dut)
    rng = random.Random(3)
    for _ in range(3):
        for name in PAIRS:
            b.drive(name, rng.getrandbits(64))
        for r in RO:
            if r.name not in CONSTANTS and r.name[:-3] not in PAIRS:
                b.drive(r.name, rng.getrandbits(32))
        for base in PAIRS:  # LO then HI is the 64-bit value
            lo = await b.check_read(f"{base}_LO")
            hi = await b.check_read(f"{base}_HI")
            assert lo | hi << 32 == b.model.read64(base)
        for r in RO:
            await b.check_read(r.name)
    # HI is the half latched by the last LO read, not the live value.
    b.drive("CYCLE", 0x0000_0001_FFFF_FFF0)
    await b.check_read("CYCLE_LO")
    b.drive("CYCLE", 0x0000_0007_0000_0003)
    assert await b.check_read("CYCLE_HI") == 0x1
    assert await b.check_read("CYCLE_LO") == 0x3
    assert await b.check_read("CYCLE_HI") == 0x7


@cocotb.test()
async def lo_hi_snapshot_of_a_running_counter(dut) -> None:
    """A counter carrying out of LO while software reads: LO-then-HI never tears."""
    b = await _bench(dut)
    start = 0x0000_0002_FFFF_FFC0
    count = {"v": start}

    async def run() -> None:
        while True:
            await RisingEdge(dut.aclk)
            count["v"] += 1
            dut.cycle.value = count["v"]

    task = cocotb.start_soon(run())
    seen = []
    for _ in range(30):
        before = count["v"]
        lo, r1 = await b.axi.read(BY_NAME["CYCLE_LO"].offset)
        hi, r2 = await b.axi.read(BY_NAME["CYCLE_HI"].offset)
        assert (r1, r2) == (OKAY, OKAY)
        value = lo | hi << 32
        assert before <= value <= count["v"], f"torn read {value:#x} not in [{before:#x}, ...]"
        seen.append(value)
    task.cancel()
    assert seen[0] < 0x3_0000_0000 <= seen[-1], "the carry out of LO was exercised"


@cocotb.test()
async def clear_counters_pulse(dut) -> None:
    b = await _bench(dut)
    pulses: list[int] = []

    async def watch() -> None:
        cycle = 0
        while True:
            await RisingEdge(dut.aclk)
            await Timer(1, unit="ns")
            cycle += 1
            if int(dut.clear_counters.value):
                pulses.append(cycle)

    task = cocotb.start_soon(watch())
    ctrl = BY_NAME["CTRL"].offset
    enable = 1 << CTRL_BITS["ENABLE"]
    assert await b.axi.write(ctrl, enable | CLEAR) == OKAY
    b.model.write("CTRL", enable)  # the twin keeps the bit; the RTL self-clears it
    await b.check_read("CTRL")
    assert len(pulses) == 1, f"one pulse, got {pulses}"
    assert int(dut.ctrl_enable.value) == 1 and int(dut.ctrl_lockstep.value) == 0
    # CLEAR with its byte lane strobed off: no pulse, nothing written.
    assert await b.axi.write(ctrl, CLEAR | 1 << 9, strb=0x2) == OKAY
    b.model.write("CTRL", enable | 1 << 9)
    await b.check_read("CTRL")
    assert len(pulses) == 1
    # Writing 0 to CLEAR: no pulse. Two clears: two single-cycle pulses.
    assert await b.axi.write(ctrl, 1 << CTRL_BITS["LOCKSTEP"]) == OKAY
    b.model.write("CTRL", 1 << CTRL_BITS["LOCKSTEP"])
    assert len(pulses) == 1
    for _ in range(2):
        assert await b.axi.write(ctrl, CLEAR) == OKAY
    b.model.write("CTRL", 0)
    await b.check_read("CTRL")
    task.cancel()
    assert len(pulses) == 3 and pulses[1] + 1 < pulses[2], pulses
    b.check_outputs()
