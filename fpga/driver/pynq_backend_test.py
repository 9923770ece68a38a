"""The board backend's calls into PYNQ, checked against a FAKE ``pynq`` module.

These tests do not touch a board. A stand-in ``pynq`` (Overlay, MMIO,
allocate, Device, and DMA channels with PYNQ 3's ``_SDMAChannel`` rules) is
put into ``sys.modules``; behind its MMIO and DMA channels sits the
software twin, moving data whenever any fake call is made, as fabric would.
What they prove: the overlay is loaded as PYNQ wants, the right IP and
offsets are used, LO is read before HI, read-only registers never reach the
bus, DMA transfers have the documented buffers, offsets and lengths, and
every wrong setup fails with a clear error. What only a board can prove is in
``driver_test.py``'s ``board``-marked test.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import stim

from qhil.bridge import packet_buffers, syndrome_size
from qhil.fpga import FrontEnd, FrontEndConfig, FrontEndTimeout
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._testing import drain_syndromes, exchange_and_check, surface_circuit
from qhil.fpga.driver._driver_model import FrontEndTwin
from qhil.fpga.driver._driver_program import ProgramManifest, manifest_path
from qhil.fpga.driver._pynq_backend import CORRECTION_BYTES

FRONTEND_ADDR = 0xA000_0000
_DMA = "xilinx.com:ip:axi_dma:7.1"


class FakeBuffer(np.ndarray):
    """Stands in for ``pynq.buffer.PynqBuffer``."""

    physical_address = 0
    freed = False

    def freebuffer(self) -> None:
        self.freed = True

    def flush(self) -> None:
        pass

    def invalidate(self) -> None:
        pass


class FakeChannel:
    """PYNQ 3 ``_SDMAChannel``'s rules: ``idle`` is False until a first transfer has
    finished; ``transfer`` refuses a busy channel; ``wait`` spins until idle."""

    def __init__(self, fabric: Fabric, move: Any) -> None:
        self.fabric, self._move = fabric, move
        self.running, self._first_transfer, self._done = True, True, False
        self._busy: tuple[FakeBuffer, int, int] | None = None
        self.transferred = 0
        self.transfers: list[tuple[int, int]] = []

    def step(self) -> None:
        if self._busy is not None:
            buf, start, nbytes = self._busy
            n = self._move(buf.reshape(-1).view(np.uint8)[start : start + nbytes])
            if n:
                self._busy, self._done, self._len = None, True, n

    @property
    def idle(self) -> bool:
        self.fabric.step()
        return self._done and self._busy is None

    def transfer(self, array: Any, start: int = 0, nbytes: int = 0) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        if not self.idle and not self._first_transfer:
            raise RuntimeError("DMA channel not idle")
        assert isinstance(array, FakeBuffer), "DMA needs a pynq.allocate buffer"
        assert (array.physical_address + start) % 8 == 0, "unaligned for a 64-bit DMA"
        nbytes = nbytes or array.nbytes - start
        self.transfers.append((start, nbytes))
        self._busy, self._done, self._first_transfer = (array, start, nbytes), False, False
        self.fabric.step()

    def wait(self) -> None:
        assert self.idle, "wait() on a busy channel spins forever on a board"
        self.transferred = self._len

    def stop(self) -> None:
        self.running = False


class FakeMMIO:
    def __init__(self, fabric: Fabric, base: int, length: int) -> None:
        self.fabric, self.base, self.length = fabric, base, length

    def read(self, offset: int = 0, length: int = 4) -> int:
        self.fabric.step()
        self.fabric.log.append(("read", self.base, offset))
        return self.fabric.device_read(self.base, offset)

    def write(self, offset: int, value: int) -> None:
        self.fabric.log.append(("write", self.base, offset, value))
        self.fabric.device_write(self.base, offset, value)
        self.fabric.step()


class Fabric:
    """The fake board: the twin as the qhil_frontend IP, two DMAs, a bus log."""

    def __init__(self, circuit: stim.Circuit, *, fifo_packets: int = 1024) -> None:
        program = DetectorProgram.from_circuit(circuit)
        self.twin = FrontEndTwin(
            program, circuit.num_observables, reason="fake", fifo_packets=fifo_packets
        )
        self.log: list[tuple[Any, ...]] = []
        self.allocations: list[FakeBuffer] = []
        self.overlays: list[tuple[str, bool]] = []
        self.dmasr = {0x04: 0b10, 0x34: 0b10}
        row = np.zeros(4096, dtype=np.uint8)

        def take_round(data: np.ndarray) -> int:
            return data.size if self.twin.send_round(data, 0, data.size, 0.0) else 0

        def take_correction(data: np.ndarray) -> int:
            return data.size if self.twin.send_packet(data.copy(), 0.0) else 0

        def give_syndrome(data: np.ndarray) -> int:
            n = self.twin.recv_packet(row, 0.0)
            assert n <= data.size, "the S2MM buffer is smaller than a packet"
            data[:n] = row[:n]
            return n

        self.replay = types.SimpleNamespace(
            sendchannel=FakeChannel(self, take_round),
            recvchannel=None,
            mmio=FakeMMIO(self, 0xA001_0000, 0x1000),
        )
        self.link = types.SimpleNamespace(
            sendchannel=FakeChannel(self, take_correction),
            recvchannel=FakeChannel(self, give_syndrome),
            mmio=FakeMMIO(self, 0xA002_0000, 0x1000),
        )
        self.ip_dict: dict[str, dict[str, Any]] = {
            "qhil_frontend_0": {
                "type": "xilinx.com:module_ref:qhil_frontend:1.0",
                "phys_addr": FRONTEND_ADDR,
                "addr_range": 0x1000,
            },
            "axi_dma_link": {"type": _DMA, "phys_addr": 0xA002_0000, "addr_range": 0x1000},
            "axi_dma_replay": {"type": _DMA, "phys_addr": 0xA001_0000, "addr_range": 0x1000},
        }

    def step(self) -> None:
        for ch in (self.replay.sendchannel, self.link.sendchannel, self.link.recvchannel):
            ch.step()

    def device_read(self, base: int, offset: int) -> int:
        if base == FRONTEND_ADDR:
            return self.twin.read(offset)
        return self.dmasr.get(offset, 0)

    def device_write(self, base: int, offset: int, value: int) -> None:
        assert base == FRONTEND_ADDR, "the driver writes DMA registers only through PYNQ"
        self.twin.write(offset, value)

    def module(self) -> types.ModuleType:
        fabric = self
        mod = types.ModuleType("pynq")

        class Overlay:
            def __init__(self, bitfile_name: str, download: bool = True) -> None:
                fabric.overlays.append((bitfile_name, download))
                self.ip_dict = fabric.ip_dict
                self.axi_dma_link, self.axi_dma_replay = fabric.link, fabric.replay

        def allocate(shape: Any, dtype: Any = "u4", **kwargs: Any) -> FakeBuffer:
            buf = np.zeros(shape, dtype=dtype).view(FakeBuffer)
            buf.physical_address = 0x1000_0000 + 0x10_0000 * len(fabric.allocations)
            fabric.allocations.append(buf)
            return buf

        mod.Overlay = Overlay  # type: ignore[attr-defined]
        mod.MMIO = lambda base, length: FakeMMIO(fabric, base, length)  # type: ignore[attr-defined]
        mod.allocate = allocate  # type: ignore[attr-defined]
        mod.Device = types.SimpleNamespace(  # type: ignore[attr-defined]
            devices=[types.SimpleNamespace(name="RFSoC4x2")]
        )
        return mod


@pytest.fixture
def circuit() -> stim.Circuit:
    return surface_circuit(p=0.05)


@pytest.fixture
def bitstream(tmp_path: Path, circuit: stim.Circuit) -> Path:
    bit = tmp_path / "qhil_rfsoc4x2.bit"
    bit.write_bytes(b"bits")
    bit.with_suffix(".hwh").write_text("<hwh/>")
    ProgramManifest.from_circuit(circuit).save(manifest_path(bit))
    return bit


@pytest.fixture
def fabric(circuit: stim.Circuit, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fabric]:
    fab = Fabric(circuit)
    monkeypatch.setitem(sys.modules, "pynq", fab.module())
    yield fab


def _open(circuit: stim.Circuit, bitstream: Path, **kw: Any) -> FrontEnd:
    return FrontEnd.open(circuit, target="board", bitstream=bitstream, **kw)


def test_open_loads_the_overlay_and_maps_the_frontend(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    fe = _open(circuit, bitstream)
    _open(circuit, bitstream, download=False)
    assert fabric.overlays == [(str(bitstream), True), (str(bitstream), False)]
    assert fe.target == "board"
    assert fe.description == f"board RFSoC4x2, bitstream {bitstream}"
    assert fabric.log[:2] == [("read", FRONTEND_ADDR, 0x00), ("read", FRONTEND_ADDR, 0x04)]
    rx, tx = fabric.allocations[:2]
    assert rx.dtype == np.uint8 and rx.shape == (-(-syndrome_size(8) // 8) * 8,)
    assert tx.dtype == np.uint8 and tx.shape == (CORRECTION_BYTES,)


def test_registers_go_through_mmio_at_the_map_offsets(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    fe = _open(circuit, bitstream)
    fabric.log.clear()
    fe.regs.read64("SHOTS_DECODED")
    assert fabric.log == [("read", FRONTEND_ADDR, 0x38), ("read", FRONTEND_ADDR, 0x3C)]
    fabric.log.clear()
    fe.regs["BUDGET"] = 1234
    assert fabric.log == [("write", FRONTEND_ADDR, 0x18, 1234)]
    fabric.log.clear()
    with pytest.raises(PermissionError, match="LAT_MAX is read-only"):
        fe.regs["LAT_MAX"] = 0
    assert fabric.log == [], "a read-only register never reaches the bus"


def test_exchange_through_the_fake_dmas(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    fe = _open(circuit, bitstream)
    exchange_and_check(fe, circuit, shots=6)
    replay = fabric.allocations[2]
    prog = fe.program
    assert replay.dtype == np.uint64 and replay.shape == (6 * prog.num_rounds, 2)
    assert fabric.replay.sendchannel.transfers == [(row * 16, 16) for row in range(18)]
    rx_size = fabric.allocations[0].nbytes
    assert set(fabric.link.recvchannel.transfers) == {(0, rx_size)}
    assert [start for start, _ in fabric.link.sendchannel.transfers] == [0] * 6


def test_back_pressure_times_out_with_an_exact_resume_point(
    circuit: stim.Circuit, bitstream: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qhil.fpga.driver._pynq_backend as backend

    # The IP holds 1 packet and the host-side queue 1 more: lockstep must push back.
    monkeypatch.setattr(backend, "RX_QUEUE", 1)
    fabric = Fabric(circuit, fifo_packets=1)
    monkeypatch.setitem(sys.modules, "pynq", fabric.module())
    fe = _open(circuit, bitstream, config=FrontEndConfig(), timeout_s=0.01)
    fe.start()
    replay = fe.replay_buffer(np.zeros((2, circuit.num_measurements), dtype=bool))
    got, start, timeouts = [], 0, 0
    while True:
        try:
            fe.send_measurements(replay, start_round=start)
            break
        except FrontEndTimeout as ex:
            assert ex.rounds_sent > start, "a started transfer counts as sent"
            start, timeouts = ex.rounds_sent, timeouts + 1
            got += drain_syndromes(fe)
    got += drain_syndromes(fe)
    assert timeouts >= 1
    assert [(p.shot, p.round) for p in got] == [(s, t) for s in range(2) for t in range(3)]


def test_dma_status_reads_dmasr_by_name(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    fe = _open(circuit, bitstream)
    fabric.dmasr[0x34] = 0x0000_4021  # S2MM halted with a slave error
    status = fe.dma_status()
    assert status["syndromes"]["SLAVE_ERROR"] and status["syndromes"]["HALTED"]
    assert status["corrections"]["IDLE"] and not status["corrections"]["SLAVE_ERROR"]
    assert set(status) == {"replay", "syndromes", "corrections"}


def test_close_halts_used_channels_and_frees_every_buffer(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    fe = _open(circuit, bitstream)
    fe.start()
    fe.send_measurements(np.zeros((1, circuit.num_measurements), dtype=bool))
    out, lengths = packet_buffers(1, fe.max_packet)
    fe.recv_syndromes(out, lengths)
    fe.close()
    assert all(buf.freed for buf in fabric.allocations)
    assert not fabric.link.recvchannel.running and not fabric.replay.sendchannel.running
    assert fabric.link.sendchannel.running, "an unused channel is left alone"


def test_wrong_setups_fail_clearly(fabric: Fabric, circuit: stim.Circuit, bitstream: Path) -> None:
    bit = bitstream
    with pytest.raises(KeyError, match="no IP 'qhil_0'; its IPs: qhil_frontend_0, axi_dma_link"):
        _open(circuit, bit, ip_name="qhil_0")
    with pytest.raises(RuntimeError, match=r"reads ID 0x00000000.*check ip_name="):
        _open(circuit, bit, ip_name="axi_dma_link")
    fabric.ip_dict["qhil_frontend_1"] = dict(fabric.ip_dict["qhil_frontend_0"])
    with pytest.raises(KeyError, match=r"2 qhil_frontend IPs.*Pass ip_name="):
        _open(circuit, bit)
    assert _open(circuit, bit, ip_name="qhil_frontend_1").target == "board"
    saved = fabric.ip_dict.pop("qhil_frontend_0")
    del fabric.ip_dict["qhil_frontend_1"]
    with pytest.raises(
        KeyError,
        match=r"no qhil_frontend IP; its IPs: axi_dma_link, axi_dma_replay\. Pass ip_name=",
    ):
        _open(circuit, bit)
    fabric.ip_dict["qhil_frontend_0"] = saved
    del fabric.ip_dict["axi_dma_replay"]
    with pytest.raises(KeyError, match="no AXI DMA named 'axi_dma_replay'; its DMAs: axi_dma_link"):
        _open(circuit, bit)


def test_bitstream_files_and_program_are_checked(
    fabric: Fabric, circuit: stim.Circuit, bitstream: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing.bit does not exist.*fpga/vivado"):
        _open(circuit, bitstream.with_name("missing.bit"))
    with pytest.raises(ValueError, match=r"must be a \.bit file"):
        _open(circuit, bitstream.with_suffix(".hwh"))
    other = surface_circuit("x", 3, 2)
    with pytest.raises(ValueError, match=r"built for another circuit.*rom_sha256"):
        _open(other, bitstream)
    assert _open(other, bitstream, check_program=False).target == "board"
    manifest_path(bitstream).unlink()
    with pytest.raises(ValueError, match=r"cannot read the program manifest.*build.tcl"):
        _open(circuit, bitstream)
    bitstream.with_suffix(".hwh").unlink()
    with pytest.raises(FileNotFoundError, match=r"qhil_rfsoc4x2\.hwh is missing.*Overlay"):
        _open(circuit, bitstream)
    assert fabric.overlays == [(str(bitstream), True)], "nothing loaded before the checks pass"
