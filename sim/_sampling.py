"""Sampling shots whose detectors and observables agree with their raw measurements."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import stim

__all__ = ["ShotBatch", "sample_shots"]


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


def sample_shots(circuit: stim.Circuit, *, shots: int, seed: int) -> ShotBatch:
    """Sample ``shots`` shots of ``circuit``; the same ``seed`` gives the same batch.

    Measurements come from ``circuit.compile_sampler(seed=seed)``; detectors and
    observables are computed from them with ``circuit.compile_m2d_converter()``, so the
    three arrays describe the same shots.

    >>> from qhil.sim import memory_circuit, NoiseModel
    >>> c = memory_circuit(distance=3, rounds=2, noise=NoiseModel.sd6(0.01))
    >>> batch = sample_shots(c, shots=5, seed=1)
    >>> batch.detectors.shape, batch.observables.dtype
    ((5, 16), dtype('bool'))
    """
    if not isinstance(circuit, stim.Circuit):
        raise TypeError(f"circuit must be a stim.Circuit; got {type(circuit).__name__}")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1; got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in 0..2**64-1; got {seed!r}")
    measurements = circuit.compile_sampler(seed=seed).sample(shots)
    detectors, observables = circuit.compile_m2d_converter().convert(
        measurements=measurements, separate_observables=True
    )
    for array in (measurements, detectors, observables):
        array.flags.writeable = False  # freshly made here: freeze in place, no copy
    return ShotBatch(measurements=measurements, detectors=detectors, observables=observables)
