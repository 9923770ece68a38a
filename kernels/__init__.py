"""qhil.kernels: the CNN pre-decoder that sits in front of PyMatching.

- ``PreDecoder.for_circuit(circuit, model=..., backend=...)`` and
  ``predecode(dets)`` give the residual syndrome and the logical flip
  (``PreDecodeResult``); ``PreDecodedMatching`` is the pre-decoder plus
  (correlated, by default) PyMatching as one decoder for the loop
  (``qhil run --decoder predecoder``). Both apply the network only above the
  model's calibrated threshold (``default_threshold``), which keeps them no
  worse than the matcher alone.
- ``PreDecoder.for_dem`` / ``PreDecodedMatching.from_dem``: the same, built from a
  detector error model's detector coordinates; ``sinter_decoders()`` wraps the
  pipelines as sinter decoders (``sinter collect --custom_decoders_module_function
  qhil.kernels:sinter_decoders``, names in ``SINTER_DECODERS``).
- ``PreDecoderGeometry``: the Ising-compatible tensor layout and the exact
  footprint of every output.
- ``QuantizedModel`` and ``reference_logits``: the shipped integer CNN and its
  NumPy reference. Backends (``BACKENDS``): numpy, numba (``numba_logits``), and
  cuda on a GPU (``cuda_logits``; ``cuda_available()`` says whether it runs here).
- ``TrainConfig`` / ``train`` / ``write_model`` / ``plot_training``: reproduce the
  shipped weights, their thresholds and their training curves (``qhil train``).
"""

from __future__ import annotations

from qhil.kernels._cuda_backend import cuda_available, cuda_logits
from qhil.kernels._geometry import CHANNELS, PreDecoderGeometry
from qhil.kernels._model import QuantizedModel, reference_logits
from qhil.kernels._numba_backend import numba_logits
from qhil.kernels._pipeline import PreDecodedMatching
from qhil.kernels._predecoder import (
    BACKENDS,
    MODELS,
    PreDecoder,
    PreDecodeResult,
    available_backends,
    default_threshold,
    resolve_model,
)
from qhil.kernels._sinter import SINTER_DECODERS, sinter_decoders
from qhil.kernels._train import LABELS, TrainConfig, train, write_model
from qhil.kernels._train_eval import plot_training
from qhil.kernels.persistent import PersistentPreDecodedMatching

__all__ = [
    "BACKENDS",
    "CHANNELS",
    "LABELS",
    "MODELS",
    "SINTER_DECODERS",
    "PersistentPreDecodedMatching",
    "PreDecodeResult",
    "PreDecodedMatching",
    "PreDecoder",
    "PreDecoderGeometry",
    "QuantizedModel",
    "TrainConfig",
    "available_backends",
    "cuda_available",
    "cuda_logits",
    "default_threshold",
    "numba_logits",
    "plot_training",
    "reference_logits",
    "resolve_model",
    "sinter_decoders",
    "train",
    "write_model",
]
