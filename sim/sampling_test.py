from __future__ import annotations

import numpy as np
import pytest
import stim

from qhil.sim import NoiseModel, ShotBatch, memory_circuit, sample_shots


def _circuit() -> stim.Circuit:
    return memory_circuit(distance=3, rounds=3, noise=NoiseModel.sd6(0.02))


def test_shapes_and_dtypes() -> None:
    circuit = _circuit()
    batch = sample_shots(circuit, shots=100, seed=1)
    assert batch.shots == 100
    assert batch.measurements.shape == (100, circuit.num_measurements)
    assert batch.detectors.shape == (100, circuit.num_detectors)
    assert batch.observables.shape == (100, circuit.num_observables)
    for a in (batch.measurements, batch.detectors, batch.observables):
        assert a.dtype == np.bool_ and not a.flags.writeable
    assert batch.detectors.any()  # p=0.02 fires detectors


def test_same_seed_same_batch() -> None:
    circuit = _circuit()
    a = sample_shots(circuit, shots=50, seed=42)
    b = sample_shots(circuit, shots=50, seed=42)
    c = sample_shots(circuit, shots=50, seed=43)
    for name in ("measurements", "detectors", "observables"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.measurements, c.measurements)


def test_detectors_follow_from_measurements() -> None:
    circuit = _circuit()
    batch = sample_shots(circuit, shots=200, seed=9)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=batch.measurements, separate_observables=True
    )
    assert np.array_equal(dets, batch.detectors)
    assert np.array_equal(obs, batch.observables)
    # Observable = parity of the recorded data measurements it includes (basis z, d=3).
    data = batch.measurements[:, -9:]
    assert np.array_equal(data[:, :3].sum(axis=1) % 2 == 1, batch.observables[:, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shots": 0, "seed": 1}, "shots must be an integer >= 1; got 0"),
        ({"shots": 2.5, "seed": 1}, "shots must be an integer >= 1; got 2.5"),
        ({"shots": 1, "seed": -1}, "seed must be an integer in 0..2\\*\\*64-1; got -1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_shots(_circuit(), **kwargs)  # type: ignore[arg-type]


def test_shot_batch_validates() -> None:
    ok = np.zeros((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="detectors has 3 shots; expected 2"):
        ShotBatch(measurements=ok, detectors=np.zeros((3, 1), dtype=bool), observables=ok)
    with pytest.raises(ValueError, match="observables must be a 2-D bool array; got dtype uint8"):
        ShotBatch(measurements=ok, detectors=ok, observables=ok.astype(np.uint8))
    batch = ShotBatch(measurements=ok, detectors=ok, observables=ok)
    assert ok.flags.writeable  # the caller's array is copied, not frozen under them
    assert not batch.measurements.flags.writeable
