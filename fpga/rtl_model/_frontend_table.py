"""The correction side of ``rtl/qhil_frontend.v``: pending-shot table, judge, counters.

``table_ops`` and ``judge_first_stage`` work out the cycle's wires from the state
before the edge: insertion and eviction of a shot's slot, the timeout scan, the
judge's ruling and the next value of its first-stage registers. ``clock_table_storage``
and ``clock_counters`` are the edge for the table's storage and for the block
``counters, table valid bits, frame`` (with ``CLEAR_COUNTERS``).
"""

from __future__ import annotations

from qhil.bridge import Reason
from qhil.fpga._correction_rules import ACCEPTED, CorrectionCounters, Verdict
from qhil.fpga.rtl_model._frontend_state import (
    FrontendState,
    InputWires,
    QueueWires,
    Settings,
    TableWires,
)

__all__ = ["clock_counters", "clock_table_storage", "judge_first_stage", "table_ops"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1


def table_ops(s: FrontendState, q: QueueWires) -> TableWires:
    """``table operations this cycle``: insertion, eviction, the scan, the judge's ruling."""
    sb2 = q.sb2
    ins = sb2 is not None and sb2[3] and q.eff_any
    ins_slot = sb2[0] & (s.nslot - 1) if sb2 is not None else -1
    ruling = s.ruling()
    j_accept = ruling is not None and ruling[0] in ACCEPTED
    j_slot = s.j[10] if s.j is not None else -1
    # Insertion evicts an older occupant, unless the judge frees that slot on this edge.
    evict = ins and s.tab_valid[ins_slot] and not (j_accept and j_slot == ins_slot)
    scan_en = not s.rx.done and s.j is None and not ins
    sp = s.scan_ptr
    entry = s.tab[sp]
    expire = scan_en and s.tab_valid[sp] and entry is not None and s.cyc >= entry[3]
    return TableWires(ins, ins_slot, ruling, j_accept, j_slot, evict, scan_en, expire)


def judge_first_stage(s: FrontendState, stream_id: int, tab: TableWires) -> tuple[int, ...] | None:
    """The judge's first stage (C1): the next value of its registers (None: idle)."""
    rx, p = s.rx, s.params
    if not rx.done:
        return None
    flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, obs = rx.fields
    slot = shot & (s.nslot - 1)
    e = s.tab[slot]
    # The slot changes on this edge: its snapshot is stale.
    stale = bool(tab.ins and tab.ins_slot == slot) or (tab.j_accept and tab.j_slot == slot)
    return (
        int(rx.reason),
        flags >> 7 & 1,
        int(stream == stream_id),
        int(shot < s.started),
        int(bool(s.tab_valid[slot]) and e is not None and e[0] == shot),
        int(stale),
        status,
        int(n_obs == p.num_obs),
        int(e is not None and e[1] == seq),
        int(e is not None and e[2] == n_frame),
        slot,
        (s.cyc + (~t_fpga & _M64)) & _M64,  # (cycle of the last byte) - t_fpga
        obs & ((1 << p.num_obs) - 1),
    )


def clock_table_storage(
    s: FrontendState, q: QueueWires, tab: TableWires, corr_timeout: int
) -> None:
    """``pending-shot table (storage)``: a shot's last round fills its slot."""
    sb2 = q.sb2
    if tab.ins and sb2 is not None:
        s.tab[tab.ins_slot] = (
            sb2[0],
            q.eff_seq,
            (sb2[1] + 1) & _M32,
            (q.eff_t + corr_timeout) & _M64,
        )


def clock_counters(
    s: FrontendState, inp: InputWires, q: QueueWires, tab: TableWires, cfg: Settings, cyc: int
) -> None:
    """``counters, table valid bits, frame``: the queue's, the table's, the ruling's."""
    _count_totals(s, inp, q, tab, cfg.clear)
    if cfg.clear:
        _clear_counters(s)
        return
    if q.q_load or q.q_eos:
        s.seq_cnt = (s.seq_cnt + 1) & _M64
    if q.sb2 is not None:
        s.started = (q.sb2[0] + 1) & _M64
        s.cur_any = 0 if q.sb2[3] else int(bool(q.eff_any))
        s.cur_seq, s.cur_t = q.eff_seq, q.eff_t
    if q.q_drop:
        s.rounds_backpressure = (s.rounds_backpressure + 1) & _M32
        s.st_bp = 1
    if q.pkt_out:
        s.rounds_emitted += 1
    _clock_table_valid(s, tab)
    _clock_ruling(s, tab.ruling, cyc, cfg.budget)


def _count_totals(
    s: FrontendState, inp: InputWires, q: QueueWires, tab: TableWires, clear: int
) -> None:
    """What happened this cycle, into ``totals`` (no RTL counterpart: for coverage)."""
    tot = s.totals
    tot["rounds_in"] += inp.round_in
    tot["dropped"] += q.q_drop
    tot["packets_out"] += bool(q.pkt_out)
    tot["timed_out"] += bool(tab.evict or tab.expire)
    tot["evicted"] += bool(tab.evict)
    tot["clears"] += clear
    if tab.ruling is not None:
        verdict, why = tab.ruling
        tot[verdict.name if why == Reason.OK else why.name] += 1


def _clear_counters(s: FrontendState) -> None:
    """``CLEAR_COUNTERS``: counters, table valid bits and frame back to 0."""
    s.tab_valid = [0] * s.nslot
    s.scan_ptr = 0
    s.seq_cnt = s.started = 0
    s.cur_any, s.cur_seq, s.cur_t = 0, 0, 0
    s.rounds_emitted = s.rounds_backpressure = 0
    # The frame returning to 0 is a change of frame.
    s.frame_update = int(s.counters.frame & _M32 != 0)
    s.counters = CorrectionCounters()
    s.st_unresp = s.st_bp = 0


def _clock_table_valid(s: FrontendState, tab: TableWires) -> None:
    """The table's valid bits: the judge frees, insertion fills (after it), the scan expires."""
    sp = s.scan_ptr
    if tab.scan_en:
        s.scan_ptr = (sp + 1) & (s.nslot - 1)
    if tab.j_accept:
        s.tab_valid[tab.j_slot] = 0
    if tab.expire:
        s.tab_valid[sp] = 0
    if tab.ins:
        s.tab_valid[tab.ins_slot] = 1
    if tab.evict or tab.expire:
        s.counters.shots_timed_out += 1
        s.st_unresp = 1


def _clock_ruling(
    s: FrontendState, ruling: tuple[Verdict, Reason] | None, cyc: int, budget: int
) -> None:
    """The judge's second stage (C2) applies its ruling: counters, frame, ``frame_update``."""
    s.frame_update = 0
    if ruling is None or s.j is None:
        return
    verdict, why = ruling
    flips = s.j[12] if verdict == Verdict.DECODED else 0
    s.last_ruling = f"{verdict.name} ({why.name}) on edge {cyc}, slot {s.j[10]}"
    s.counters.apply(verdict, why, latency_cycles=s.j[11], budget_cycles=budget, flips=flips)
    s.frame_update = int(flips != 0)
