"""End-to-end: the closed loop's decisions equal offline PyMatching on the same shots."""

from __future__ import annotations

import numpy as np
import pytest

from qhil.fpga import Fate
from qhil.host import RunConfig, make_decoder, run_loop


def _offline(outcome) -> np.ndarray:  # type: ignore[no-untyped-def]
    return make_decoder("pymatching", outcome.circuit).decode_batch(outcome.shots.detectors)


@pytest.mark.parametrize(
    ("distance", "rounds", "basis", "noise"),
    [(3, 3, "z", "stim-depolarizing"), (5, 2, "x", "sd6"), (3, 1, "z", "si1000")],
)
def test_loop_predictions_equal_offline_pymatching(
    distance: int, rounds: int, basis: str, noise: str
) -> None:
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": distance,
            "experiment.rounds": rounds,
            "experiment.basis": basis,
            "experiment.noise": noise,
            "experiment.p": 0.005,
            "experiment.shots": 1500,
            "experiment.seed": 11,
        }
    )
    out = run_loop(cfg, progress=False)
    r = out.report
    assert not r.aborted
    assert r.shots_decoded == r.shots_emitted == 1500
    assert r.rounds_emitted == 1500 * (rounds + 1) and sum(r.rounds_lost.values()) == 0
    np.testing.assert_array_equal(out.result.predictions, _offline(out))
    # The front end's own detection-event unit agrees with stim's m2d conversion.
    np.testing.assert_array_equal(out.result.raw_observables, out.shots.observables)
    wrong = np.any(out.result.predictions != out.shots.observables, axis=1)
    assert r.logical_errors == int(wrong.sum())
    assert out.host is not None and out.host.shots_decoded == 1500
    assert r.latency_us.n == 1500 and r.latency_us.p50 > 0
    assert r.registers["SHOTS_DECODED_LO"] == 1500


def test_loop_over_zeromq_ipc(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 2,
            "experiment.shots": 500,
            "bridge.transport": "zmq",
            "bridge.endpoint": f"ipc://{tmp_path}/qhil.sock",
            "frontend.max_in_flight": 4,
        }
    )
    out = run_loop(cfg, progress=False)
    assert out.report.transport == "zmq" and out.report.shots_decoded == 500
    np.testing.assert_array_equal(out.result.predictions, _offline(out))


def test_paced_mode_reports_its_pacing() -> None:
    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 3,
            "experiment.shots": 300,
            "frontend.mode": "paced",
            "frontend.round_time_us": 100.0,
        }
    )
    out = run_loop(cfg, progress=False)
    r = out.report
    assert r.mode == "paced" and r.pacing is not None
    assert r.pacing["target_interval_s"] == pytest.approx(100e-6)
    assert r.pacing["interval_s"] > 0
    # Every emitted round is accounted for; none may be silently missing.
    assert r.rounds_decoded + sum(r.rounds_lost.values()) == r.rounds_emitted
    decoded = out.result.decoded
    np.testing.assert_array_equal(out.result.predictions[decoded], _offline(out)[decoded])
    assert np.all(out.result.fates != Fate.PENDING)


def test_loop_with_the_predecoder_equals_the_offline_pipeline() -> None:
    from qhil.kernels import PreDecodedMatching

    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": 3,
            "experiment.rounds": 3,
            "experiment.shots": 300,
            "experiment.p": 0.005,
            "decoder.name": "predecoder",
        }
    )
    out = run_loop(cfg, progress=False)
    assert out.report.decoder == "predecoder" and out.report.shots_decoded == 300
    offline = PreDecodedMatching.from_circuit(out.circuit).decode_batch(out.shots.detectors)
    np.testing.assert_array_equal(out.result.predictions, offline)
