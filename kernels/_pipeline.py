"""The pre-decoder followed by PyMatching, behind the loop's decoder interface.

``qhil run --decoder predecoder`` uses it: the loop calls ``decode_batch`` on
whole shots and never knows a pre-decoder is there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pymatching
import stim

from qhil.kernels._model import QuantizedModel
from qhil.kernels._predecoder import PreDecoder

__all__ = ["PreDecodedMatching"]


class PreDecodedMatching:
    """``obs_flip ^ PyMatching(residual)``, as one decoder."""

    def __init__(
        self, predecoder: PreDecoder, matching: pymatching.Matching, *, num_observables: int
    ) -> None:
        self.predecoder = predecoder
        self.matching = matching
        self.num_detectors = predecoder.geometry.num_detectors
        self.num_observables = num_observables
        self.name = "predecoder"

    @classmethod
    def from_circuit(
        cls,
        circuit: stim.Circuit,
        *,
        model: str | Path | QuantizedModel = "default",
        backend: str = "auto",
        threshold: float = 0.0,
    ) -> PreDecodedMatching:
        dem = circuit.detector_error_model(decompose_errors=True)
        return cls(
            PreDecoder.for_circuit(circuit, model=model, backend=backend, threshold=threshold),
            pymatching.Matching.from_detector_error_model(dem),
            num_observables=circuit.num_observables,
        )

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        """bool/uint8[shots, num_detectors] -> bool[shots, num_observables]."""
        res = self.predecoder.predecode(dets)
        rest = self.matching.decode_batch(res.residual.astype(np.uint8))
        return res.obs_flip ^ np.asarray(rest, dtype=bool).reshape(res.obs_flip.shape)
