"""Front-end settings: clocks, budget, pacing mode and the timeouts that end a run."""

from __future__ import annotations

import dataclasses

__all__ = ["MODES", "FrontEndConfig"]

MODES = ("lockstep", "paced")


@dataclasses.dataclass(frozen=True)
class FrontEndConfig:
    """How the front end (cycle model or board) runs.

    Attributes:
        mode: "paced" emits one round per round-clock tick, in real time, best
            effort, and drops a round (``backpressure``) when the bridge is full,
            as hardware must. "lockstep" goes as fast as the decoder takes
            rounds: it waits for room in the bridge and keeps at most
            ``max_in_flight`` shots awaiting their correction.
        fabric_clock_hz: the cycle counter's clock (250 MHz by default).
        round_time_s: the QEC round clock period (1 us for superconducting qubits).
        budget_s: a correction arriving later than this after the shot's last
            round was emitted is a budget miss.
        correction_timeout_s: a shot with no valid correction this long after
            its last round was emitted is lost (``timeout``).
        stall_timeout_s: with shots pending and no correction for this long, or
            no room in the bridge for this long, the decoder is declared
            unresponsive and the run ends.
        max_in_flight: lockstep only; shots allowed to await a correction at once.
        stream_id: the stream (logical qubit) the front end emits on.

    >>> FrontEndConfig(mode="paced").round_period_cycles
    250
    >>> FrontEndConfig(mode="fast")
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of 'lockstep', 'paced'; got 'fast'
    """

    mode: str = "lockstep"
    fabric_clock_hz: float = 250e6
    round_time_s: float = 1e-6
    budget_s: float = 10e-6
    correction_timeout_s: float = 0.5
    stall_timeout_s: float = 2.0
    max_in_flight: int = 1
    stream_id: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(
                f"mode must be one of {', '.join(map(repr, MODES))}; got {self.mode!r}"
            )
        for name in (
            "fabric_clock_hz",
            "round_time_s",
            "budget_s",
            "correction_timeout_s",
            "stall_timeout_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)!r}")
        if self.correction_timeout_s > self.stall_timeout_s:
            raise ValueError(
                f"correction_timeout_s ({self.correction_timeout_s}) must not exceed "
                f"stall_timeout_s ({self.stall_timeout_s}): a stalled decoder is found by timeouts"
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1; got {self.max_in_flight}")
        if not 0 <= self.stream_id < 2**32:
            raise ValueError(f"stream_id must fit in 32 bits; got {self.stream_id}")

    @property
    def round_period_cycles(self) -> int:
        return max(1, round(self.round_time_s * self.fabric_clock_hz))

    @property
    def budget_cycles(self) -> int:
        return round(self.budget_s * self.fabric_clock_hz)
