"""The front end's AXI-Lite register map, defined once, and its config-only twin.

``REGISTERS`` is the single description of the register block. The cycle
model keeps its control values and counters in a ``RegisterFile`` (the
off-board twin); a PYNQ driver reads and writes the same names through MMIO.
Every register is 32 bits wide at a 4-byte aligned offset. 64-bit values are
LO/HI pairs; read LO first (the RTL latches HI when LO is read).

>>> regs = RegisterFile()
>>> regs.read("ROUND_PERIOD")
250
>>> regs.write("BUDGET", 2500)
>>> regs.read("BUDGET")
2500
>>> regs.write("ROUNDS_EMITTED_LO", 1)
Traceback (most recent call last):
...
PermissionError: register ROUNDS_EMITTED_LO is read-only (ro); writable registers: CTRL, ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

__all__ = ["CTRL_BITS", "REGISTERS", "STATUS_BITS", "Register", "RegisterFile"]

ACCESS = ("rw", "ro")


@dataclasses.dataclass(frozen=True)
class Register:
    """One 32-bit register: its name, byte offset, access and reset value."""

    name: str
    offset: int
    access: str
    reset: int
    doc: str

    def __post_init__(self) -> None:
        if self.offset % 4 or self.offset < 0:
            raise ValueError(f"{self.name}: offset {self.offset:#x} is not 4-byte aligned")
        if self.access not in ACCESS:
            raise ValueError(f"{self.name}: access must be one of {ACCESS}; got {self.access!r}")
        if not 0 <= self.reset < 2**32:
            raise ValueError(f"{self.name}: reset value {self.reset} does not fit in 32 bits")


# CTRL bits.
CTRL_BITS = {"ENABLE": 0, "LOCKSTEP": 1, "CLEAR_COUNTERS": 2}
# STATUS bits.
STATUS_BITS = {"RUNNING": 0, "DONE": 1, "DECODER_UNRESPONSIVE": 2, "BACKPRESSURE": 3}


def _pair(name: str, offset: int, doc: str) -> tuple[Register, Register]:
    return (
        Register(f"{name}_LO", offset, "ro", 0, f"{doc} (bits 31:0)"),
        Register(f"{name}_HI", offset + 4, "ro", 0, f"{doc} (bits 63:32)"),
    )


REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "ro", 0x5148_494C, "IP identifier, ASCII 'QHIL'"),
    Register("VERSION", 0x04, "ro", 0x0001_0001, "IP version (16:16 major:minor) = wire v1"),
    Register(
        "CTRL", 0x08, "rw", 0, "bit0 ENABLE, bit1 LOCKSTEP, bit2 CLEAR_COUNTERS (self-clearing)"
    ),
    Register(
        "STATUS",
        0x0C,
        "ro",
        0,
        "bit0 RUNNING, bit1 DONE, bit2 DECODER_UNRESPONSIVE, bit3 BACKPRESSURE",
    ),
    Register("STREAM_ID", 0x10, "rw", 0, "stream_id stamped into every syndrome packet"),
    Register(
        "ROUND_PERIOD", 0x14, "rw", 250, "QEC round clock period in fabric cycles (1 us at 250 MHz)"
    ),
    Register(
        "BUDGET", 0x18, "rw", 2500, "reaction-latency budget in fabric cycles (10 us at 250 MHz)"
    ),
    Register(
        "CORR_TIMEOUT",
        0x1C,
        "rw",
        250_000_000,
        "cycles a shot waits for its correction before it is lost",
    ),
    Register("FABRIC_MHZ", 0x20, "ro", 250, "fabric clock frequency in MHz"),
    *_pair("CYCLE", 0x28, "free-running fabric cycle counter"),
    *_pair("ROUNDS_EMITTED", 0x30, "rounds emitted (syndrome packets, end-of-stream excluded)"),
    *_pair("SHOTS_DECODED", 0x38, "shots whose correction arrived and was applied"),
    Register("ROUNDS_BACKPRESSURE", 0x40, "ro", 0, "rounds dropped because the bridge was full"),
    Register("CORR_ACCEPTED", 0x44, "ro", 0, "correction packets accepted"),
    Register("CORR_BAD_MAGIC", 0x48, "ro", 0, "corrections rejected: bad magic"),
    Register("CORR_BAD_VERSION", 0x4C, "ro", 0, "corrections rejected: bad version"),
    Register("CORR_TRUNCATED", 0x50, "ro", 0, "corrections rejected: truncated"),
    Register("CORR_BAD_CRC", 0x54, "ro", 0, "corrections rejected: bad CRC"),
    Register("CORR_BAD_LENGTH", 0x58, "ro", 0, "corrections rejected: length or layout mismatch"),
    Register("CORR_BAD_FIELD", 0x5C, "ro", 0, "corrections rejected: undefined field value"),
    Register("CORR_UNKNOWN_STREAM", 0x60, "ro", 0, "corrections rejected: unknown stream"),
    Register("CORR_UNKNOWN_SHOT", 0x64, "ro", 0, "corrections rejected: shot not awaiting one"),
    Register("CORR_DUPLICATE", 0x68, "ro", 0, "corrections rejected: shot already resolved"),
    Register("SHOTS_INCOMPLETE", 0x6C, "ro", 0, "shots the decoder reported incomplete"),
    Register("SHOTS_DECODER_ERROR", 0x70, "ro", 0, "shots the decoder failed on"),
    Register("SHOTS_TIMED_OUT", 0x74, "ro", 0, "shots whose correction never came"),
    Register("BUDGET_MISSES", 0x78, "ro", 0, "corrections that arrived after the budget"),
    Register("LAT_LAST", 0x7C, "ro", 0, "reaction latency of the last correction, cycles"),
    Register("LAT_MAX", 0x80, "ro", 0, "largest reaction latency seen, cycles"),
    Register(
        "LOGICAL_FRAME", 0x84, "ro", 0, "logical Pauli frame: bit i = observable i flipped (parity)"
    ),
)


class RegisterFile:
    """Config-only twin of the register block: the same names and rules, no board.

    Reads and writes go by name or byte offset. Software may write only ``rw``
    registers; the model updates counters with ``set`` (hardware-side access).
    """

    def __init__(self) -> None:
        self._by_name = {r.name: r for r in REGISTERS}
        self._by_offset = {r.offset: r for r in REGISTERS}
        self._index = {r.name: i for i, r in enumerate(REGISTERS)}
        self._values = np.array([r.reset for r in REGISTERS], dtype=np.uint32)

    def __iter__(self) -> Iterator[Register]:
        return iter(REGISTERS)

    def _lookup(self, key: str | int) -> Register:
        reg = self._by_offset.get(key) if isinstance(key, int) else self._by_name.get(key)
        if reg is None:
            what = f"offset {key:#x}" if isinstance(key, int) else f"name {key!r}"
            valid = ", ".join(self._by_name)
            raise KeyError(f"no register at {what}; registers: {valid}")
        return reg

    def read(self, key: str | int) -> int:
        return int(self._values[self._index[self._lookup(key).name]])

    def read64(self, name: str) -> int:
        """A LO/HI pair as one 64-bit value, e.g. ``read64("CYCLE")``."""
        return self.read(f"{name}_LO") | (self.read(f"{name}_HI") << 32)

    def write(self, key: str | int, value: int) -> None:
        """Software write; only ``rw`` registers accept one."""
        reg = self._lookup(key)
        if reg.access != "rw":
            writable = ", ".join(r.name for r in REGISTERS if r.access == "rw")
            raise PermissionError(
                f"register {reg.name} is read-only ({reg.access}); writable registers: {writable}"
            )
        self.set(reg.name, value)

    def set(self, name: str, value: int) -> None:
        """Hardware-side update (the model's counters); wraps to 32 bits like the RTL."""
        self._values[self._index[self._lookup(name).name]] = value & 0xFFFF_FFFF

    def set64(self, name: str, value: int) -> None:
        self.set(f"{name}_LO", value)
        self.set(f"{name}_HI", value >> 32)

    def snapshot(self) -> dict[str, int]:
        """Every register's value by name, for reports."""
        return {r.name: int(v) for r, v in zip(REGISTERS, self._values, strict=True)}
