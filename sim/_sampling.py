"""Sampling shots whose detectors and observables agree with their raw measurements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import stim

__all__ = [
    "CHUNK_SHOTS",
    "ShotBatch",
    "sample_measurement_chunks",
    "sample_shot_chunks",
    "sample_shots",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class ShotBatch:
    """One batch of sampled shots; arrays are read-only.

    - ``measurements``: bool[shots, num_measurements], raw measurement results in
      circuit order.
    - ``detectors``: bool[shots, num_detectors], detection events derived from
      ``measurements``.
    - ``observables``: bool[shots, num_observables], observable flips derived from
      ``measurements``.

    >>> batch = ShotBatch(measurements=np.zeros((2, 3), dtype=bool),
    ...                   detectors=np.zeros((2, 1), dtype=bool),
    ...                   observables=np.zeros((2, 1), dtype=bool))
    >>> batch.shots
    2
    """

    measurements: np.ndarray
    detectors: np.ndarray
    observables: np.ndarray

    def __post_init__(self) -> None:
        shots = None
        for name in ("measurements", "detectors", "observables"):
            array = np.asarray(getattr(self, name))
            if array.dtype != np.bool_ or array.ndim != 2:
                raise ValueError(
                    f"{name} must be a 2-D bool array; got dtype {array.dtype}, shape {array.shape}"
                )
            if shots is not None and array.shape[0] != shots:
                raise ValueError(f"{name} has {array.shape[0]} shots; expected {shots}")
            shots = array.shape[0]
            if array.flags.writeable:
                # Copy so the caller cannot mutate the batch through their reference.
                array = array.copy()
                array.flags.writeable = False
            object.__setattr__(self, name, array)

    @property
    def shots(self) -> int:
        """Number of shots in the batch."""
        return int(self.measurements.shape[0])


CHUNK_SHOTS = 65_536  # default shots per chunk: tens of MB of measurements at d=9


def sample_shots(circuit: stim.Circuit, *, shots: int, seed: int) -> ShotBatch:
    """Sample ``shots`` shots of ``circuit``; the same ``seed`` gives the same batch.

    The batch is the concatenation of ``sample_shot_chunks(circuit, shots=shots,
    seed=seed)``, so a run that streams those chunks saw exactly these shots.
    Detectors and observables are computed from the measurements with
    ``circuit.compile_m2d_converter()``, so the three arrays describe the same shots.

    >>> from qhil.sim import memory_circuit, NoiseModel
    >>> c = memory_circuit(distance=3, rounds=2, noise=NoiseModel.sd6(0.01))
    >>> batch = sample_shots(c, shots=5, seed=1)
    >>> batch.detectors.shape, batch.observables.dtype
    ((5, 16), dtype('bool'))
    """
    chunks = sample_shot_chunks(circuit, shots=shots, seed=seed)
    arrays = {
        "measurements": np.empty((shots, circuit.num_measurements), np.bool_),
        "detectors": np.empty((shots, circuit.num_detectors), np.bool_),
        "observables": np.empty((shots, circuit.num_observables), np.bool_),
    }
    start = 0
    for batch in chunks:  # filled in place: the peak is the batch plus one chunk
        for name, array in arrays.items():
            array[start : start + batch.shots] = getattr(batch, name)
        start += batch.shots
    for array in arrays.values():
        array.flags.writeable = False  # freshly made here: freeze in place, no copy
    return ShotBatch(**arrays)


def sample_shot_chunks(
    circuit: stim.Circuit, *, shots: int, seed: int, chunk: int = CHUNK_SHOTS
) -> Iterator[ShotBatch]:
    """Sample ``shots`` shots of ``circuit`` as consecutive batches of ``chunk`` shots
    (the last one holds the rest), each sampled only when it is asked for.

    The same (``seed``, ``chunk``) gives the same shots; stim draws shots batch-wise,
    so another ``chunk`` gives other shots. Arguments are checked at the call.

    >>> from qhil.sim import memory_circuit, NoiseModel
    >>> c = memory_circuit(distance=3, rounds=2, noise=NoiseModel.sd6(0.01))
    >>> [b.shots for b in sample_shot_chunks(c, shots=5, seed=1, chunk=2)]
    [2, 2, 1]
    """
    measurements = sample_measurement_chunks(circuit, shots=shots, seed=seed, chunk=chunk)
    converter = circuit.compile_m2d_converter()
    return (_batch(converter, m) for m in measurements)


def sample_measurement_chunks(
    circuit: stim.Circuit, *, shots: int, seed: int, chunk: int = CHUNK_SHOTS
) -> Iterator[np.ndarray]:
    """The measurements of ``sample_shot_chunks(circuit, shots=..., seed=..., chunk=...)``
    alone, without computing detectors: what a front end that streams shots needs.

    Yields bool[n, num_measurements] arrays (writable, C-contiguous), n = ``chunk``
    except for the last, in circuit measurement order. Arguments are checked at the call.

    >>> from qhil.sim import memory_circuit, NoiseModel
    >>> c = memory_circuit(distance=3, rounds=2, noise=NoiseModel.sd6(0.01))
    >>> [m.shape for m in sample_measurement_chunks(c, shots=3, seed=1, chunk=2)]
    [(2, 25), (1, 25)]
    """
    if not isinstance(circuit, stim.Circuit):
        raise TypeError(f"circuit must be a stim.Circuit; got {type(circuit).__name__}")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1; got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in 0..2**64-1; got {seed!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1; got {chunk!r}")
    sampler = circuit.compile_sampler(seed=seed)
    return (sampler.sample(min(chunk, shots - start)) for start in range(0, shots, chunk))


def _batch(
    converter: stim.CompiledMeasurementsToDetectionEventsConverter, m: np.ndarray
) -> ShotBatch:
    detectors, observables = converter.convert(measurements=m, separate_observables=True)
    for array in (m, detectors, observables):
        array.flags.writeable = False  # freshly made here: freeze in place, no copy
    return ShotBatch(measurements=m, detectors=detectors, observables=observables)
