"""The registers of ``rtl/qhil_frontend.v`` itself, and the wires between its blocks.

``FrontendState`` holds the top level's flip-flops and its sub-modules' models
(``_frontend_parts``), with the outputs read straight off them: ``meas_tready``,
the read-only ``register`` values ``qhil_regs`` samples, and the judge's
``ruling``. ``FrontendModel`` (``_frontend_model``) builds on it; the stages
that compute one edge (``_frontend_datapath``, ``_frontend_table``) read and
write it and pass one cycle's wires to each other as the records here.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import NamedTuple

from qhil.bridge import Reason
from qhil.fpga._correction_rules import CorrectionCounters, Verdict, judge
from qhil.fpga._regmap import STATUS_BITS as _STATUS
from qhil.fpga.rtl_model._detprog_rom import RomLayout
from qhil.fpga.rtl_model._frontend_parts import (
    CorrectionRxModel,
    DetectionUnitModel,
    PacketizerModel,
    RegsModel,
)
from qhil.fpga.rtl_model._frontend_ports import FrontendParams

__all__ = ["FrontendState", "InputWires", "QueueWires", "Settings", "TableWires"]

_M64 = (1 << 64) - 1


class Settings(NamedTuple):
    """Register-file outputs used after its edge, as they were before it."""

    clear: int
    stream_id: int
    budget: int
    corr_timeout: int


# The wires of one cycle, by RTL block. Flags are truthy ints, as Python's and/or
# leave them; the register updates turn them into 0/1 where the RTL stores them.
class InputWires(NamedTuple):
    beat_in: int
    round_in: int
    eos_in: int
    tick: bool
    meas: int  # the round's measurements (0 unless round_in)


class QueueWires(NamedTuple):
    sb2: tuple[int, int, int, int, int] | None  # the round leaving the side pipeline
    pk_take: int
    q_load: int
    q_drop: int
    q_eos: int
    eff_any: int
    eff_seq: int
    eff_t: int
    pkt_out: int


class TableWires(NamedTuple):
    ins: int
    ins_slot: int
    ruling: tuple[Verdict, Reason] | None  # the judge's second stage, None when idle
    j_accept: int
    j_slot: int
    evict: int
    scan_en: int
    expire: int


class FrontendState:
    """The flip-flops of ``qhil_frontend`` (sub-modules included) and what is read off them."""

    def __init__(self, rom_words: Sequence[int], layout: RomLayout, params: FrontendParams) -> None:
        self.params = params
        self.layout = layout
        self._rom_words = tuple(rom_words)
        self.beats = (params.max_meas + 63) // 64
        self.nslot = 1 << params.pending_log2
        self.reset()

    def reset(self) -> None:
        """The state right after ``aresetn`` (edge 0 comes next)."""
        p = self.params
        self.regs = RegsModel()
        self.det = DetectionUnitModel(self._rom_words, self.layout)
        self.pk = PacketizerModel(p.max_dets)
        self.rx = CorrectionRxModel()
        self.cyc = 0
        self.beat_idx = 0
        self.acc = [0] * self.beats
        self.shot_cnt = self.round_cnt = 0
        self.eos_req, self.eos_t = 0, 0
        self.rc_cnt, self.credit = 0, 0
        self.sb1: tuple[int, int, int, int, int] | None = None  # (shot, round, first, last, t)
        self.sb2: tuple[int, int, int, int, int] | None = None
        self.buf: tuple[int, ...] | None = None  # packetizer fields + (eos,)
        self.pk_eos = 0
        self.seq_cnt = self.started = 0
        self.cur_any, self.cur_seq, self.cur_t = 0, 0, 0
        self.tab_valid = [0] * self.nslot
        self.tab: list[tuple[int, int, int, int] | None] = [None] * self.nslot  # shot, seq, n, dl
        self.scan_ptr = 0
        self.j: tuple[int, ...] | None = None  # the judge's first-stage registers
        self.rounds_emitted = self.rounds_backpressure = 0
        self.counters = CorrectionCounters()
        self.st_unresp = self.st_bp = 0
        self.frame_update = 0
        self.last_ruling = "none yet"  # for reports
        # Cumulative over the run, clears included: what happened, for coverage reports.
        self.totals: collections.Counter[str] = collections.Counter()

    def meas_tready(self) -> int:
        ctrl = self.regs.rw["CTRL"]
        if not ctrl & 1 or self.eos_req:
            return 0
        if ctrl & 2:  # lockstep
            room = self.sb1 is None and self.sb2 is None and self.buf is None
            return int(room and not self.tab_valid[self.shot_cnt & (self.nslot - 1)])
        return int(self.regs.rw["ROUND_PERIOD"] == 0 or self.credit or self.beat_idx != 0)

    def register(self, name: str) -> int:
        """A read-only register's live value as ``qhil_regs`` samples it (pairs: 64 bits)."""
        if name == "STATUS":
            return (
                (self.regs.rw["CTRL"] & 1) << _STATUS["RUNNING"]
                | self.counters.eos_acked << _STATUS["DONE"]
                | self.st_unresp << _STATUS["DECODER_UNRESPONSIVE"]
                | self.st_bp << _STATUS["BACKPRESSURE"]
            )
        if name == "CYCLE":
            return self.cyc
        if name == "ROUNDS_EMITTED":
            return self.rounds_emitted & _M64
        if name == "ROUNDS_BACKPRESSURE":
            return self.rounds_backpressure
        if name == "SHOTS_DECODED":
            return self.counters.shots_decoded & _M64
        return self.counters.registers()[name]

    def ruling(self) -> tuple[Verdict, Reason] | None:
        """What the judge's second stage decides this cycle, or None when it is idle."""
        if self.j is None:
            return None
        reason, eos, stream_ok, known, pend, stale, status, nobs_ok, seq_ok, nfr_ok = self.j[:10]
        return judge(
            Reason(reason),
            end_of_stream=bool(eos),
            stream_ok=bool(stream_ok),
            started=bool(known),
            pending=bool(pend and not stale),
            status=status,
            n_obs_ok=bool(nobs_ok),
            seq_ok=bool(seq_ok),
            n_frame_ok=bool(nfr_ok),
        )
