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
from typing import TYPE_CHECKING, NamedTuple

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


class _Settings(NamedTuple):
    """Register-file outputs used after its edge, as they were before it."""

    clear: int
    stream_id: int
    budget: int
    corr_timeout: int


# The wires of one cycle, by RTL block. Flags are truthy ints, as Python's and/or
# leave them; the register updates turn them into 0/1 where the RTL stores them.
class _InputWires(NamedTuple):
    beat_in: int
    round_in: int
    eos_in: int
    tick: bool
    meas: int  # the round's measurements (0 unless round_in)


class _QueueWires(NamedTuple):
    sb2: tuple[int, int, int, int, int] | None  # the round leaving the side pipeline
    pk_take: int
    q_load: int
    q_drop: int
    q_eos: int
    eff_any: int
    eff_seq: int
    eff_t: int
    pkt_out: int


class _TableWires(NamedTuple):
    ins: int
    ins_slot: int
    ruling: tuple[Verdict, Reason] | None  # the judge's second stage, None when idle
    j_accept: int
    j_slot: int
    evict: int
    scan_en: int
    expire: int


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
        """One rising edge: every register takes its next value from the values before it.

        The cycle's combinational logic is worked out first, from the state before the
        edge; then the sub-modules and this module's register blocks take the edge.
        """
        if not i.aresetn:
            self.reset()
            return
        rw = self.regs.rw
        # Sampled now: the register file's own edge below may rewrite them.
        cfg = _Settings(self.regs.clear_counters, rw["STREAM_ID"], rw["BUDGET"], rw["CORR_TIMEOUT"])
        cyc = self.cyc
        inp = self._input_stage(i)
        q = self._queue_stage(i.m_axis_syn_tready)
        tab = self._table_ops(q)
        j_next = self._judge_first_stage(cfg.stream_id, tab)
        # The detection unit's outputs this cycle, which the queue loads on this edge.
        dets, n_dets = self.det.dets, self.det.n_dets
        self._step_submodules(i, inp, q)
        self._clock_input_stage(i, inp, q.q_eos, cfg.clear)
        self._clock_queue(q, cfg.stream_id, dets, n_dets)
        self._clock_table_storage(q, tab, cfg.corr_timeout)
        self._clock_counters(inp, q, tab, cfg, cyc)
        self.j = j_next

    # -- the cycle's combinational logic (from the state before the edge) --------------------

    def _input_stage(self, i: FrontendInputs) -> _InputWires:
        """``input stage``: the beat taken, the round it completes, the round clock's tick."""
        beat_in = i.s_axis_meas_tvalid and self.meas_tready()
        tlast, tuser = i.s_axis_meas_tlast, i.s_axis_meas_tuser
        round_in = int(bool(beat_in and tlast and not tuser & 2))
        eos_in = beat_in and tlast and tuser & 2
        tick = ((self.rc_cnt + 1) & _M32) >= self.regs.rw["ROUND_PERIOD"]
        bi = self.beat_idx
        meas = 0
        if round_in:
            # The round as the detection unit sees it: earlier beats, this beat in its lane.
            lanes = list(self.acc)
            if bi < self.beats:
                lanes[bi] = i.s_axis_meas_tdata
            meas = sum(v << (64 * b) for b, v in enumerate(lanes))
            meas &= (1 << self.params.max_meas) - 1
        return _InputWires(beat_in, round_in, eos_in, tick, meas)

    def _queue_stage(self, ready: int) -> _QueueWires:
        """``queue stage (E2) and the packetizer``: load, drop, END_OF_STREAM, handshake."""
        pk, sb2 = self.pk, self.sb2
        pk_take = self.buf is not None and pk.start_ready(ready)
        buf_free = self.buf is None or pk_take
        q_load = sb2 is not None and buf_free
        q_drop = sb2 is not None and not buf_free
        q_eos = self.eos_req and self.sb1 is None and sb2 is None and buf_free
        eff_any = self.cur_any or q_load
        eff_seq = self.seq_cnt if q_load else self.cur_seq
        eff_t = sb2[4] if (q_load and sb2 is not None) else self.cur_t
        pkt_out = pk.out_valid and ready and pk.out_last and not self.pk_eos
        return _QueueWires(sb2, pk_take, q_load, q_drop, q_eos, eff_any, eff_seq, eff_t, pkt_out)

    def _table_ops(self, q: _QueueWires) -> _TableWires:
        """``table operations this cycle``: insertion, eviction, the scan, the judge's ruling."""
        sb2 = q.sb2
        ins = sb2 is not None and sb2[3] and q.eff_any
        ins_slot = sb2[0] & (self.nslot - 1) if sb2 is not None else -1
        ruling = self.ruling()
        j_accept = ruling is not None and ruling[0] in ACCEPTED
        j_slot = self.j[10] if self.j is not None else -1
        # Insertion evicts an older occupant, unless the judge frees that slot on this edge.
        evict = ins and self.tab_valid[ins_slot] and not (j_accept and j_slot == ins_slot)
        scan_en = not self.rx.done and self.j is None and not ins
        sp = self.scan_ptr
        entry = self.tab[sp]
        expire = scan_en and self.tab_valid[sp] and entry is not None and self.cyc >= entry[3]
        return _TableWires(ins, ins_slot, ruling, j_accept, j_slot, evict, scan_en, expire)

    def _judge_first_stage(self, stream_id: int, tab: _TableWires) -> tuple[int, ...] | None:
        """The judge's first stage (C1): the next value of its registers (None: idle)."""
        rx, p = self.rx, self.params
        if not rx.done:
            return None
        flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, obs = rx.fields
        slot = shot & (self.nslot - 1)
        e = self.tab[slot]
        # The slot changes on this edge: its snapshot is stale.
        stale = bool(tab.ins and tab.ins_slot == slot) or (tab.j_accept and tab.j_slot == slot)
        return (
            int(rx.reason),
            flags >> 7 & 1,
            int(stream == stream_id),
            int(shot < self.started),
            int(bool(self.tab_valid[slot]) and e is not None and e[0] == shot),
            int(stale),
            status,
            int(n_obs == p.num_obs),
            int(e is not None and e[1] == seq),
            int(e is not None and e[2] == n_frame),
            slot,
            (self.cyc + (~t_fpga & _M64)) & _M64,  # (cycle of the last byte) - t_fpga
            obs & ((1 << p.num_obs) - 1),
        )

    # -- the edge ------------------------------------------------------------------------------

    def _step_submodules(self, i: FrontendInputs, inp: _InputWires, q: _QueueWires) -> None:
        """``u_regs``, ``u_det``, ``u_pk``, ``u_rx`` take the edge (before any register here:
        ``u_regs`` reads the counters through ``register``)."""
        self.regs.step(
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
        self.det.step(inp.round_in, inp.meas, min(self.round_cnt, 0xFFFF))
        buf = self.buf
        fields = buf[:8] if buf is not None else (0,) * 8
        self.pk.step(int(bool(q.pk_take)), fields, i.m_axis_syn_tready)  # type: ignore[arg-type]
        self.rx.step(i.s_axis_cor_tvalid, i.s_axis_cor_tdata, i.s_axis_cor_tlast)

    def _clock_input_stage(
        self, i: FrontendInputs, inp: _InputWires, q_eos: int, clear: int
    ) -> None:
        """``input stage`` registers and the side pipeline (``sb1``, ``sb2``) beside ``u_det``."""
        cyc, bi, tuser = self.cyc, self.beat_idx, i.s_axis_meas_tuser
        self.cyc = (cyc + 1) & _M64
        self.rc_cnt = 0 if inp.tick else (self.rc_cnt + 1) & _M32
        self.credit = int(inp.tick or (self.credit and not (inp.beat_in and bi == 0)))
        if inp.beat_in:
            if bi < self.beats:
                self.acc[bi] = i.s_axis_meas_tdata
            self.beat_idx = 0 if i.s_axis_meas_tlast else min(bi + 1, self.beats)
        if inp.eos_in:
            self.eos_req, self.eos_t = 1, cyc
        elif q_eos:
            self.eos_req = 0
        sb1_next = (
            (self.shot_cnt, self.round_cnt, int(self.round_cnt == 0), tuser & 1, cyc)
            if inp.round_in
            else None
        )
        if clear:
            self.shot_cnt = self.round_cnt = 0
        elif inp.round_in:
            if tuser & 1:
                self.shot_cnt, self.round_cnt = (self.shot_cnt + 1) & _M64, 0
            else:
                self.round_cnt = (self.round_cnt + 1) & _M32
        self.sb2, self.sb1 = self.sb1, sb1_next

    def _clock_queue(self, q: _QueueWires, stream_id: int, dets: int, n_dets: int) -> None:
        """The queue's one-round buffer (``buf_*``) and ``pk_eos``."""
        buf, sb2 = self.buf, q.sb2
        if q.q_load and sb2 is not None:
            shot, round_, first, last, t = sb2
            self.buf = (
                stream_id,
                round_,
                shot,
                self.seq_cnt,
                t,
                last << 1 | first,
                n_dets,
                dets,
                0,
            )
        elif q.q_eos:
            self.buf = (stream_id, 0, 0, self.seq_cnt, self.eos_t, 0x80, 0, 0, 1)
        elif q.pk_take:
            self.buf = None
        if q.pk_take and buf is not None:
            self.pk_eos = buf[8]

    def _clock_table_storage(self, q: _QueueWires, tab: _TableWires, corr_timeout: int) -> None:
        """``pending-shot table (storage)``: a shot's last round fills its slot."""
        sb2 = q.sb2
        if tab.ins and sb2 is not None:
            self.tab[tab.ins_slot] = (
                sb2[0],
                q.eff_seq,
                (sb2[1] + 1) & _M32,
                (q.eff_t + corr_timeout) & _M64,
            )

    def _clock_counters(
        self, inp: _InputWires, q: _QueueWires, tab: _TableWires, cfg: _Settings, cyc: int
    ) -> None:
        """``counters, table valid bits, frame``: the queue's, the table's, the ruling's."""
        self._count_totals(inp, q, tab, cfg.clear)
        if cfg.clear:
            self._clear_counters()
            return
        if q.q_load or q.q_eos:
            self.seq_cnt = (self.seq_cnt + 1) & _M64
        if q.sb2 is not None:
            self.started = (q.sb2[0] + 1) & _M64
            self.cur_any = 0 if q.sb2[3] else int(bool(q.eff_any))
            self.cur_seq, self.cur_t = q.eff_seq, q.eff_t
        if q.q_drop:
            self.rounds_backpressure = (self.rounds_backpressure + 1) & _M32
            self.st_bp = 1
        if q.pkt_out:
            self.rounds_emitted += 1
        self._clock_table_valid(tab)
        self._clock_ruling(tab.ruling, cyc, cfg.budget)

    def _count_totals(self, inp: _InputWires, q: _QueueWires, tab: _TableWires, clear: int) -> None:
        """What happened this cycle, into ``totals`` (no RTL counterpart: for coverage)."""
        tot = self.totals
        tot["rounds_in"] += inp.round_in
        tot["dropped"] += q.q_drop
        tot["packets_out"] += bool(q.pkt_out)
        tot["timed_out"] += bool(tab.evict or tab.expire)
        tot["evicted"] += bool(tab.evict)
        tot["clears"] += clear
        if tab.ruling is not None:
            verdict, why = tab.ruling
            tot[verdict.name if why == Reason.OK else why.name] += 1

    def _clear_counters(self) -> None:
        """``CLEAR_COUNTERS``: counters, table valid bits and frame back to 0."""
        self.tab_valid = [0] * self.nslot
        self.scan_ptr = 0
        self.seq_cnt = self.started = 0
        self.cur_any, self.cur_seq, self.cur_t = 0, 0, 0
        self.rounds_emitted = self.rounds_backpressure = 0
        # The frame returning to 0 is a change of frame.
        self.frame_update = int(self.counters.frame & _M32 != 0)
        self.counters = CorrectionCounters()
        self.st_unresp = self.st_bp = 0

    def _clock_table_valid(self, tab: _TableWires) -> None:
        """The table's valid bits: the judge frees, insertion fills (after it), the scan expires."""
        sp = self.scan_ptr
        if tab.scan_en:
            self.scan_ptr = (sp + 1) & (self.nslot - 1)
        if tab.j_accept:
            self.tab_valid[tab.j_slot] = 0
        if tab.expire:
            self.tab_valid[sp] = 0
        if tab.ins:
            self.tab_valid[tab.ins_slot] = 1
        if tab.evict or tab.expire:
            self.counters.shots_timed_out += 1
            self.st_unresp = 1

    def _clock_ruling(self, ruling: tuple[Verdict, Reason] | None, cyc: int, budget: int) -> None:
        """The judge's second stage (C2) applies its ruling: counters, frame, ``frame_update``."""
        self.frame_update = 0
        if ruling is None or self.j is None:
            return
        verdict, why = ruling
        flips = self.j[12] if verdict == Verdict.DECODED else 0
        self.last_ruling = f"{verdict.name} ({why.name}) on edge {cyc}, slot {self.j[10]}"
        self.counters.apply(
            verdict, why, latency_cycles=self.j[11], budget_cycles=budget, flips=flips
        )
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
