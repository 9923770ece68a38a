from __future__ import annotations

import numpy as np
import pytest
import stim

from qhil.sim import NoiseModel, ShotBatch, memory_circuit, sample_shots
from qhil.sim._sampling import sample_measurement_chunks, sample_shot_chunks


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


def test_chunks_concatenate_to_sample_shots() -> None:
    circuit = _circuit()
    whole = sample_shots(circuit, shots=70_000, seed=5)  # more than one default chunk
    chunks = list(sample_shot_chunks(circuit, shots=70_000, seed=5))
    assert [c.shots for c in chunks] == [65_536, 70_000 - 65_536]
    for name in ("measurements", "detectors", "observables"):
        joined = np.concatenate([getattr(c, name) for c in chunks])
        assert np.array_equal(joined, getattr(whole, name)), name
    measured = np.concatenate(list(sample_measurement_chunks(circuit, shots=70_000, seed=5)))
    assert np.array_equal(measured, whole.measurements)
    assert not whole.measurements.flags.writeable


def test_chunks_are_deterministic() -> None:
    circuit = _circuit()
    a = [c.measurements for c in sample_shot_chunks(circuit, shots=10, seed=3, chunk=4)]
    b = [c.measurements for c in sample_shot_chunks(circuit, shots=10, seed=3, chunk=4)]
    assert [len(m) for m in a] == [4, 4, 2]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # Up to a chunk's worth, shots come from one stim call: the same as before chunking.
    one = next(sample_measurement_chunks(circuit, shots=7, seed=3))
    assert np.array_equal(one, circuit.compile_sampler(seed=3).sample(7))


@pytest.mark.parametrize("chunk", [0, 2.0, True])
def test_bad_chunk_is_refused_at_the_call(chunk: object) -> None:
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        sample_shot_chunks(_circuit(), shots=1, seed=1, chunk=chunk)  # type: ignore[arg-type]
