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

``CycleModel`` emits the rounds; one run's clock and ledger are ``RunState``
(``_cycle_run``), and ``CorrectionIntake`` (``_cycle_corrections``) takes the
corrections back.

>>> import stim
>>> from qhil.bridge import ShmRing
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
>>> model = CycleModel.from_circuit(circuit, config=FrontEndConfig())
>>> model.regs.read("ROUND_PERIOD"), model.program.bits_per_round
(250, (4, 4))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import stim

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    GcPause,
    PacketReceiver,
    PacketSender,
    write_syndrome,
)
from qhil.fpga._config import FrontEndConfig
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import RegisterFile
from qhil.fpga.model._cycle_corrections import CorrectionIntake
from qhil.fpga.model._cycle_emit import RoundEmitter
from qhil.fpga.model._cycle_run import RunState, progress_of, result_of
from qhil.fpga.model._ledger import Fate, FrontEndProgress, FrontEndResult

__all__ = ["CycleModel"]

ProgressFn = Callable[[int, int], None]  # (shots emitted, shots resolved)
_PROGRESS_EVERY_NS = 50_000_000


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
        self._corrections = CorrectionIntake(config, num_observables)
        self._gc = GcPause(every_s=_PROGRESS_EVERY_NS / 1e9)
        # Compile the numba encoder now, with the argument types the run uses.
        scratch = np.zeros(64, dtype=np.uint8)
        write_syndrome(scratch, 0, 0, 0, 0, 0, 0, scratch[:1], 0)
        RoundEmitter.warm_up()

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, *, config: FrontEndConfig) -> CycleModel:
        return cls(DetectorProgram.from_circuit(circuit), circuit.num_observables, config)

    def progress(self) -> FrontEndProgress | None:
        """The current (or last) run so far, for a metrics scrape from another thread;
        None before the first run. Reads only; numbers may be one shot apart."""
        run = getattr(self, "_live", None)
        return None if run is None else progress_of(run)

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
        self._corrections.attach(rx)
        run = self._live = RunState(shots, self.program.num_rounds, self.num_observables)
        taken = self._take(run, chunks)  # before the clock starts: start-up is not latency
        run.start_clock(self.config.fabric_clock_hz)
        self.regs.write("CTRL", self.regs.read("CTRL") | 1)
        self.regs.set("STATUS", 1)
        with self._gc:  # collected between shots (_check_in), never during one
            while taken is not None and not run.aborted:
                self._stream(run, *taken, tx, on_progress, should_stop)
                taken = None if run.aborted else self._between_chunks(run, chunks)
        if run.taken < shots and not run.aborted:
            raise ValueError(f"the measurement chunks held {run.taken} shots; shots={shots}")
        self._finish(run, tx)
        if on_progress is not None:
            on_progress(int(np.count_nonzero(run.fates[:, -1] != Fate.NOT_EMITTED)), shots)
        return result_of(run, self.config, self.regs)

    def _take(
        self, run: RunState, chunks: Iterator[np.ndarray]
    ) -> tuple[int, list[np.ndarray]] | None:
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
        self, run: RunState, chunks: Iterator[np.ndarray]
    ) -> tuple[int, list[np.ndarray]] | None:
        """Let in-flight shots resolve, then take the next chunk (sampling it, for a
        generator), the round clock held meanwhile: no correction is timed and no round
        is due across the pause."""
        t = time.monotonic_ns()
        while run.pending and not run.aborted:
            run.resolved += self._corrections.poll(run, 1e-3)
        taken = self._take(run, chunks)
        if taken is not None:
            run.paused_ns += time.monotonic_ns() - t
        return taken

    def _stream(
        self,
        run: RunState,
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
        t_base, g0 = run.t0_ns + run.paused_ns, run.ticks
        emitter = RoundEmitter(tx, cfg.stream_id)
        g = g0  # global round index: the round clock's tick count
        for shot in range(start, start + n):
            for r in range(r_last + 1):
                if paced:
                    due = t_base + int(g * period_ns)
                    while time.monotonic_ns() < due:
                        run.resolved += self._corrections.poll(run, 0.0)
                flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (
                    FLAG_LAST_ROUND if r == r_last else 0
                )
                payload = payloads[r][shot - start]
                t = emitter.emit(run, shot, r, flags, payload, nbits[r])
                if t is None and not paced:  # lockstep waits for the decoder to take rounds
                    if not self._wait_for_room(run, tx):
                        break
                    t = emitter.emit(run, shot, r, flags, payload, nbits[r])
                if t is None:  # paced only: hardware cannot wait for the bridge
                    t = time.monotonic_ns()
                    run.fates[shot, r] = Fate.LOST_BACKPRESSURE
                    run.backpressure += 1
                    run.last_backpressure_ns = t
                if paced:
                    lags[g - g0] = t - due
                g += 1
            if run.aborted:
                break
            if run.emit_ns[shot]:  # a shot with every round dropped awaits no correction
                run.pending[shot] = run.emit_ns[shot] + timeout_ns
            run.resolved += self._corrections.poll(run, 0.0)
            while not paced and len(run.pending) >= cfg.max_in_flight and not run.aborted:
                run.resolved += self._corrections.poll(run, 1e-3)
            self._check_in(run, shot, on_progress, should_stop)
            if run.aborted:
                break
        run.ticks = g
        run.lags.add(lags[: g - g0])

    def _check_in(
        self,
        run: RunState,
        shot: int,
        on_progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """About every 50 ms: update the registers, report progress, honour a stop request."""
        now = time.monotonic_ns()
        if now < run.next_progress:
            return
        run.next_progress = now + _PROGRESS_EVERY_NS
        self._gc.collect(now)
        self._sync_registers(run)
        if on_progress is not None:
            on_progress(shot + 1, run.resolved)
        if should_stop is not None and should_stop():
            run.aborted = "interrupted"

    def _wait_for_room(self, run: RunState, tx: PacketSender) -> bool:
        """Lockstep: wait for the decoder to take rounds; False once it is found unresponsive."""
        deadline = time.monotonic_ns() + int(self.config.stall_timeout_s * 1e9)
        while tx.reserve() is None:
            self._corrections.poll(run, 1e-4)
            if run.aborted:
                return False
            if time.monotonic_ns() > deadline:
                stall = self.config.stall_timeout_s
                run.aborted = f"decoder unresponsive: the bridge stayed full for {stall} s"
                return False
        return True

    def _finish(self, run: RunState, tx: PacketSender) -> None:
        """Send end-of-stream, wait for the last corrections, and settle every round."""
        eos = np.zeros(64, dtype=np.uint8)
        n = write_syndrome(
            eos,
            self.config.stream_id,
            0,
            0,
            run.seq,
            run.cycles(time.monotonic_ns()),
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
            self._corrections.poll(run, 1e-3)
            if run.aborted == "interrupted":
                # An interrupted run still collects what is already on its way, briefly.
                give_up = min(give_up, time.monotonic_ns() + 200_000_000)
        for shot in list(run.pending):
            run.settle(shot, Fate.LOST_ABORTED if run.aborted else Fate.LOST_TIMEOUT)
            run.counters.shots_timed_out += not run.aborted
        run.pending.clear()
        # Rounds of a shot cut off mid-way by an abort never got a correction either.
        run.fates[run.fates == Fate.PENDING] = Fate.LOST_ABORTED
        self._sync_registers(run)
        status = 1 << 1 | (1 << 2 if run.aborted.startswith("decoder") else 0)
        self.regs.set("STATUS", status | (1 << 3 if run.backpressure else 0))

    def _sync_registers(self, run: RunState) -> None:
        regs = self.regs
        regs.set64("CYCLE", run.cycles(time.monotonic_ns()))
        regs.set64("ROUNDS_EMITTED", run.n_emit)
        regs.set("ROUNDS_BACKPRESSURE", run.backpressure)
        run.counters.write_to(regs)


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
