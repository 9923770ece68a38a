"""The decoder interface the service calls, and the decoders that plug into it.

A decoder turns whole shots of detection events into logical-frame flips.
The service never knows which decoder it runs: the pre-decoder pipeline
registers under its own name and the loop stays as it is.

A decoder that can work on rounds while a shot is still arriving also
implements ``StreamingDecoder``: the service then hands it every round it
accepted, as the raw packet, the moment it arrives, and later asks for the
finished shots by (stream, shot) instead of calling ``decode_batch``. Other
decoders pay nothing for this: the service checks once, when it starts.

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
ValueError: unknown decoder 'mwpm'; choose one of: pymatching, pymatching-correlated, ...predecoder
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np
import pymatching
import stim

__all__ = [
    "DECODERS",
    "DECODERS_WITH_KERNELS",
    "Decoder",
    "PyMatchingDecoder",
    "StreamingDecoder",
    "make_decoder",
    "register_decoder",
]


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


@runtime_checkable
class StreamingDecoder(Decoder, Protocol):
    """A decoder fed round by round, as the syndrome packets arrive.

    The service calls, from its one thread:

    - ``on_round(packet)`` for each packet the assembler accepted as a round of
      an open shot, in arrival order, before it asks for any shot that round
      completes. Rounds may arrive out of order, or belong to a shot the
      service later gives up; the decoder must cope with both.
    - ``decode_streamed(streams, shots, dets)`` once those shots are complete on
      the host. ``dets`` is the host's assembled copy of the same shots, for the
      decoder's use only where its own stream could not finish a shot (for
      example rounds that arrived out of order); a streaming decoder never needs
      it on the normal path. Raising marks these shots DECODER_ERROR.
    - ``abandon(stream, shot)`` when the service gives a shot up as INCOMPLETE
      (rounds missing), so the decoder can drop whatever it holds for it.
    - ``streaming_counts()`` at the end of a run: the decoder's own account,
      merged into ``HostStats.decoder_counts``.

    ``on_round`` must be cheap and must not raise for a runtime failure (a dead
    GPU kernel): record it and raise it from ``decode_streamed``.
    """

    def on_round(self, packet: np.ndarray) -> None:
        """Take one syndrome packet.

        Args:
            packet: uint8[length], the raw wire-v1 bytes exactly as received; a
                view into the service's receive buffer, valid only during the call.
        """
        ...

    def decode_streamed(
        self, streams: np.ndarray, shots: np.ndarray, dets: np.ndarray
    ) -> np.ndarray:
        """The logical-frame flips of shots whose rounds were all streamed.

        Args:
            streams, shots: int64[n], the shots' stream ids and wire shot numbers.
            dets: uint8[n, num_detectors], the host's assembled detection events of
                the same shots (stim order); a fallback only.

        Returns:
            bool[n, num_observables].
        """
        ...

    def abandon(self, stream: int, shot: int) -> None:
        """Forget a shot the service reported INCOMPLETE."""
        ...

    def streaming_counts(self) -> dict[str, int]:
        """Counters of the streaming path by name (all >= 0)."""
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
        if out.dtype == np.uint8 and out.flags.c_contiguous:  # 0/1 bytes: a bool view, no copy
            out = out.view(np.bool_)
        return np.asarray(out, dtype=np.bool_).reshape(dets.shape[0], self.num_observables)


# (circuit, kernel backend) -> decoder; decoders without kernels ignore the backend.
DecoderFactory = Callable[[stim.Circuit, str], Decoder]

_REGISTRY: dict[str, DecoderFactory] = {
    "pymatching": lambda c, _: PyMatchingDecoder.from_circuit(c),
    "pymatching-correlated": lambda c, _: PyMatchingDecoder.from_circuit(c, correlated=True),
    "pymatching-windowed": lambda c, _: _windowed(c),
    "predecoder": lambda c, backend: _predecoder(c, backend),
}


def _windowed(circuit: stim.Circuit) -> Decoder:
    from qhil.host._windowed_stream import StreamedWindows  # imports qhil.fpga

    return StreamedWindows.from_circuit(circuit)


def _predecoder(circuit: stim.Circuit, backend: str) -> Decoder:
    if backend == "cuda-persistent":  # the kernel launched once, shots streamed to it
        from qhil.kernels import PersistentPreDecodedMatching

        return PersistentPreDecodedMatching.from_circuit(circuit)
    from qhil.kernels import PreDecodedMatching  # the kernels load only when asked for

    return PreDecodedMatching.from_circuit(circuit, backend=backend)


# Decoders whose kernels ``backend`` picks; for the others a backend means nothing.
DECODERS_WITH_KERNELS = ("predecoder",)


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
