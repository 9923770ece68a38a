"""Cycle-accurate models of the leaf modules inside ``rtl/qhil_frontend.v``.

Each class mirrors one Verilog module register by register: its attributes are
the module's registers, and ``step`` is one rising edge, computing every next
value from the values before the edge (non-blocking assignment). Values are
Python ints holding the bit vectors (bit i of the int is bit i of the vector).
``FrontendModel`` wires them together; see it for the ports.

* ``DetectionUnitModel``: ``qhil_detection_unit.v`` (2-cycle XOR network, ROM program);
* ``PacketizerModel``: ``qhil_packetizer.v`` (64-bit wire-v1 syndrome packets);
* ``CorrectionRxModel``: ``qhil_correction_rx.v`` (reason and fields per packet);
* ``RegsModel``: ``qhil_regs.v`` (AXI4-Lite register block).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from qhil.bridge import SYNDROME_HEADER_SIZE, Reason, parse_correction
from qhil.fpga._regmap import CTRL_BITS, REGISTERS
from qhil.fpga.rtl_model._detprog_rom import CNT_WIDTH, RomLayout

__all__ = ["CorrectionRxModel", "DetectionUnitModel", "PacketizerModel", "RegsModel"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


def _clog2(n: int) -> int:
    return max(0, (n - 1).bit_length())


class DetectionUnitModel:
    """``qhil_detection_unit``: a round in on one edge, its detection events two edges later.

    Built from the ROM words (``encode_rom``) so that it reads exactly what the RTL reads,
    including past-the-program rounds and junk held in ``prev``.
    """

    def __init__(self, words: Sequence[int], layout: RomLayout) -> None:
        self.max_meas = layout.max_meas
        self.rounds_max = layout.rounds_max
        self.addr_mask = (1 << max(1, _clog2(layout.rounds_max))) - 1
        # Per ROM word: (n_dets, [(mask over the window {0, cur, prev}, ref)] for i < n_dets).
        self.programs: list[tuple[int, list[tuple[int, int]]]] = []
        win_n = 2 * layout.max_meas
        for word in words:
            n_dets = (word >> (layout.max_dets * layout.entry_width + CNT_WIDTH)) & 0xFFFF
            dets = []
            for i in range(min(n_dets, layout.max_dets)):
                entry = word >> (i * layout.entry_width)
                mask = 0
                for k in range(layout.max_terms):
                    idx = (entry >> (1 + k * layout.idx_width)) & ((1 << layout.idx_width) - 1)
                    if idx < win_n:  # indices at and past 2*MAX_MEAS read constant 0
                        mask ^= 1 << idx  # a repeated term cancels, as in the XOR
                dets.append((mask, entry & 1))
            self.programs.append((n_dets, dets))
        self.prev = 0
        self.s1_valid = 0
        self.s1_bad = 0
        self.s1_round = 0
        self.s1_cur = 0
        self.s1_prev = 0
        self.dets_valid = 0
        self.dets = 0
        self.n_dets = 0

    def step(self, meas_valid: int, meas: int, round_index: int) -> None:
        if self.s1_valid:
            n_dets, dets = (0, []) if self.s1_bad else self.programs[self.s1_round]
            window = (self.s1_cur << self.max_meas) | self.s1_prev
            value = 0
            for i, (mask, ref) in enumerate(dets):
                value |= (((window & mask).bit_count() & 1) ^ ref) << i
            self.dets, self.n_dets = value, n_dets
        self.dets_valid = self.s1_valid
        self.s1_valid = meas_valid
        if meas_valid:
            self.s1_bad = int(round_index >= self.rounds_max)
            self.s1_round = round_index & self.addr_mask
            self.s1_cur = meas
            self.s1_prev = self.prev
            self.prev = meas


_PH_FULL, _PH_T4, _PH_T2, _PH_T1, _PH_DONE = range(5)


def _after(left: int) -> int:
    """The CRC's next phase, given the tail bytes still to take (bit 2: 4, bit 1: 2, bit 0: 1)."""
    if left & 4:
        return _PH_T4
    if left & 2:
        return _PH_T2
    if left & 1:
        return _PH_T1
    return _PH_DONE


class PacketizerModel:
    """``qhil_packetizer``: the CRC phases and the output register, beat by beat.

    The CRC's intermediate states never reach a port, so only its phase is
    tracked; the value the beats carry is ``zlib.crc32`` of the body.
    """

    def __init__(self, max_bits: int) -> None:
        self.max_bits = max_bits
        self.nw = (SYNDROME_HEADER_SIZE + (max_bits + 7) // 8 + 7) // 8
        self.busy = 0
        self.out_valid = 0
        self.out_data = 0
        self.out_keep = 0
        self.out_last = 0
        self.phase = _PH_DONE
        self.cidx = 0
        self.oidx = 0
        self.words: list[int] = [0] * self.nw
        self.nfull = self.rem = self.lastw = self.lastkeep = self.crc = 0

    def start_ready(self, out_ready: int) -> int:
        return int(not self.busy or (self.out_valid and out_ready and self.out_last))

    def _word(self, w: int) -> int:
        return self.words[w] if w < self.nw else 0

    def step(
        self, start: int, fields: tuple[int, int, int, int, int, int, int, int], out_ready: int
    ) -> None:
        """``fields`` = (stream_id, round, shot, seq, t_fpga, flags, n_bits, bits)."""
        if start and self.start_ready(out_ready):
            stream_id, round_, shot, seq, t_fpga, flags, n_bits, bits = fields
            n_pay = (n_bits + 7) // 8
            body_len = SYNDROME_HEADER_SIZE + n_pay
            payload = bits & ((1 << min(n_bits, self.max_bits)) - 1)
            body = (
                b"QSYN"
                + bytes((1, flags))
                + n_bits.to_bytes(2, "little")
                + stream_id.to_bytes(4, "little")
                + round_.to_bytes(4, "little")
                + shot.to_bytes(8, "little")
                + seq.to_bytes(8, "little")
                + t_fpga.to_bytes(8, "little")
                + payload.to_bytes(n_pay, "little")
            )
            padded = body[: 8 * self.nw].ljust(8 * self.nw, b"\0")
            self.words = [
                int.from_bytes(padded[8 * w : 8 * w + 8], "little") for w in range(self.nw)
            ]
            self.crc = zlib.crc32(body)
            self.nfull, self.rem = body_len >> 3, body_len & 7
            self.lastw = (body_len + 3) >> 3
            self.lastkeep = 0xFF >> ((4 - body_len) & 7)
            self.busy, self.out_valid, self.out_last = 1, 0, 0
            self.oidx = self.cidx = 0
            self.phase = _PH_FULL
            return
        crc_done = self.phase == _PH_DONE
        if self.phase == _PH_FULL:
            if self.cidx == self.nfull - 1:
                self.phase = _after(self.rem)
            self.cidx += 1
        elif self.phase == _PH_T4:
            self.phase = _after(self.rem & 3)
        elif self.phase == _PH_T2:
            self.phase = _after(self.rem & 1)
        elif self.phase == _PH_T1:
            self.phase = _PH_DONE
        accept = self.out_valid and out_ready
        oidx = self.oidx
        if accept and self.out_last:
            self.out_valid = self.busy = 0
        elif (
            self.busy
            and (not self.out_valid or out_ready)
            and oidx <= self.lastw
            and (oidx < self.nfull or crc_done)
        ):
            if oidx < self.nfull:
                beat = self._word(oidx)
            elif oidx == self.nfull:
                beat = (self._word(oidx) | (self.crc << (8 * self.rem))) & _M64
            else:
                beat = self.crc >> (8 * (8 - self.rem))
            self.out_valid, self.out_data = 1, beat
            self.out_keep = self.lastkeep if oidx == self.lastw else 0xFF
            self.out_last = int(oidx == self.lastw)
            self.oidx = oidx + 1
        elif accept:
            self.out_valid = 0


class CorrectionRxModel:
    """``qhil_correction_rx``: ``done`` one cycle after a packet's last byte, with its verdict.

    The reason is ``parse_correction``'s (the RTL is proven equal to it by its
    own test); the fields matter only when the reason is OK.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = 0
        self.reason = Reason.OK
        # (flags, n_obs, stream_id, status, n_frame, shot, seq, t_fpga, obs)
        self.fields: tuple[int, ...] = (0,) * 9
        self._f = np.zeros(10, dtype=np.uint64)

    def step(self, valid: int, data: int, last: int) -> None:
        self.done = int(bool(valid and last))
        if not valid:
            return
        self.data.append(data)
        if not last:
            return
        buf = np.frombuffer(bytes(self.data), dtype=np.uint8)
        self.reason = Reason(parse_correction(buf, buf.size, self._f))
        if self.reason == Reason.OK:
            flags, n_obs, stream, status, n_frame, shot, seq, t_fpga = (int(x) for x in self._f[:8])
            obs = int.from_bytes(bytes(self.data[56:60]).ljust(4, b"\0"), "little")
            obs &= (1 << min(n_obs, 32)) - 1
            self.fields = (flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, obs)
        self.data.clear()


_REG = {r.name: r for r in REGISTERS}
_CLEAR = 1 << CTRL_BITS["CLEAR_COUNTERS"]
_RW = ("CTRL", "STREAM_ID", "ROUND_PERIOD", "BUDGET", "CORR_TIMEOUT")
_BY_OFFSET = {r.offset: r.name for r in REGISTERS}
_PAIRS = ("CYCLE", "ROUNDS_EMITTED", "SHOTS_DECODED")


class RegsModel:
    """``qhil_regs``: the AXI4-Lite channels, the rw registers and the HI latches.

    ``step`` takes the AXI inputs and ``value``, a function giving the
    front end's live value of a read-only register by name (64-bit for pairs).
    """

    def __init__(self) -> None:
        self.aw_full = self.w_full = 0
        self.aw_addr = self.w_data = self.w_strb = 0
        self.bvalid = self.bresp = 0
        self.rvalid = self.rresp = self.rdata = 0
        self.last_araddr = 0  # for reports
        self.clear_counters = 0
        self.rw = {name: _REG[name].reset for name in _RW}
        self.rw["CTRL"] &= ~_CLEAR
        self.hi = dict.fromkeys(_PAIRS, 0)

    def step(
        self,
        awaddr: int,
        awvalid: int,
        wdata: int,
        wstrb: int,
        wvalid: int,
        bready: int,
        araddr: int,
        arvalid: int,
        rready: int,
        value: Callable[[str], int],
    ) -> None:
        do_write = self.aw_full and self.w_full and not self.bvalid
        rvalid_old = self.rvalid
        self.clear_counters = 0
        if self.bvalid and bready:
            self.bvalid = 0
        if do_write:
            self.aw_full = self.w_full = 0
            self.bvalid, self.bresp = 1, 0
            name = _BY_OFFSET.get(self.aw_addr)
            if name in self.rw:
                mask = sum(0xFF << (8 * i) for i in range(4) if self.w_strb >> i & 1)
                merged = (self.rw[name] & ~mask) | (self.w_data & mask)
                if name == "CTRL":
                    self.clear_counters = (self.w_strb & 1) & (self.w_data >> 2 & 1)
                    merged &= ~_CLEAR
                self.rw[name] = merged & _M32
            else:
                self.bresp = 2
        else:
            if awvalid and not self.aw_full:
                self.aw_full, self.aw_addr = 1, awaddr
            if wvalid and not self.w_full:
                self.w_full, self.w_data, self.w_strb = 1, wdata, wstrb
        if rvalid_old and rready:
            self.rvalid = 0
        if arvalid and not rvalid_old:
            self.rvalid, self.rresp, self.last_araddr = 1, 0, araddr
            name = _BY_OFFSET.get(araddr)
            if name is None:
                self.rdata, self.rresp = 0, 2
            elif name in self.rw:
                self.rdata = self.rw[name]
            elif name in ("ID", "VERSION", "FABRIC_MHZ"):
                self.rdata = _REG[name].reset
            elif name.endswith("_HI"):
                self.rdata = self.hi[name[:-3]]
            elif name.endswith("_LO"):
                full = value(name[:-3])
                self.rdata, self.hi[name[:-3]] = full & _M32, full >> 32 & _M32
            else:
                self.rdata = value(name) & _M32
