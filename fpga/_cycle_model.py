"""The front end's cycle model: round clock, packetizer, correction receiver and budget check.

The model does in software what the RTL does on a board, against the same
register map: each round it turns measurements into detection events (see
``DetectorProgram``), packs them into a wire-v1 syndrome packet stamped with
the cycle counter, and pushes it into the bridge. It takes correction
packets back, checks them, applies the logical-frame update, and times the
reaction latency against the budget.

The cycle counter is the host's monotonic clock scaled to the fabric clock,
so latencies in cycles and in ns describe the same interval. Latency in cycles
is computed as the RTL computes it: the arrival count minus the ``t_fpga`` the
decoder echoed.

>>> import stim
>>> from qhil.bridge import ShmRing
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
>>> model = CycleModel.from_circuit(circuit, config=FrontEndConfig())
>>> model.regs.read("ROUND_PERIOD"), model.program.bits_per_round
(250, (4, 4))
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import stim

from qhil.bridge import (
    CORRECTION_HEADER_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    PacketReceiver,
    PacketSender,
    Reason,
    TransportClosed,
    parse_correction,
    write_syndrome,
)
from qhil.fpga._config import FrontEndConfig
from qhil.fpga._correction_rules import ACCEPTED, CorrectionCounters, Verdict, judge
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._ledger import Fate, FrontEndProgress, FrontEndResult, PacingStats
from qhil.fpga._regmap import RegisterFile

__all__ = ["CycleModel"]

ProgressFn = Callable[[int, int], None]  # (shots emitted, shots resolved)
_PROGRESS_EVERY_NS = 50_000_000
_RX_BATCH = 256
# Paced-mode lag histogram: bin edges 0, then 1 ns .. 2**40 ns (~18 min), 32 bins an octave.
_LAG_EDGES_NS = np.concatenate(([0.0], np.geomspace(1.0, 2.0**40, 40 * 32 + 1)))


class _LagHistogram:
    """How late paced rounds left their tick, for any run length in fixed memory:
    a log-binned histogram (bins ~2.2 % wide) and the exact maximum."""

    def __init__(self) -> None:
        self.counts = np.zeros(_LAG_EDGES_NS.size + 1, dtype=np.int64)  # [k]: below edge k
        self.max_ns = 0

    def add(self, lags_ns: np.ndarray) -> None:
        """Count int64[n] lags in ns."""
        bins = np.searchsorted(_LAG_EDGES_NS, lags_ns, side="right")
        self.counts += np.bincount(bins, minlength=self.counts.size)
        self.max_ns = max(self.max_ns, int(lags_ns.max(initial=0)))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def percentile_s(self, q: float) -> float:
        """The ``q``-th percentile in s: the upper edge of its bin, capped at the maximum."""
        cum = np.cumsum(self.counts)
        k = int(np.searchsorted(cum, q / 100 * cum[-1]))
        upper = _LAG_EDGES_NS[k] if k < _LAG_EDGES_NS.size else np.inf
        return float(min(upper, self.max_ns)) * 1e-9


class _Run:
    """Mutable state of one run; lives only inside ``CycleModel.run``."""

    def __init__(self, model: CycleModel, shots: int, n_obs: int) -> None:
        r1 = model.program.num_rounds
        self.fates = np.full((shots, r1), Fate.NOT_EMITTED, dtype=np.uint8)
        self.pred = np.zeros((shots, n_obs), dtype=np.bool_)
        self.raw_obs = np.zeros((shots, n_obs), dtype=np.bool_)
        self.lat_ns = np.full(shots, -1, dtype=np.int64)
        self.lat_cyc = np.full(shots, -1, dtype=np.int64)
        self.emit_ns = np.zeros(shots, dtype=np.int64)
        self.emit_cyc = np.zeros(shots, dtype=np.int64)
        self.last_seq = np.zeros(shots, dtype=np.int64)
        self.host_rx = np.zeros(shots, dtype=np.int64)
        self.host_tx = np.zeros(shots, dtype=np.int64)
        # Touch every page now: the ledger's memory is taken (or refused) at the start,
        # and resident memory stays flat while the run streams.
        for ledger in (self.pred, self.raw_obs, self.emit_ns, self.emit_cyc, self.last_seq,
                       self.host_rx, self.host_tx):  # fmt: skip
            ledger.fill(0)
        self.pending: collections.OrderedDict[int, int] = (
            collections.OrderedDict()
        )  # shot -> deadline
        self.counters = CorrectionCounters()  # the rules and counters the RTL shares
        self.seq = 0
        self.backpressure = 0
        self.last_backpressure_ns = 0
        self.last_heard_ns = 0
        self.link_closed = False
        self.aborted = ""
        self.lags = _LagHistogram()
        self.first_emit = 0
        self.last_emit = 0
        self.n_emit = 0
        self.taken = 0  # shots in the measurement chunks taken so far
        self.ticks = 0  # the round clock's tick count
        self.paused_ns = 0  # the round clock stood still this long (between chunks)
        self.resolved = 0
        self.next_progress = 0


class CycleModel:
    """Software twin of the ``qhil_frontend`` IP, driven through the same registers."""

    def __init__(self, program: DetectorProgram, num_observables: int, config: FrontEndConfig):
        self.program = program
        self.num_observables = num_observables
        self.config = config
        self.regs = RegisterFile()
        self.regs.write("STREAM_ID", config.stream_id)
        self.regs.write("ROUND_PERIOD", config.round_period_cycles)
        self.regs.write("BUDGET", config.budget_cycles)
        self.regs.write(
            "CORR_TIMEOUT",
            min(2**32 - 1, round(config.correction_timeout_s * config.fabric_clock_hz)),
        )
        self.regs.write("CTRL", 1 << 1 if config.mode == "lockstep" else 0)
        self._rx_buf = np.zeros((_RX_BATCH, 256), dtype=np.uint8)
        self._rx_len = np.zeros(_RX_BATCH, dtype=np.uint32)
        self._fields = np.zeros(10, dtype=np.uint64)
        self._warm_up()

    def _warm_up(self) -> None:
        """Compile the numba encoder/parser now, with the argument types the run uses."""
        scratch = np.zeros(64, dtype=np.uint8)
        n = write_syndrome(scratch, 0, 0, 0, 0, 0, 0, scratch[:1], 0)
        parse_correction(self._rx_buf[0], n, self._fields)

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, *, config: FrontEndConfig) -> CycleModel:
        return cls(DetectorProgram.from_circuit(circuit), circuit.num_observables, config)

    def progress(self) -> FrontEndProgress | None:
        """The current (or last) run so far, for a metrics scrape from another thread;
        None before the first run. Reads only; numbers may be one shot apart."""
        run = getattr(self, "_live", None)
        if run is None:
            return None
        counts = np.bincount(run.fates.ravel(), minlength=len(Fate))
        decoded = run.lat_ns[run.lat_ns >= 0]
        return FrontEndProgress(
            rounds_by_fate={f.name.lower(): int(counts[f]) for f in Fate},
            corrections_rejected=dict(run.counters.rejections),
            shots_in_flight=len(run.pending),
            rounds_backpressure=run.backpressure,
            latency_ns=decoded.copy(),
        )

    # -- clock -----------------------------------------------------------------------------

    def _cycles(self, t_ns: int) -> int:
        return (t_ns - self._t0) * self._f_num // 1_000_000_000

    # -- run -------------------------------------------------------------------------------

    def run(
        self,
        measurements: np.ndarray | Iterable[np.ndarray],
        *,
        shots: int | None = None,
        tx: PacketSender,
        rx: PacketReceiver,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> FrontEndResult:
        """Stream every shot through the bridge and collect the corrections.

        Args:
            measurements: bool[shots, num_measurements], the measurement record
                of each shot in the circuit's measurement order; or an iterable of
                such arrays holding consecutive shots (e.g.
                ``qhil.sim.sample_measurement_chunks``), taken one at a time, so
                only one chunk's samples are held at once.
            shots: how many shots the chunks hold in all (needed with an
                iterable, which must hold exactly that many; an array's rows).
            tx: where syndrome packets go; rx: where correction packets come from.
            on_progress: called about every 50 ms with (shots emitted, shots resolved).
            should_stop: polled at safe points; True ends the run cleanly
                (pending shots are reported ``aborted``).

        Between chunks the model lets in-flight shots resolve, then holds its
        round clock while it packs the next chunk, so chunking shows in neither
        latencies nor pacing. ``raw_observables`` rows of shots in chunks an
        aborted run never took are False.
        """
        chunks, shots = _chunks(measurements, shots)
        if rx.max_packet > self._rx_buf.shape[1]:
            self._rx_buf = np.zeros((_RX_BATCH, rx.max_packet), dtype=np.uint8)
        self._rx = rx
        run = self._live = _Run(self, shots, self.num_observables)
        taken = self._take(run, chunks)  # before the clock starts: start-up is not latency
        self._f_num = int(self.config.fabric_clock_hz)
        self._t0 = time.monotonic_ns()
        run.last_heard_ns = run.next_progress = self._t0
        self.regs.write("CTRL", self.regs.read("CTRL") | 1)
        self.regs.set("STATUS", 1)
        while taken is not None and not run.aborted:
            self._stream(run, *taken, tx, on_progress, should_stop)
            taken = None if run.aborted else self._between_chunks(run, chunks)
        if run.taken < shots and not run.aborted:
            raise ValueError(f"the measurement chunks held {run.taken} shots; shots={shots}")
        self._finish(run, tx)
        if on_progress is not None:
            on_progress(int(np.count_nonzero(run.fates[:, -1] != Fate.NOT_EMITTED)), shots)
        return self._result(run)

    def _take(self, run: _Run, chunks: Iterator[np.ndarray]) -> tuple[int, list[np.ndarray]] | None:
        """Take the next chunk: record its raw observables and pack its rounds for the wire.
        Returns its first shot's index and one uint8[n, ceil(bits_per_round[t] / 8)] per
        round, or None after the last chunk."""
        measurements = next(chunks, None)
        if measurements is None:
            return None
        payloads = self.program.packed_payloads(measurements)  # checks the shape
        start = run.taken
        run.taken += measurements.shape[0]
        if run.taken > run.fates.shape[0]:
            raise ValueError(f"the measurement chunks hold more than shots={run.fates.shape[0]}")
        meas = measurements.astype(np.bool_, copy=False)
        run.raw_obs[start : run.taken] = self.program.observables(meas)
        return start, payloads

    def _between_chunks(
        self, run: _Run, chunks: Iterator[np.ndarray]
    ) -> tuple[int, list[np.ndarray]] | None:
        """Let in-flight shots resolve, then take the next chunk (sampling it, for a
        generator), the round clock held meanwhile: no correction is timed and no round
        is due across the pause."""
        t = time.monotonic_ns()
        while run.pending and not run.aborted:
            run.resolved += self._poll(run, 1e-3)
        taken = self._take(run, chunks)
        if taken is not None:
            run.paused_ns += time.monotonic_ns() - t
        return taken

    def _stream(
        self,
        run: _Run,
        start: int,
        payloads: list[np.ndarray],
        tx: PacketSender,
        on_progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """Emit the shots of one chunk, from shot ``start`` on, round by round."""
        cfg = self.config
        nbits = self.program.bits_per_round
        r_last = len(nbits) - 1
        period_ns = cfg.round_time_s * 1e9
        timeout_ns = int(cfg.correction_timeout_s * 1e9)
        paced = cfg.mode == "paced"
        n = payloads[0].shape[0]
        lags = np.zeros(n * (r_last + 1) if paced else 0, dtype=np.int64)  # this chunk's
        t_base, g0 = self._t0 + run.paused_ns, run.ticks
        g = g0  # global round index: the round clock's tick count
        for shot in range(start, start + n):
            for r in range(r_last + 1):
                if paced:
                    due = t_base + int(g * period_ns)
                    while time.monotonic_ns() < due:
                        run.resolved += self._poll(run, 0.0)
                flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (
                    FLAG_LAST_ROUND if r == r_last else 0
                )
                slot = tx.reserve()
                if slot is None and not paced:
                    slot = self._wait_for_room(run, tx)
                    if slot is None:
                        break
                t = time.monotonic_ns()
                if slot is None:  # paced only: hardware cannot wait for the bridge
                    run.fates[shot, r] = Fate.LOST_BACKPRESSURE
                    run.backpressure += 1
                    run.last_backpressure_ns = t
                else:
                    cyc = self._cycles(t)
                    n_bytes = write_syndrome(
                        slot,
                        cfg.stream_id,
                        shot,
                        r,
                        run.seq,
                        cyc,
                        flags,
                        payloads[r][shot - start],
                        nbits[r],
                    )
                    tx.commit(n_bytes)
                    run.fates[shot, r] = Fate.PENDING
                    run.seq += 1
                    run.emit_ns[shot], run.emit_cyc[shot], run.last_seq[shot] = t, cyc, run.seq - 1
                    run.first_emit = run.first_emit or t
                    run.last_emit = t
                    run.n_emit += 1
                if paced:
                    lags[g - g0] = t - due
                g += 1
            if run.aborted:
                break
            if run.emit_ns[shot]:  # a shot with every round dropped awaits no correction
                run.pending[shot] = run.emit_ns[shot] + timeout_ns
            run.resolved += self._poll(run, 0.0)
            while not paced and len(run.pending) >= cfg.max_in_flight and not run.aborted:
                run.resolved += self._poll(run, 1e-3)
            self._check_in(run, shot, on_progress, should_stop)
            if run.aborted:
                break
        run.ticks = g
        run.lags.add(lags[: g - g0])

    def _check_in(
        self,
        run: _Run,
        shot: int,
        on_progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """About every 50 ms: update the registers, report progress, honour a stop request."""
        now = time.monotonic_ns()
        if now < run.next_progress:
            return
        run.next_progress = now + _PROGRESS_EVERY_NS
        self._sync_registers(run)
        if on_progress is not None:
            on_progress(shot + 1, run.resolved)
        if should_stop is not None and should_stop():
            run.aborted = "interrupted"

    def _wait_for_room(self, run: _Run, tx: PacketSender) -> np.ndarray | None:
        """Lockstep: wait for the decoder to take rounds; None once it is found unresponsive."""
        deadline = time.monotonic_ns() + int(self.config.stall_timeout_s * 1e9)
        while (slot := tx.reserve()) is None:
            self._poll(run, 1e-4)
            if run.aborted:
                return None
            if time.monotonic_ns() > deadline:
                stall = self.config.stall_timeout_s
                run.aborted = f"decoder unresponsive: the bridge stayed full for {stall} s"
                return None
        return slot

    def _poll(self, run: _Run, timeout_s: float) -> int:
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
            self._settle(run, shot, Fate.LOST_TIMEOUT)
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

    def _settle(self, run: _Run, shot: int, fate: Fate) -> None:
        row = run.fates[shot]
        row[row == Fate.PENDING] = fate

    def _take_correction(self, run: _Run, buf: np.ndarray, length: int, now: int) -> int:
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
        lat_cyc = self._cycles(now) - t_fpga
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
            self._settle(run, shot, Fate.DECODED)
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
            self._settle(run, shot, Fate.LOST_DECODER_ERROR)
        del run.pending[shot]
        return 1

    def _finish(self, run: _Run, tx: PacketSender) -> None:
        """Send end-of-stream, wait for the last corrections, and settle every round."""
        eos = np.zeros(64, dtype=np.uint8)
        n = write_syndrome(
            eos,
            self.config.stream_id,
            0,
            0,
            run.seq,
            self._cycles(time.monotonic_ns()),
            FLAG_END_OF_STREAM,
            eos[:0],
            0,
        )
        give_up = time.monotonic_ns() + int(self.config.stall_timeout_s * 1e9)
        sent = tx.send(eos[:n], timeout_s=self.config.stall_timeout_s)
        if sent:
            run.seq += 1
        while (run.pending or (sent and not run.counters.eos_acked and not run.link_closed)) and (
            time.monotonic_ns() < give_up
        ):
            if run.aborted and not run.pending:
                break
            self._poll(run, 1e-3)
            if run.aborted == "interrupted":
                # An interrupted run still collects what is already on its way, briefly.
                give_up = min(give_up, time.monotonic_ns() + 200_000_000)
        for shot in list(run.pending):
            self._settle(run, shot, Fate.LOST_ABORTED if run.aborted else Fate.LOST_TIMEOUT)
            run.counters.shots_timed_out += not run.aborted
        run.pending.clear()
        # Rounds of a shot cut off mid-way by an abort never got a correction either.
        run.fates[run.fates == Fate.PENDING] = Fate.LOST_ABORTED
        self._sync_registers(run)
        status = 1 << 1 | (1 << 2 if run.aborted.startswith("decoder") else 0)
        self.regs.set("STATUS", status | (1 << 3 if run.backpressure else 0))

    def _sync_registers(self, run: _Run) -> None:
        regs = self.regs
        regs.set64("CYCLE", self._cycles(time.monotonic_ns()))
        regs.set64("ROUNDS_EMITTED", run.n_emit)
        regs.set("ROUNDS_BACKPRESSURE", run.backpressure)
        run.counters.write_to(regs)

    def _result(self, run: _Run) -> FrontEndResult:
        pacing = None
        if self.config.mode == "paced" and run.lags.count:
            span = max(0, run.last_emit - run.first_emit - run.paused_ns) * 1e-9
            interval = span / (run.n_emit - 1) if run.n_emit > 1 else 0.0
            pacing = PacingStats(
                target_interval_s=self.config.round_time_s,
                interval_s=interval,
                lag_p50_s=run.lags.percentile_s(50),
                lag_p99_s=run.lags.percentile_s(99),
                lag_max_s=run.lags.max_ns * 1e-9,
            )
        return FrontEndResult(
            mode=self.config.mode,
            fates=run.fates,
            predictions=run.pred,
            raw_observables=run.raw_obs,
            latency_ns=run.lat_ns,
            latency_cycles=run.lat_cyc,
            emit_ns=run.emit_ns,
            host_rx_ns=run.host_rx,
            host_tx_ns=run.host_tx,
            budget_cycles=self.config.budget_cycles,
            fabric_clock_hz=self.config.fabric_clock_hz,
            wall_s=(time.monotonic_ns() - self._t0) * 1e-9,
            pacing=pacing,
            rejections=run.counters.rejections,
            registers=self.regs.snapshot(),
            aborted=run.aborted,
        )


def _chunks(
    measurements: np.ndarray | Iterable[np.ndarray], shots: int | None
) -> tuple[Iterator[np.ndarray], int]:
    """``run``'s measurements as an iterator of chunks, and the shots they hold in all."""
    if isinstance(measurements, np.ndarray):
        if shots is not None and shots != measurements.shape[0]:
            raise ValueError(
                f"shots={shots} but measurements has {measurements.shape[0]} rows; "
                "leave shots unset when passing one array"
            )
        return iter([measurements]), measurements.shape[0]
    if shots is None:
        raise ValueError(
            "measurement chunks need shots=, their total (the run's ledger is sized up front)"
        )
    return iter(measurements), shots
