"""What became of every round the front end emitted, and the run's timing records."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

__all__ = ["Fate", "FrontEndProgress", "FrontEndResult", "PacingStats"]


class Fate(enum.IntEnum):
    """The final state of one round. Every emitted round ends DECODED or in a LOST_* state."""

    NOT_EMITTED = 0  # the run ended before the round clock reached it
    DECODED = 1  # its shot's correction arrived and was applied
    LOST_BACKPRESSURE = 2  # dropped at the front end: the bridge was full
    LOST_IN_TRANSIT = 3  # the decoder reported it never got this round intact
    LOST_SHOT_INCOMPLETE = 4  # it arrived, but other rounds of its shot did not
    LOST_DECODER_ERROR = 5  # the decoder failed on its shot
    LOST_TIMEOUT = 6  # no valid correction within the correction timeout
    LOST_ABORTED = 7  # the run stopped before its correction came
    PENDING = 8  # transient: emitted, awaiting a correction; never in a finished result

    @property
    def label(self) -> str:
        return self.name.lower().removeprefix("lost_")


LOST_FATES = tuple(f for f in Fate if f.name.startswith("LOST_"))


@dataclasses.dataclass(frozen=True)
class FrontEndProgress:
    """A running front end's account so far (for metrics).

    ``rounds_by_fate``: rounds per ``Fate`` name, lower case (``lost_timeout``, ...).
    ``corrections_rejected``: rejected correction packets by ``Reason`` label.
    ``latency_ns``: int64[n], reaction latency of each shot decoded so far (a copy).
    """

    rounds_by_fate: dict[str, int]
    corrections_rejected: dict[str, int]
    shots_in_flight: int
    rounds_backpressure: int
    latency_ns: np.ndarray


@dataclasses.dataclass(frozen=True)
class PacingStats:
    """How well the front end kept to its round clock (paced mode).

    ``interval_s`` is the mean time between emitted rounds; ``lag_*_s`` is
    how late rounds left relative to their scheduled tick.
    """

    target_interval_s: float
    interval_s: float
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float

    def __post_init__(self) -> None:
        if self.target_interval_s <= 0 or self.interval_s < 0:
            raise ValueError("pacing intervals must be non-negative (target positive)")


@dataclasses.dataclass(frozen=True)
class FrontEndResult:
    """Everything the front end recorded in one run.

    Per-shot arrays have one row per planned shot, in shot order.

    Attributes:
        fates: uint8[shots, rounds_per_shot], a ``Fate`` per round.
        predictions: bool[shots, num_observables], the logical-frame flips the
            decoder sent (False for shots without a DECODED correction).
        raw_observables: bool[shots, num_observables], measured observables
            relative to their noiseless values, before correction.
        latency_ns: int64[shots], reaction latency in host monotonic ns (from
            emitting the shot's last round to its correction arriving), -1
            where no correction was applied.
        latency_cycles: int64[shots], the same in fabric cycles, -1 likewise.
        host_rx_ns, host_tx_ns, emit_ns: int64[shots], when the decoder got the
            last round, when it sent the correction, and when the front end
            emitted the last round (host monotonic ns; 0 where unknown).
        rejections: correction packets rejected, by reason label.
        registers: the register file at the end of the run.
        aborted: why the run stopped early, or "" if it ran to the end.
    """

    mode: str
    fates: np.ndarray
    predictions: np.ndarray
    raw_observables: np.ndarray
    latency_ns: np.ndarray
    latency_cycles: np.ndarray
    emit_ns: np.ndarray
    host_rx_ns: np.ndarray
    host_tx_ns: np.ndarray
    budget_cycles: int
    fabric_clock_hz: float
    wall_s: float
    pacing: PacingStats | None
    rejections: dict[str, int]
    registers: dict[str, int]
    aborted: str = ""

    def __post_init__(self) -> None:
        shots = self.fates.shape[0]
        for name in (
            "predictions",
            "raw_observables",
            "latency_ns",
            "latency_cycles",
            "emit_ns",
            "host_rx_ns",
            "host_tx_ns",
        ):
            if getattr(self, name).shape[0] != shots:
                raise ValueError(
                    f"{name} has {getattr(self, name).shape[0]} rows; expected {shots}"
                )
        if np.any(self.fates == Fate.PENDING):
            raise ValueError("a finished run cannot hold PENDING rounds")

    @property
    def decoded(self) -> np.ndarray:
        """bool[shots]: the shot's correction arrived and was applied."""
        return np.all(self.fates == Fate.DECODED, axis=1)

    @property
    def rounds_emitted(self) -> int:
        return int(np.count_nonzero(self.fates != Fate.NOT_EMITTED))

    @property
    def rounds_decoded(self) -> int:
        return int(np.count_nonzero(self.fates == Fate.DECODED))

    def rounds_lost(self) -> dict[str, int]:
        """Lost rounds by reason label; every LOST fate appears, zeros included."""
        return {f.label: int(np.count_nonzero(self.fates == f)) for f in LOST_FATES}

    def check_nothing_lost_silently(self) -> None:
        """Raise unless every emitted round is decoded or lost with a reason."""
        lost = sum(self.rounds_lost().values())
        if self.rounds_decoded + lost != self.rounds_emitted:
            raise AssertionError(
                f"round ledger does not balance: emitted {self.rounds_emitted} != decoded "
                f"{self.rounds_decoded} + lost {lost}"
            )
        partial = ~self.decoded & np.any(self.fates == Fate.DECODED, axis=1)
        if partial.any():
            raise AssertionError(f"shots {np.flatnonzero(partial)[:5]} are only partly decoded")

    @property
    def logical_errors(self) -> np.ndarray:
        """bool[shots]: decoded shots whose corrected observable is wrong."""
        wrong = np.any(self.raw_observables ^ self.predictions, axis=1)
        return wrong & self.decoded
