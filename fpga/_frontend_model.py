"""Cycle-accurate model of ``rtl/qhil_frontend.v``: the same ports, the same flip-flops.

``FrontendModel`` is the RTL front end in Python at the level of its ports and
registers: ``outputs()`` gives every output port after the last rising edge, and
``step(inputs)`` is one rising edge with the given input port values. It shares
the correction rules and counters with the wall-clock ``CycleModel``
(``_correction_rules``) and reads the same detector ROM words, so for equal inputs
it produces the RTL's outputs bit for bit, cycle for cycle; the cocotb test
``rtl_frontend_test.py`` checks that on every cycle. ``run`` plays a timed
``Stimulus`` and returns the packets, frame updates, register reads and latencies.

Cycle numbering: cycle ``k`` is the clock period before rising edge ``k`` (edge 0
is the first edge after reset). Inputs given to ``step`` in cycle ``k`` are
sampled by edge ``k``; the cycle counter (``CYCLE``, ``t_fpga``) reads ``k`` during
cycle ``k``. Registers the RTL does not reset start at 0 here; no output depends
on their value before their first load.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> model = FrontendModel.from_circuit(c)
>>> model.params.max_meas, model.params.max_dets, model.outputs().s_axis_meas_tready
(9, 8, 0)
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING

import stim

from qhil.bridge import Reason
from qhil.fpga._correction_rules import ACCEPTED, CorrectionCounters, Verdict, judge
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._detprog_rom import RomLayout, encode_rom
from qhil.fpga._frontend_parts import (
    CorrectionRxModel,
    DetectionUnitModel,
    PacketizerModel,
    RegsModel,
)
from qhil.fpga._frontend_ports import FrontendInputs, FrontendOutputs, FrontendParams
from qhil.fpga._regmap import STATUS_BITS as _STATUS

if TYPE_CHECKING:
    from qhil.fpga._frontend_stimulus import FrontendTrace, Stimulus

__all__ = ["FrontendModel"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


class FrontendModel:
    """Port-level, cycle-accurate twin of the ``qhil_frontend`` RTL.

    Build it with ``from_program`` / ``from_circuit`` (the ROM written from the
    same program by ``write_rom`` with the same sizes is what the RTL must load).
    """

    def __init__(self, rom_words: Sequence[int], layout: RomLayout, params: FrontendParams) -> None:
        if (layout.max_meas, layout.max_dets, layout.max_terms, layout.rounds_max) != (
            params.max_meas,
            params.max_dets,
            params.max_terms,
            params.rounds_max,
        ):
            raise ValueError(
                f"ROM layout {layout.parameters} does not match the parameters {params.verilog}; "
                "encode the ROM with the same max_* sizes"
            )
        self.params = params
        self.layout = layout
        self._rom_words = tuple(rom_words)
        self.beats = (params.max_meas + 63) // 64
        self.nslot = 1 << params.pending_log2
        self.reset()

    @classmethod
    def from_program(
        cls,
        program: DetectorProgram,
        *,
        max_meas: int | None = None,
        max_dets: int | None = None,
        max_terms: int | None = None,
        rounds_max: int | None = None,
        num_obs: int = 1,
        pending_log2: int = 6,
    ) -> FrontendModel:
        """The model of an RTL built with these sizes (each defaults to what ``program`` needs)."""
        words, lay = encode_rom(
            program,
            max_meas=max_meas,
            max_dets=max_dets,
            max_terms=max_terms,
            rounds_max=rounds_max,
        )
        params = FrontendParams(
            lay.max_meas, lay.max_dets, lay.max_terms, lay.rounds_max, num_obs, pending_log2
        )
        return cls(words, lay, params)

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, **sizes: int) -> FrontendModel:
        """``from_program`` for a circuit's ``DetectorProgram``; ``num_obs`` from the circuit."""
        sizes.setdefault("num_obs", max(1, circuit.num_observables))
        return cls.from_program(DetectorProgram.from_circuit(circuit), **sizes)

    # -- state ------------------------------------------------------------------------------

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

    def outputs(self) -> FrontendOutputs:
        pk, regs = self.pk, self.regs
        return FrontendOutputs(
            s_axis_meas_tready=self.meas_tready(),
            m_axis_syn_tdata=pk.out_data,
            m_axis_syn_tkeep=pk.out_keep,
            m_axis_syn_tvalid=pk.out_valid,
            m_axis_syn_tlast=pk.out_last,
            s_axis_cor_tready=1,
            logical_frame=self.counters.frame & _M32,
            frame_update=self.frame_update,
            s_axi_awready=1 - regs.aw_full,
            s_axi_wready=1 - regs.w_full,
            s_axi_bresp=regs.bresp,
            s_axi_bvalid=regs.bvalid,
            s_axi_arready=1 - regs.rvalid,
            s_axi_rdata=regs.rdata,
            s_axi_rresp=regs.rresp,
            s_axi_rvalid=regs.rvalid,
        )

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

    # -- one rising edge ----------------------------------------------------------------------

    def step(self, i: FrontendInputs) -> None:
        """One rising edge: every register takes its next value from the values before it."""
        if not i.aresetn:
            self.reset()
            return
        p, regs, pk, rx = self.params, self.regs, self.pk, self.rx
        mask = self.nslot - 1
        rw = regs.rw
        clear = regs.clear_counters
        stream_id, round_period = rw["STREAM_ID"], rw["ROUND_PERIOD"]
        budget, corr_timeout = rw["BUDGET"], rw["CORR_TIMEOUT"]
        cyc = self.cyc

        # ---- input stage (combinational)
        beat_in = i.s_axis_meas_tvalid and self.meas_tready()
        tlast, tuser = i.s_axis_meas_tlast, i.s_axis_meas_tuser
        round_in = int(bool(beat_in and tlast and not tuser & 2))
        eos_in = beat_in and tlast and tuser & 2
        tick = ((self.rc_cnt + 1) & _M32) >= round_period
        bi = self.beat_idx
        meas = 0
        if round_in:
            lanes = list(self.acc)
            if bi < self.beats:
                lanes[bi] = i.s_axis_meas_tdata
            meas = sum(v << (64 * b) for b, v in enumerate(lanes)) & ((1 << p.max_meas) - 1)

        # ---- queue stage and packetizer handshake
        ready = i.m_axis_syn_tready
        pk_take = self.buf is not None and pk.start_ready(ready)
        buf_free = self.buf is None or pk_take
        sb2 = self.sb2
        q_load = sb2 is not None and buf_free
        q_drop = sb2 is not None and not buf_free
        q_eos = self.eos_req and self.sb1 is None and sb2 is None and buf_free
        eff_any = self.cur_any or q_load
        eff_seq = self.seq_cnt if q_load else self.cur_seq
        eff_t = sb2[4] if (q_load and sb2 is not None) else self.cur_t
        pkt_out = pk.out_valid and ready and pk.out_last and not self.pk_eos

        # ---- pending table and judge (combinational)
        ins = sb2 is not None and sb2[3] and eff_any
        ins_slot = sb2[0] & mask if sb2 is not None else -1
        ruling = self.ruling()
        j_accept = ruling is not None and ruling[0] in ACCEPTED
        j_slot = self.j[10] if self.j is not None else -1
        evict = ins and self.tab_valid[ins_slot] and not (j_accept and j_slot == ins_slot)
        scan_en = not rx.done and self.j is None and not ins
        sp = self.scan_ptr
        entry = self.tab[sp]
        expire = scan_en and self.tab_valid[sp] and entry is not None and cyc >= entry[3]
        j_next = None
        if rx.done:
            flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, obs = rx.fields
            slot = shot & mask
            e = self.tab[slot]
            j_next = (
                int(rx.reason),
                flags >> 7 & 1,
                int(stream == stream_id),
                int(shot < self.started),
                int(bool(self.tab_valid[slot]) and e is not None and e[0] == shot),
                int(bool(ins and ins_slot == slot) or (j_accept and j_slot == slot)),
                status,
                int(n_obs == p.num_obs),
                int(e is not None and e[1] == seq),
                int(e is not None and e[2] == n_frame),
                slot,
                (cyc + (~t_fpga & _M64)) & _M64,  # (cycle of the last byte) - t_fpga
                obs & ((1 << p.num_obs) - 1),
            )

        # ---- leaves (each reads its own pre-edge state)
        regs.step(
            i.s_axi_awaddr,
            i.s_axi_awvalid,
            i.s_axi_wdata,
            i.s_axi_wstrb,
            i.s_axi_wvalid,
            i.s_axi_bready,
            i.s_axi_araddr,
            i.s_axi_arvalid,
            i.s_axi_rready,
            self.register,
        )
        det_dets, det_n = self.det.dets, self.det.n_dets
        self.det.step(round_in, meas, min(self.round_cnt, 0xFFFF))
        buf = self.buf
        pk.step(int(bool(pk_take)), buf[:8] if buf is not None else (0,) * 8, ready)  # type: ignore[arg-type]
        rx.step(i.s_axis_cor_tvalid, i.s_axis_cor_tdata, i.s_axis_cor_tlast)

        # ---- input stage (registers)
        self.cyc = (cyc + 1) & _M64
        self.rc_cnt = 0 if tick else (self.rc_cnt + 1) & _M32
        self.credit = int(tick or (self.credit and not (beat_in and bi == 0)))
        if beat_in:
            if bi < self.beats:
                self.acc[bi] = i.s_axis_meas_tdata
            self.beat_idx = 0 if tlast else min(bi + 1, self.beats)
        if eos_in:
            self.eos_req, self.eos_t = 1, cyc
        elif q_eos:
            self.eos_req = 0
        sb1_next = (
            (self.shot_cnt, self.round_cnt, int(self.round_cnt == 0), tuser & 1, cyc)
            if round_in
            else None
        )
        if clear:
            self.shot_cnt = self.round_cnt = 0
        elif round_in:
            if tuser & 1:
                self.shot_cnt, self.round_cnt = (self.shot_cnt + 1) & _M64, 0
            else:
                self.round_cnt = (self.round_cnt + 1) & _M32
        self.sb2, self.sb1 = self.sb1, sb1_next

        # ---- queue
        if q_load and sb2 is not None:
            shot, round_, first, last, t = sb2
            self.buf = (
                stream_id,
                round_,
                shot,
                self.seq_cnt,
                t,
                last << 1 | first,
                det_n,
                det_dets,
                0,
            )
        elif q_eos:
            self.buf = (stream_id, 0, 0, self.seq_cnt, self.eos_t, 0x80, 0, 0, 1)
        elif pk_take:
            self.buf = None
        if pk_take and buf is not None:
            self.pk_eos = buf[8]
        if ins and sb2 is not None:
            self.tab[ins_slot] = (
                sb2[0],
                eff_seq,
                (sb2[1] + 1) & _M32,
                (eff_t + corr_timeout) & _M64,
            )

        # ---- judge, first stage
        j_old, self.j = self.j, j_next

        # ---- counters, table valid bits, frame
        c = self.counters
        tot = self.totals
        tot["rounds_in"] += round_in
        tot["dropped"] += q_drop
        tot["packets_out"] += bool(pkt_out)
        tot["timed_out"] += bool(evict or expire)
        tot["evicted"] += bool(evict)
        tot["clears"] += clear
        if ruling is not None:
            tot[ruling[0].name if ruling[1] == Reason.OK else ruling[1].name] += 1
        if clear:
            self.tab_valid = [0] * self.nslot
            self.scan_ptr = 0
            self.seq_cnt = self.started = 0
            self.cur_any, self.cur_seq, self.cur_t = 0, 0, 0
            self.rounds_emitted = self.rounds_backpressure = 0
            self.frame_update = int(c.frame & _M32 != 0)
            self.counters = CorrectionCounters()
            self.st_unresp = self.st_bp = 0
            return
        if q_load or q_eos:
            self.seq_cnt = (self.seq_cnt + 1) & _M64
        if sb2 is not None:
            self.started = (sb2[0] + 1) & _M64
            self.cur_any = 0 if sb2[3] else int(bool(eff_any))
            self.cur_seq, self.cur_t = eff_seq, eff_t
        if q_drop:
            self.rounds_backpressure = (self.rounds_backpressure + 1) & _M32
            self.st_bp = 1
        if pkt_out:
            self.rounds_emitted += 1
        if scan_en:
            self.scan_ptr = (sp + 1) & mask
        if j_accept:
            self.tab_valid[j_slot] = 0
        if expire:
            self.tab_valid[sp] = 0
        if ins:
            self.tab_valid[ins_slot] = 1
        if evict or expire:
            c.shots_timed_out += 1
            self.st_unresp = 1
        self.frame_update = 0
        if ruling is None or j_old is None:
            return
        verdict, why = ruling
        flips = j_old[12] if verdict == Verdict.DECODED else 0
        self.last_ruling = f"{verdict.name} ({why.name}) on edge {cyc}, slot {j_old[10]}"
        c.apply(verdict, why, latency_cycles=j_old[11], budget_cycles=budget, flips=flips)
        self.frame_update = int(flips != 0)

    # -- stimulus ---------------------------------------------------------------------------

    def run(self, stimulus: Stimulus, *, max_cycles: int = 10_000_000) -> FrontendTrace:
        """Play ``stimulus`` from the current state until it is done; what came out.

        Raises RuntimeError if the stimulus is not done after ``max_cycles``.
        """
        for _ in range(max_cycles):
            if stimulus.done():
                return stimulus.trace
            out = self.outputs()
            self.step(stimulus.drive(out))
        raise RuntimeError(
            f"stimulus not done after {max_cycles} cycles: {stimulus.progress()}; "
            "raise max_cycles or check that the front end is enabled"
        )
