"""The state of one ``CycleModel`` run: its cycle clock, the per-shot ledger, pacing lags.

``RunState`` lives only inside ``CycleModel.run`` (and is read by ``progress``
from another thread); ``LagHistogram`` keeps how late paced rounds left their
tick in fixed memory; ``progress_of`` and ``result_of`` turn a run into the
``FrontEndProgress`` / ``FrontEndResult`` the caller sees.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from qhil.fpga._config import FrontEndConfig
from qhil.fpga._correction_rules import CorrectionCounters
from qhil.fpga._regmap import RegisterFile
from qhil.fpga.model._ledger import Fate, FrontEndProgress, FrontEndResult, PacingStats

__all__ = ["LagHistogram", "RunState", "progress_of", "result_of"]

# Paced-mode lag histogram: bin edges 0, then 1 ns .. 2**40 ns (~18 min), 32 bins an octave.
_LAG_EDGES_NS = np.concatenate(([0.0], np.geomspace(1.0, 2.0**40, 40 * 32 + 1)))


class LagHistogram:
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


class RunState:
    """Mutable state of one run: ``shots`` shots of ``rounds`` rounds, ``n_obs`` observables."""

    def __init__(self, shots: int, rounds: int, n_obs: int) -> None:
        self.fates = np.full((shots, rounds), Fate.NOT_EMITTED, dtype=np.uint8)
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
        self.lags = LagHistogram()
        self.first_emit = 0
        self.last_emit = 0
        self.n_emit = 0
        self.taken = 0  # shots in the measurement chunks taken so far
        self.ticks = 0  # the round clock's tick count
        self.paused_ns = 0  # the round clock stood still this long (between chunks)
        self.resolved = 0
        self.next_progress = 0
        self.t0_ns = 0  # the cycle counter's 0 (set by start_clock)
        self.fabric_hz = 0

    def start_clock(self, fabric_clock_hz: float) -> None:
        """Start the cycle counter now, at the fabric clock's rate."""
        self.fabric_hz = int(fabric_clock_hz)
        self.t0_ns = time.monotonic_ns()
        self.last_heard_ns = self.next_progress = self.t0_ns

    def cycles(self, t_ns: int) -> int:
        """The cycle counter at monotonic time ``t_ns``."""
        return (t_ns - self.t0_ns) * self.fabric_hz // 1_000_000_000

    def settle(self, shot: int, fate: Fate) -> None:
        """Give ``shot``'s rounds that still await a correction their ``fate``."""
        row = self.fates[shot]
        row[row == Fate.PENDING] = fate


def progress_of(run: RunState) -> FrontEndProgress:
    """The run so far (read from another thread: numbers may be one shot apart)."""
    counts = np.bincount(run.fates.ravel(), minlength=len(Fate))
    decoded = run.lat_ns[run.lat_ns >= 0]
    return FrontEndProgress(
        rounds_by_fate={f.name.lower(): int(counts[f]) for f in Fate},
        corrections_rejected=dict(run.counters.rejections),
        shots_in_flight=len(run.pending),
        rounds_backpressure=run.backpressure,
        latency_ns=decoded.copy(),
    )


def result_of(run: RunState, config: FrontEndConfig, regs: RegisterFile) -> FrontEndResult:
    """The finished run's ledger, pacing and registers."""
    pacing = None
    if config.mode == "paced" and run.lags.count:
        span = max(0, run.last_emit - run.first_emit - run.paused_ns) * 1e-9
        interval = span / (run.n_emit - 1) if run.n_emit > 1 else 0.0
        pacing = PacingStats(
            target_interval_s=config.round_time_s,
            interval_s=interval,
            lag_p50_s=run.lags.percentile_s(50),
            lag_p99_s=run.lags.percentile_s(99),
            lag_max_s=run.lags.max_ns * 1e-9,
        )
    return FrontEndResult(
        mode=config.mode,
        fates=run.fates,
        predictions=run.pred,
        raw_observables=run.raw_obs,
        latency_ns=run.lat_ns,
        latency_cycles=run.lat_cyc,
        emit_ns=run.emit_ns,
        host_rx_ns=run.host_rx,
        host_tx_ns=run.host_tx,
        budget_cycles=config.budget_cycles,
        fabric_clock_hz=config.fabric_clock_hz,
        wall_s=(time.monotonic_ns() - run.t0_ns) * 1e-9,
        pacing=pacing,
        rejections=run.counters.rejections,
        registers=regs.snapshot(),
        aborted=run.aborted,
    )
