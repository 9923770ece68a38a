"""The correction side of the cycle model: correction packets in, judged, shots resolved.

``CorrectionIntake.poll`` takes the corrections waiting on the bridge, judges each
by the rules the RTL shares (``_correction_rules``), records what became of its
shot in the run's ledger, expires shots whose correction is overdue, and marks
the run aborted when the decoder has gone silent or closed the link.
"""

from __future__ import annotations

import time

import numpy as np

from qhil.bridge import (
    CORRECTION_HEADER_SIZE,
    FLAG_END_OF_STREAM,
    PacketReceiver,
    Reason,
    TransportClosed,
    parse_correction,
)
from qhil.fpga._config import FrontEndConfig
from qhil.fpga._correction_rules import ACCEPTED, Verdict, judge
from qhil.fpga.model._cycle_run import RunState
from qhil.fpga.model._ledger import Fate

__all__ = ["CorrectionIntake"]

_RX_BATCH = 256


class CorrectionIntake:
    """Where a run's correction packets come from (``attach``), and what is done with them."""

    _rx: PacketReceiver  # set by attach, before the run

    def __init__(self, config: FrontEndConfig, num_observables: int) -> None:
        self.config = config
        self.num_observables = num_observables
        self._rx_buf = np.zeros((_RX_BATCH, 256), dtype=np.uint8)
        self._rx_len = np.zeros(_RX_BATCH, dtype=np.uint32)
        self._fields = np.zeros(10, dtype=np.uint64)
        # Compile the numba parser now, with the argument types poll uses.
        parse_correction(self._rx_buf[0], CORRECTION_HEADER_SIZE, self._fields)

    def attach(self, rx: PacketReceiver) -> None:
        """Take this run's corrections from ``rx``."""
        if rx.max_packet > self._rx_buf.shape[1]:
            self._rx_buf = np.zeros((_RX_BATCH, rx.max_packet), dtype=np.uint8)
        self._rx = rx

    def poll(self, run: RunState, timeout_s: float) -> int:
        """Take corrections that are ready; expire overdue shots. Returns shots resolved."""
        resolved = 0
        n = 0
        if not run.link_closed:
            try:
                n = self._rx.recv_into(self._rx_buf, self._rx_len, timeout_s=timeout_s)
            except TransportClosed:
                # The decoder ended its stream: no correction can come any more, so
                # every pending shot has already missed it.
                run.link_closed = True
                for shot in run.pending:
                    run.pending[shot] = 0
        now = time.monotonic_ns()
        for i in range(n):
            resolved += self._take_correction(run, self._rx_buf[i], int(self._rx_len[i]), now)
        while run.pending:
            shot, deadline = next(iter(run.pending.items()))
            if deadline > now:
                break
            del run.pending[shot]
            run.settle(shot, Fate.LOST_TIMEOUT)
            run.counters.shots_timed_out += 1
            resolved += 1
        stall_ns = int(self.config.stall_timeout_s * 1e9)
        if run.link_closed and not run.counters.eos_acked and not run.aborted:
            run.aborted = "decoder closed the link before the end of the stream"
        # Unresponsive: silent for the stall timeout while it owed us corrections, or
        # while the bridge was full (a dead decoder stops taking rounds too).
        owed = run.pending or run.last_backpressure_ns > run.last_heard_ns
        if owed and now - run.last_heard_ns > stall_ns and not run.aborted:
            run.aborted = (
                f"decoder unresponsive: no correction for {self.config.stall_timeout_s} s "
                f"with {len(run.pending)} shots pending and {run.backpressure} rounds dropped"
            )
        return resolved

    def _take_correction(self, run: RunState, buf: np.ndarray, length: int, now: int) -> int:
        """Judge one correction packet and apply it; 1 if it resolved a shot."""
        f = self._fields
        reason = Reason(parse_correction(buf, length, f))
        if reason != Reason.OK:
            run.counters.apply(Verdict.REJECTED, reason)
            return 0
        run.last_heard_ns = now
        flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, t_rx, t_tx = (int(x) for x in f)
        shots, rounds = run.fates.shape
        pending = shot in run.pending
        verdict, why = judge(
            reason,
            end_of_stream=bool(flags & FLAG_END_OF_STREAM),
            stream_ok=stream == self.config.stream_id,
            started=pending or (shot < shots and run.fates[shot, 0] != Fate.NOT_EMITTED),
            pending=pending,
            status=status,
            n_obs_ok=n_obs == self.num_observables,
            seq_ok=pending and seq == run.last_seq[shot],
            n_frame_ok=n_frame == rounds,
        )
        o = CORRECTION_HEADER_SIZE
        flips = 0
        obs = np.zeros(0, dtype=np.uint8)
        if verdict == Verdict.DECODED:
            obs = np.unpackbits(buf[o : o + (n_obs + 7) // 8], count=n_obs, bitorder="little")
            flips = sum(1 << int(k) for k in np.flatnonzero(obs))
        lat_cyc = run.cycles(now) - t_fpga
        run.counters.apply(
            verdict,
            why,
            latency_cycles=lat_cyc,
            budget_cycles=self.config.budget_cycles,
            flips=flips,
        )
        if verdict not in ACCEPTED:
            return 0
        if verdict == Verdict.DECODED:
            run.pred[shot] = obs
            run.lat_ns[shot] = now - run.emit_ns[shot]
            run.lat_cyc[shot] = lat_cyc
            run.host_rx[shot], run.host_tx[shot] = t_rx, t_tx
            run.settle(shot, Fate.DECODED)
        elif verdict == Verdict.INCOMPLETE:
            n_ob = (n_obs + 7) // 8
            got = np.unpackbits(
                buf[o + n_ob : o + n_ob + (n_frame + 7) // 8], count=n_frame, bitorder="little"
            ).astype(np.bool_)
            row = run.fates[shot]
            pending_rounds = row == Fate.PENDING
            row[pending_rounds & got] = Fate.LOST_SHOT_INCOMPLETE
            row[pending_rounds & ~got] = Fate.LOST_IN_TRANSIT
        else:
            run.settle(shot, Fate.LOST_DECODER_ERROR)
        del run.pending[shot]
        return 1
