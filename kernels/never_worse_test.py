"""The shipped pre-decoder, at its defaults, never makes PyMatching worse.

Each case decodes fresh shots (seeds no training or calibration run uses)
twice: PyMatching alone, and ``obs_flip ^ PyMatching(residual)`` with
``PreDecoder.for_circuit(circuit)`` defaults. The comparison is paired
(McNemar): only shots where exactly one of the two is wrong carry
information. The test fails when the pre-decoder's extra failures exceed its
extra successes by more than 2.5 standard deviations of that difference (a
one-sided 99.4% bound), so a real regression is caught and luck is not.

The cases include noise the model never trained on: stim's generated circuits
with measurement noise ten times the gate noise, and with gate noise only.
"""

from __future__ import annotations

import math

import numpy as np
import pymatching
import pytest
import stim

from qhil.kernels import PreDecoder
from qhil.sim import NoiseModel, memory_circuit

# Fresh shots: validation (2**40 + i) and calibration (2**41 + i) seeds lie elsewhere, and
# training draws its seeds at random from [0, 2**62).
_SEED = 7 * 10**9


def _stim_circuit(basis: str, d: int, *, gate: float, measure: float) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=d,
        after_clifford_depolarization=gate,
        before_measure_flip_probability=measure,
        after_reset_flip_probability=measure,
    )


CASES = {
    "sd6-z-d5-p0.005": lambda: memory_circuit(
        distance=5, rounds=5, basis="z", noise=NoiseModel.from_name("sd6", 0.005)
    ),
    "si1000-x-d5-p0.004": lambda: memory_circuit(
        distance=5, rounds=5, basis="x", noise=NoiseModel.from_name("si1000", 0.004)
    ),
    "sd6-x-d7-p0.003": lambda: memory_circuit(
        distance=7, rounds=7, basis="x", noise=NoiseModel.from_name("sd6", 0.003)
    ),
    "stim-z-d3-p0.006": lambda: memory_circuit(
        distance=3, rounds=3, basis="z", noise=NoiseModel.from_name("stim-depolarizing", 0.006)
    ),
    "unseen-measurement-heavy-x-d5": lambda: _stim_circuit("x", 5, gate=0.001, measure=0.01),
    "unseen-gate-only-z-d5": lambda: _stim_circuit("z", 5, gate=0.006, measure=0.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_default_predecoder_is_no_worse_than_pymatching(case: str) -> None:
    circuit = CASES[case]()
    shots = 8000
    dets, obs = circuit.compile_detector_sampler(seed=_SEED + sorted(CASES).index(case)).sample(
        shots, separate_observables=True
    )
    matching = pymatching.Matching.from_detector_error_model(
        circuit.detector_error_model(decompose_errors=True)
    )
    pm_wrong = np.any(matching.decode_batch(dets).astype(bool) != obs, axis=1)
    res = PreDecoder.for_circuit(circuit, backend="numba").predecode(dets)
    final = res.obs_flip ^ matching.decode_batch(res.residual).astype(bool)
    pre_wrong = np.any(final != obs, axis=1)
    worse = int((pre_wrong & ~pm_wrong).sum())
    better = int((pm_wrong & ~pre_wrong).sum())
    bound = 2.5 * math.sqrt(worse + better) + 1
    assert worse - better <= bound, (
        f"{case}: pre-decoder + PyMatching failed {int(pre_wrong.sum())} shots, PyMatching "
        f"alone {int(pm_wrong.sum())}; worse on {worse}, better on {better} (bound {bound:.1f})"
    )
