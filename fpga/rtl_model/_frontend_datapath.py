"""The measurement path of ``rtl/qhil_frontend.v``: input stage, side pipeline, queue.

One cycle of it, in two halves as in the RTL: ``input_stage`` and ``queue_stage``
work out the cycle's wires from the state before the edge; ``step_submodules``,
``clock_input_stage`` and ``clock_queue`` are the edge for the sub-modules, the
beat assembler with the round clock and the side pipeline, and the one-round
buffer in front of the packetizer. ``FrontendModel.step`` calls them in order.
"""

from __future__ import annotations

from qhil.fpga.rtl_model._frontend_ports import FrontendInputs
from qhil.fpga.rtl_model._frontend_state import FrontendState, InputWires, QueueWires

__all__ = ["clock_input_stage", "clock_queue", "input_stage", "queue_stage", "step_submodules"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


def input_stage(s: FrontendState, i: FrontendInputs) -> InputWires:
    """``input stage``: the beat taken, the round it completes, the round clock's tick."""
    beat_in = i.s_axis_meas_tvalid and s.meas_tready()
    tlast, tuser = i.s_axis_meas_tlast, i.s_axis_meas_tuser
    round_in = int(bool(beat_in and tlast and not tuser & 2))
    eos_in = beat_in and tlast and tuser & 2
    tick = ((s.rc_cnt + 1) & _M32) >= s.regs.rw["ROUND_PERIOD"]
    bi = s.beat_idx
    meas = 0
    if round_in:
        # The round as the detection unit sees it: earlier beats, this beat in its lane.
        lanes = list(s.acc)
        if bi < s.beats:
            lanes[bi] = i.s_axis_meas_tdata
        meas = sum(v << (64 * b) for b, v in enumerate(lanes))
        meas &= (1 << s.params.max_meas) - 1
    return InputWires(beat_in, round_in, eos_in, tick, meas)


def queue_stage(s: FrontendState, ready: int) -> QueueWires:
    """``queue stage (E2) and the packetizer``: load, drop, END_OF_STREAM, handshake."""
    pk, sb2 = s.pk, s.sb2
    pk_take = s.buf is not None and pk.start_ready(ready)
    buf_free = s.buf is None or pk_take
    q_load = sb2 is not None and buf_free
    q_drop = sb2 is not None and not buf_free
    q_eos = s.eos_req and s.sb1 is None and sb2 is None and buf_free
    eff_any = s.cur_any or q_load
    eff_seq = s.seq_cnt if q_load else s.cur_seq
    eff_t = sb2[4] if (q_load and sb2 is not None) else s.cur_t
    pkt_out = pk.out_valid and ready and pk.out_last and not s.pk_eos
    return QueueWires(sb2, pk_take, q_load, q_drop, q_eos, eff_any, eff_seq, eff_t, pkt_out)


def step_submodules(s: FrontendState, i: FrontendInputs, inp: InputWires, q: QueueWires) -> None:
    """``u_regs``, ``u_det``, ``u_pk``, ``u_rx`` take the edge (before any register of the
    top level: ``u_regs`` reads the counters through ``register``)."""
    s.regs.step(
        i.s_axi_awaddr,
        i.s_axi_awvalid,
        i.s_axi_wdata,
        i.s_axi_wstrb,
        i.s_axi_wvalid,
        i.s_axi_bready,
        i.s_axi_araddr,
        i.s_axi_arvalid,
        i.s_axi_rready,
        s.register,
    )
    s.det.step(inp.round_in, inp.meas, min(s.round_cnt, 0xFFFF))
    buf = s.buf
    fields = buf[:8] if buf is not None else (0,) * 8
    s.pk.step(int(bool(q.pk_take)), fields, i.m_axis_syn_tready)  # type: ignore[arg-type]
    s.rx.step(i.s_axis_cor_tvalid, i.s_axis_cor_tdata, i.s_axis_cor_tlast)


def clock_input_stage(
    s: FrontendState, i: FrontendInputs, inp: InputWires, q_eos: int, clear: int
) -> None:
    """``input stage`` registers and the side pipeline (``sb1``, ``sb2``) beside ``u_det``."""
    cyc, bi, tuser = s.cyc, s.beat_idx, i.s_axis_meas_tuser
    s.cyc = (cyc + 1) & _M64
    s.rc_cnt = 0 if inp.tick else (s.rc_cnt + 1) & _M32
    s.credit = int(inp.tick or (s.credit and not (inp.beat_in and bi == 0)))
    if inp.beat_in:
        if bi < s.beats:
            s.acc[bi] = i.s_axis_meas_tdata
        s.beat_idx = 0 if i.s_axis_meas_tlast else min(bi + 1, s.beats)
    if inp.eos_in:
        s.eos_req, s.eos_t = 1, cyc
    elif q_eos:
        s.eos_req = 0
    sb1_next = (
        (s.shot_cnt, s.round_cnt, int(s.round_cnt == 0), tuser & 1, cyc) if inp.round_in else None
    )
    if clear:
        s.shot_cnt = s.round_cnt = 0
    elif inp.round_in:
        if tuser & 1:
            s.shot_cnt, s.round_cnt = (s.shot_cnt + 1) & _M64, 0
        else:
            s.round_cnt = (s.round_cnt + 1) & _M32
    s.sb2, s.sb1 = s.sb1, sb1_next


def clock_queue(s: FrontendState, q: QueueWires, stream_id: int, dets: int, n_dets: int) -> None:
    """The queue's one-round buffer (``buf_*``) and ``pk_eos``."""
    buf, sb2 = s.buf, q.sb2
    if q.q_load and sb2 is not None:
        shot, round_, first, last, t = sb2
        s.buf = (stream_id, round_, shot, s.seq_cnt, t, last << 1 | first, n_dets, dets, 0)
    elif q.q_eos:
        s.buf = (stream_id, 0, 0, s.seq_cnt, s.eos_t, 0x80, 0, 0, 1)
    elif q.pk_take:
        s.buf = None
    if q.pk_take and buf is not None:
        s.pk_eos = buf[8]
