"""Register maps per IP, accessed by name over anything with MMIO-style ``read``/``write``.

The QICK pattern: each IP in the overlay gets a class that knows its register
map and turns names into offsets. ``RegisterBlock`` does that for any map and
any ``Mmio`` (``pynq.MMIO`` on a board, the cycle-model twin off-board):

- ``frontend_registers(mmio)``: the ``qhil_frontend`` block, map ``REGISTERS``
  (``fpga/_regmap.py``, the one definition the RTL header is generated from).
- ``dma_registers(mmio)``: an AXI DMA's simple-mode registers (Xilinx PG021),
  read for status and errors; the transfers themselves go through PYNQ's
  ``DMA`` driver.

Writes to read-only registers are refused in Python, before the bus is
touched: on a Zynq an AXI SLVERR from a write can surface as an asynchronous
abort. 64-bit values are LO/HI pairs read LO first (the RTL latches HI when LO
is read, so the pair never tears).

>>> from qhil.fpga._regmap import RegisterFile
>>> class Twin:
...     def __init__(self): self.file = RegisterFile()
...     def read(self, offset): return self.file.read(offset)
...     def write(self, offset, value): self.file.set(self.file._lookup(offset).name, value)
>>> regs = frontend_registers(Twin())
>>> regs["BUDGET"] = 1000
>>> regs["BUDGET"], regs.read64("CYCLE")
(1000, 0)
>>> regs["CYCLE_LO"] = 5
Traceback (most recent call last):
...
PermissionError: qhil_frontend register CYCLE_LO is read-only; writable registers: CTRL, ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from qhil.fpga._regmap import REGISTERS, Register

__all__ = [
    "AXI_DMA_REGISTERS",
    "DMASR_BITS",
    "Mmio",
    "RegisterBlock",
    "decode_dmasr",
    "dma_registers",
    "frontend_registers",
]


class Mmio(Protocol):
    """32-bit register access at byte offsets (``pynq.MMIO`` has this shape)."""

    def read(self, offset: int) -> int: ...

    def write(self, offset: int, value: int) -> None: ...


class RegisterBlock:
    """One IP's registers by name: ``block["NAME"]``, ``block["NAME"] = v``, ``read64``.

    Args:
        mmio: the IP's register window; offsets are relative to its base.
        registers: the IP's map (32-bit registers, byte offsets).
        ip: the IP's name, for error messages.
    """

    def __init__(self, mmio: Mmio, registers: tuple[Register, ...], *, ip: str) -> None:
        self.mmio = mmio
        self.ip = ip
        self._map = {r.name: r for r in registers}
        self._registers = registers

    def __iter__(self) -> Iterator[Register]:
        return iter(self._registers)

    def register(self, name: str) -> Register:
        """The map entry for ``name``; KeyError listing the valid names otherwise."""
        reg = self._map.get(name)
        if reg is None:
            raise KeyError(f"{self.ip} has no register {name!r}; registers: {', '.join(self._map)}")
        return reg

    def read(self, name: str) -> int:
        return int(self.mmio.read(self.register(name).offset)) & 0xFFFF_FFFF

    def read64(self, name: str) -> int:
        """A LO/HI pair as one value, e.g. ``read64("CYCLE")``: LO first, then HI."""
        lo = self.read(f"{name}_LO")
        return lo | self.read(f"{name}_HI") << 32

    def write(self, name: str, value: int) -> None:
        reg = self.register(name)
        if reg.access != "rw":
            writable = ", ".join(r.name for r in self._registers if r.access == "rw")
            raise PermissionError(
                f"{self.ip} register {name} is read-only; writable registers: {writable}"
            )
        if not isinstance(value, int) or not 0 <= value < 2**32:
            raise ValueError(
                f"{self.ip} register {name} is 32 bits wide; got {value!r} "
                "(pass an int in 0 .. 2**32 - 1)"
            )
        self.mmio.write(reg.offset, int(value))

    __getitem__ = read
    __setitem__ = write

    def snapshot(self) -> dict[str, int]:
        """Every register by name, in address order (so each LO is read before its HI)."""
        return {r.name: self.read(r.name) for r in sorted(self._registers, key=lambda r: r.offset)}


def frontend_registers(mmio: Mmio) -> RegisterBlock:
    """The ``qhil_frontend`` IP's AXI-Lite block (map: ``qhil.fpga.REGISTERS``)."""
    return RegisterBlock(mmio, REGISTERS, ip="qhil_frontend")


# Xilinx AXI DMA v7.1, simple (direct register) mode; PG021, "Register Space".
AXI_DMA_REGISTERS: tuple[Register, ...] = (
    Register("MM2S_DMACR", 0x00, "rw", 0x0001_0000, "MM2S control: bit0 RS (run), bit2 reset"),
    Register("MM2S_DMASR", 0x04, "rw", 0x0000_0001, "MM2S status (see DMASR_BITS; IRQs W1C)"),
    Register("MM2S_SA", 0x18, "rw", 0, "MM2S source address, bits 31:0"),
    Register("MM2S_SA_MSB", 0x1C, "rw", 0, "MM2S source address, bits 63:32"),
    Register("MM2S_LENGTH", 0x28, "rw", 0, "MM2S bytes to transfer; writing it starts"),
    Register("S2MM_DMACR", 0x30, "rw", 0x0001_0000, "S2MM control: bit0 RS (run), bit2 reset"),
    Register("S2MM_DMASR", 0x34, "rw", 0x0000_0001, "S2MM status (see DMASR_BITS; IRQs W1C)"),
    Register("S2MM_DA", 0x48, "rw", 0, "S2MM destination address, bits 31:0"),
    Register("S2MM_DA_MSB", 0x4C, "rw", 0, "S2MM destination address, bits 63:32"),
    Register("S2MM_LENGTH", 0x58, "rw", 0, "S2MM buffer bytes; after completion: bytes received"),
)

# DMASR bits (both channels).
DMASR_BITS = {
    "HALTED": 0,
    "IDLE": 1,
    "SG_INCLUDED": 3,
    "INTERNAL_ERROR": 4,
    "SLAVE_ERROR": 5,
    "DECODE_ERROR": 6,
    "IOC_IRQ": 12,
    "ERR_IRQ": 14,
}


def dma_registers(mmio: Mmio, *, ip: str = "axi_dma") -> RegisterBlock:
    """An AXI DMA's registers (map: ``AXI_DMA_REGISTERS``)."""
    return RegisterBlock(mmio, AXI_DMA_REGISTERS, ip=ip)


def decode_dmasr(value: int) -> dict[str, bool]:
    """DMASR as named flags.

    >>> [k for k, v in decode_dmasr(0x0000_4021).items() if v]
    ['HALTED', 'SLAVE_ERROR', 'ERR_IRQ']
    """
    return {name: bool(value >> bit & 1) for name, bit in DMASR_BITS.items()}
