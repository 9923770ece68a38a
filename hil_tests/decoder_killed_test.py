"""End-to-end: the decoder process dies mid-run. The front end notices through its
timeouts and counters, and the run ends with a report instead of hanging."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from qhil.fpga import Fate
from qhil.host import RunConfig, run_loop


class _KillDecoderMidRun:
    """Stands in for a ``MetricsExporter``: ``run_loop`` hands it the front end's live
    numbers, and it kills the decoder process once ``rounds`` rounds were decoded."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.killed_at = -1

    def watch_front_end(self, snapshot: Callable[[], Any]) -> None:
        def watch() -> None:
            while (snap := snapshot()) is None or snap.rounds_by_fate["decoded"] < self.rounds:
                time.sleep(2e-3)
            (decoder,) = [p for p in multiprocessing.active_children() if p.name == "qhil-decoder"]
            self.killed_at = snap.rounds_by_fate["decoded"]
            os.kill(decoder.pid, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()


@pytest.mark.parametrize("mode", ["lockstep", "paced"])
def test_killed_decoder_ends_the_run_with_a_report(mode: str) -> None:
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 3,
            "experiment.shots": 200_000,
            "frontend.mode": mode,
            "frontend.round_time_us": 20.0,
            "frontend.correction_timeout_rounds": 10_000,  # 0.2 s at 20 us
            "decoder.assembly_timeout_rounds": 2_500,
            "frontend.stall_timeout_s": 0.6,
            "bridge.n_slots": 256,
        }
    )
    outcome: list = []
    killer = _KillDecoderMidRun(rounds=600)
    worker = threading.Thread(
        target=lambda: outcome.append(run_loop(cfg, progress=False, metrics=killer))  # type: ignore[arg-type]
    )
    worker.start()
    worker.join(120)  # a guard against a hang, not a timing assertion
    assert not worker.is_alive(), "the run hung after its decoder was killed"
    out = outcome[0]
    r = out.report
    assert r.aborted.startswith("decoder unresponsive"), r.aborted
    assert out.host is None and any("exit code -9" in n for n in r.notes), r.notes
    assert killer.killed_at >= 600
    assert 0 < r.shots_decoded < r.shots_emitted < r.shots_planned
    lost = r.rounds_lost
    assert lost["timeout"] + lost["aborted"] + lost["backpressure"] > 0
    out.result.check_nothing_lost_silently()
    assert r.registers["STATUS"] & (1 << 2)  # DECODER_UNRESPONSIVE
    # A shot times out as a whole; in paced mode its last round may have been dropped
    # (backpressure) while earlier ones timed out, so count shots, not last rounds.
    assert r.registers["SHOTS_TIMED_OUT"] == int(
        (out.result.fates == Fate.LOST_TIMEOUT).any(axis=1).sum()
    )
