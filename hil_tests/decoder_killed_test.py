"""End-to-end: the decoder process dies mid-run. The front end notices through its
timeouts and counters, and the run ends with a report instead of hanging."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest

from qhil.fpga import CycleModel, Fate
from qhil.host import RunConfig, _runner, run_loop


@pytest.mark.parametrize("mode", ["lockstep", "paced"])
def test_killed_decoder_ends_the_run_with_a_report(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids: list[int] = []
    answered = [0]
    original_ready = _runner._Child.wait_ready
    original_take = CycleModel._take_correction

    def remember_pid(self: _runner._Child, on_status: Any = None) -> None:
        original_ready(self, on_status)
        pids.append(self.proc.pid)

    def take_then_kill(self, run, buf, length, now):  # type: ignore[no-untyped-def]
        resolved = original_take(self, run, buf, length, now)
        answered[0] += resolved
        if answered[0] == 200 and resolved:  # mid-run: the decoder has answered some shots
            os.kill(pids[0], signal.SIGKILL)
        return resolved

    monkeypatch.setattr(_runner._Child, "wait_ready", remember_pid)
    monkeypatch.setattr(CycleModel, "_take_correction", take_then_kill)
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
    worker = threading.Thread(target=lambda: outcome.append(run_loop(cfg, progress=False)))
    worker.start()
    worker.join(120)  # a guard against a hang, not a timing assertion
    assert not worker.is_alive(), "the run hung after its decoder was killed"
    out = outcome[0]
    r = out.report
    assert r.aborted.startswith("decoder unresponsive"), r.aborted
    assert out.host is None and any("exit code -9" in n for n in r.notes), r.notes
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
