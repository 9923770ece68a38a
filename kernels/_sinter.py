"""qhil's pre-decoder pipelines as sinter decoders.

``sinter_decoders()`` is what ``--custom_decoders_module_function`` calls::

    sinter collect --circuits "d=3,p=0.002.stim" "d=5,p=0.002.stim" --metadata_func auto \\
        --decoders qhil-predecoder qhil-predecoder-correlated pymatching-correlated \\
        --custom_decoders_module_function qhil.kernels:sinter_decoders \\
        --max_shots 100000 --max_errors 100 --processes 4 --save_resume_filepath stats.csv
    sinter plot --in stats.csv --x_func "metadata['d']" --group_func "decoder" --out ler.png

Its decoders, each built from the detector error model sinter hands over
(``PreDecodedMatching.from_dem``), compare against sinter's own ``pymatching`` and
``pymatching-correlated`` on the same DEM:

- ``qhil-predecoder``: the CNN pre-decoder at the model's threshold for plain
  matching, then PyMatching on the residual (``final = obs_flip ^ MWPM(residual)``);
- ``qhil-predecoder-correlated``: the pipeline ``qhil run --decoder predecoder``
  runs: the threshold calibrated for correlated matching, then correlated
  PyMatching on the residual.

The circuits must be rotated surface-code memory experiments laid out like stim's
``surface_code:rotated_memory_{x,z}`` (``qhil.sim.memory_circuit``'s, any noise):
the pre-decoder places detectors by their coordinates (``PreDecoder.for_dem``).

>>> import numpy as np, stim
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3,
...                                  after_clifford_depolarization=0.002)
>>> decoders = sinter_decoders(backend="numpy")
>>> sorted(decoders)
['qhil-predecoder', 'qhil-predecoder-correlated']
>>> dem = circuit.detector_error_model(decompose_errors=True)
>>> compiled = decoders["qhil-predecoder"].compile_decoder_for_dem(dem=dem)
>>> packed = np.zeros((2, (dem.num_detectors + 7) // 8), dtype=np.uint8)
>>> compiled.decode_shots_bit_packed(bit_packed_detection_event_data=packed).tolist()
[[0], [0]]
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import sinter
import stim

from qhil.kernels._model import QuantizedModel
from qhil.kernels._pipeline import PreDecodedMatching
from qhil.kernels._predecoder import _BATCH_BACKENDS, resolve_model

__all__ = ["SINTER_DECODERS", "sinter_decoders"]

# Decoder name -> whether the residual goes to correlated matching.
SINTER_DECODERS: Mapping[str, bool] = types.MappingProxyType(
    {"qhil-predecoder": False, "qhil-predecoder-correlated": True}
)


class _CompiledPipeline(sinter.CompiledDecoder):
    """One ``PreDecodedMatching`` behind sinter's bit-packed interface."""

    def __init__(self, pipeline: PreDecodedMatching) -> None:
        self.pipeline = pipeline

    def decode_shots_bit_packed(self, *, bit_packed_detection_event_data: np.ndarray) -> np.ndarray:
        """uint8[shots, ceil(num_detectors / 8)] -> uint8[shots, ceil(num_observables / 8)].

        Both bit-packed in little-endian bit order (detector ``i`` of a shot is bit
        ``i % 8`` of byte ``i // 8``), as sinter defines.
        """
        dets = np.unpackbits(
            bit_packed_detection_event_data,
            axis=1,
            count=self.pipeline.num_detectors,
            bitorder="little",
        )
        predictions = self.pipeline.decode_batch(dets)
        return np.packbits(predictions, axis=1, bitorder="little")


class _PipelineDecoder(sinter.Decoder):
    """A sinter decoder that builds ``PreDecodedMatching`` from each task's DEM.

    Sinter pickles it into every worker process: it holds the resolved model, so
    every worker decodes with the same weights.
    """

    def __init__(self, *, model: QuantizedModel, backend: str, correlated: bool) -> None:
        self.model = model
        self.backend = backend
        self.correlated = correlated

    def compile_decoder_for_dem(self, *, dem: stim.DetectorErrorModel) -> sinter.CompiledDecoder:
        return _CompiledPipeline(
            PreDecodedMatching.from_dem(
                dem, model=self.model, backend=self.backend, correlated=self.correlated
            )
        )


def sinter_decoders(
    *, model: str | Path | QuantizedModel = "default", backend: str = "auto"
) -> dict[str, sinter.Decoder]:
    """sinter custom decoders for the pre-decoder pipelines, by name (``SINTER_DECODERS``).

    Args:
        model: a packaged model name, a ``.npz`` model file, or a ``QuantizedModel``;
            loaded here, so a bad one fails before sinter starts its workers.
        backend: a batch backend ("numpy", "numba", "cuda"), or "auto" for the
            fastest one each worker finds.

    Pass the result as ``sinter.collect(custom_decoders=...)``; the sinter command
    line calls it with no arguments (``--custom_decoders_module_function
    qhil.kernels:sinter_decoders``).
    """
    if backend != "auto" and backend not in _BATCH_BACKENDS:
        raise ValueError(
            f"backend must be one of {(*_BATCH_BACKENDS, 'auto')} for sinter, which decodes "
            f"batches; got {backend!r}"
        )
    qmodel = resolve_model(model)
    return {
        name: _PipelineDecoder(model=qmodel, backend=backend, correlated=correlated)
        for name, correlated in SINTER_DECODERS.items()
    }
