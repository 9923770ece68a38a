"""qhil.sim: surface-code circuits, circuit-level noise, detector layouts and sampling.

>>> c = memory_circuit(distance=3, rounds=3, noise=NoiseModel.sd6(0.001))
>>> layout = DetectorLayout.from_circuit(c)
>>> batch = sample_shots(c, shots=4, seed=7)
>>> layout.to_grid(batch.detectors).shape
(4, 2, 4, 3, 3)
"""

from __future__ import annotations

from ._circuits import BASES, memory_circuit
from ._layout import X_KIND, Z_KIND, DetectorLayout
from ._noise import NOISE_MODELS, NoiseModel
from ._sampling import (
    CHUNK_SHOTS,
    ShotBatch,
    sample_measurement_chunks,
    sample_shot_chunks,
    sample_shots,
)

__all__ = [
    "BASES",
    "CHUNK_SHOTS",
    "NOISE_MODELS",
    "X_KIND",
    "Z_KIND",
    "DetectorLayout",
    "NoiseModel",
    "ShotBatch",
    "memory_circuit",
    "sample_measurement_chunks",
    "sample_shot_chunks",
    "sample_shots",
]
