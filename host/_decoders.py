"""The decoder interface the service calls, and the decoders that plug into it.

A decoder turns whole shots of detection events into logical-frame flips.
The service never knows which decoder it runs: the pre-decoder pipeline
registers under its own name and the loop stays as it is.

>>> import stim
>>> circuit = stim.Circuit.generated(
...     "surface_code:rotated_memory_z", distance=3, rounds=3, after_clifford_depolarization=0.001)
>>> decoder = make_decoder("pymatching", circuit)
>>> decoder.decode_batch(np.zeros((2, circuit.num_detectors), dtype=np.uint8))
array([[False],
       [False]])
>>> make_decoder("mwpm", circuit)
Traceback (most recent call last):
...
ValueError: unknown decoder 'mwpm'; choose one of: pymatching, pymatching-correlated, predecoder
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import pymatching
import stim

__all__ = ["DECODERS", "Decoder", "PyMatchingDecoder", "make_decoder", "register_decoder"]


class Decoder(Protocol):
    """Decodes whole shots. Implementations are free to batch internally."""

    name: str
    num_detectors: int
    num_observables: int

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        """Predict the logical-frame flips of each shot.

        Args:
            dets: bool or uint8[shots, num_detectors], C-contiguous, detection
                events in stim's detector order.

        Returns:
            bool[shots, num_observables].
        """
        ...


class PyMatchingDecoder:
    """Minimum-weight perfect matching (PyMatching 2) on the circuit's detector error model."""

    def __init__(
        self,
        matching: pymatching.Matching,
        *,
        num_detectors: int,
        num_observables: int,
        correlated: bool,
    ) -> None:
        self.matching = matching
        self.num_detectors = num_detectors
        self.num_observables = num_observables
        self.correlated = correlated
        self.name = "pymatching-correlated" if correlated else "pymatching"

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit, *, correlated: bool = False) -> PyMatchingDecoder:
        dem = circuit.detector_error_model(decompose_errors=True)
        matching = pymatching.Matching.from_detector_error_model(
            dem, enable_correlations=correlated
        )
        return cls(
            matching,
            num_detectors=circuit.num_detectors,
            num_observables=circuit.num_observables,
            correlated=correlated,
        )

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        if dets.ndim != 2 or dets.shape[1] != self.num_detectors:
            raise ValueError(
                f"dets must have shape (shots, {self.num_detectors}); got {dets.shape}"
            )
        out = self.matching.decode_batch(dets, enable_correlations=self.correlated)
        return np.asarray(out, dtype=np.bool_).reshape(dets.shape[0], self.num_observables)


# (circuit, kernel backend) -> decoder; decoders without kernels ignore the backend.
DecoderFactory = Callable[[stim.Circuit, str], Decoder]

_REGISTRY: dict[str, DecoderFactory] = {
    "pymatching": lambda c, _: PyMatchingDecoder.from_circuit(c),
    "pymatching-correlated": lambda c, _: PyMatchingDecoder.from_circuit(c, correlated=True),
    "predecoder": lambda c, backend: _predecoder(c, backend),
}


def _predecoder(circuit: stim.Circuit, backend: str) -> Decoder:
    if backend == "cuda-persistent":  # the kernel launched once, shots streamed to it
        from qhil.kernels._persistent_pipeline import PersistentPreDecodedMatching

        return PersistentPreDecodedMatching.from_circuit(circuit)
    from qhil.kernels import PreDecodedMatching  # the kernels load only when asked for

    return PreDecodedMatching.from_circuit(circuit, backend=backend)


def register_decoder(name: str, factory: DecoderFactory) -> None:
    """Make ``factory`` available as ``--decoder NAME``."""
    if not name or name in _REGISTRY:
        raise ValueError(f"decoder name {name!r} is empty or already registered")
    _REGISTRY[name] = factory


def DECODERS() -> tuple[str, ...]:
    """Names of the registered decoders."""
    return tuple(_REGISTRY)


def make_decoder(name: str, circuit: stim.Circuit, *, backend: str = "auto") -> Decoder:
    """A registered decoder for ``circuit``; ``backend`` picks the kernels of those with kernels."""
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ValueError(f"unknown decoder {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return factory(circuit, backend)
