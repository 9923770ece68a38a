"""The pre-decoder followed by PyMatching, behind the loop's decoder interface.

``qhil run --decoder predecoder`` uses it: the loop calls ``decode_batch`` on
whole shots and never knows a pre-decoder is there. By default the residual
goes to *correlated* PyMatching (two-pass matching that uses the detector
error model's hyperedges, such as Y errors): the most accurate pipeline qhil
ships. ``correlated=False`` gives plain matching on the residual.

>>> import stim
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3,
...                                  after_clifford_depolarization=0.002)
>>> decoder = PreDecodedMatching.from_circuit(circuit, backend="numpy")
>>> decoder.correlated, decoder.name
(True, 'predecoder')
>>> decoder.decode_batch(np.zeros((2, circuit.num_detectors), dtype=np.uint8)).tolist()
[[False], [False]]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pymatching
import stim

from qhil.kernels._model import QuantizedModel
from qhil.kernels._predecoder import PreDecoder, default_threshold, resolve_model

__all__ = ["PreDecodedMatching"]


class PreDecodedMatching:
    """``obs_flip ^ PyMatching(residual)``, as one decoder."""

    def __init__(
        self,
        predecoder: PreDecoder,
        matching: pymatching.Matching,
        *,
        num_observables: int,
        correlated: bool = False,
    ) -> None:
        """Wrap a pre-decoder and a matcher.

        ``correlated=True`` needs ``matching`` built with ``enable_correlations=True``.
        """
        self.predecoder = predecoder
        self.matching = matching
        self.correlated = correlated
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
        threshold: float | None = None,
        correlated: bool = True,
    ) -> PreDecodedMatching:
        """The pre-decoder and PyMatching for ``circuit``.

        Args:
            circuit: as for ``PreDecoder.for_circuit``.
            model, backend: as for ``PreDecoder.for_circuit``.
            threshold: as for ``PreDecoder.for_circuit``; None (the default) takes
                the model's threshold calibrated for this matcher
                (``default_threshold(model, correlated=correlated)``).
            correlated: decode the residual with correlated PyMatching (the
                default, more accurate, about 2-3x the matching time); False for
                plain minimum-weight matching.
        """
        return cls._build(
            PreDecoder.for_circuit,
            circuit,
            circuit.detector_error_model(decompose_errors=True),
            model=model,
            backend=backend,
            threshold=threshold,
            correlated=correlated,
        )

    @classmethod
    def from_dem(
        cls,
        dem: stim.DetectorErrorModel,
        *,
        model: str | Path | QuantizedModel = "default",
        backend: str = "auto",
        threshold: float | None = None,
        correlated: bool = True,
    ) -> PreDecodedMatching:
        """The pre-decoder and PyMatching for a detector error model (what sinter hands over).

        The pre-decoder is laid out by ``PreDecoder.for_dem``; the matcher is
        ``pymatching.Matching.from_detector_error_model(dem,
        enable_correlations=correlated)``, so correlated matching needs the DEM's
        hyperedges decomposed (``decompose_errors=True``, as sinter does where it can).
        Options as for ``from_circuit``. ``decode_batch`` takes bool or
        uint8[shots, dem.num_detectors] in the DEM's detector order.
        """
        return cls._build(
            PreDecoder.for_dem,
            dem,
            dem,
            model=model,
            backend=backend,
            threshold=threshold,
            correlated=correlated,
        )

    @classmethod
    def _build(
        cls,
        lay_out: Callable[..., PreDecoder],
        source: stim.Circuit | stim.DetectorErrorModel,
        dem: stim.DetectorErrorModel,
        *,
        model: str | Path | QuantizedModel,
        backend: str,
        threshold: float | None,
        correlated: bool,
    ) -> PreDecodedMatching:
        qmodel = resolve_model(model)
        if threshold is None:
            threshold = default_threshold(qmodel, correlated=correlated)
        return cls(
            lay_out(source, model=qmodel, backend=backend, threshold=threshold),
            pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlated),
            num_observables=dem.num_observables,
            correlated=correlated,
        )

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        """bool/uint8[shots, num_detectors] -> bool[shots, num_observables]."""
        res = self.predecoder.predecode(dets)
        rest = self.matching.decode_batch(
            res.residual.astype(np.uint8), enable_correlations=self.correlated
        )
        return res.obs_flip ^ np.asarray(rest, dtype=bool).reshape(res.obs_flip.shape)
