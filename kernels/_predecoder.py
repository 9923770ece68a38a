"""``PreDecoder``: the CNN pre-decoder in front of PyMatching, as outside harnesses call it.

    pd = PreDecoder.for_circuit(circuit, model="default", backend="auto")
    res = pd.predecode(dets)
    final = res.obs_flip ^ matching.decode_batch(res.residual)

``final`` is the prediction for any ``pymatching.Matching`` built from the
circuit's detector error model. The residual is exactly the detection events
the pre-decoder's corrections leave, and ``obs_flip`` is exactly what those
corrections do to the observable (see ``PreDecoderGeometry``). So the line
above is correct whatever the network predicts; the network only decides how
much work is left for PyMatching. ``PreDecoder.for_dem(dem)`` lays out the same
pre-decoder from the detector error model alone (what sinter hands a decoder).

>>> import stim, pymatching
>>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3,
...                                  after_clifford_depolarization=0.002)
>>> pd = PreDecoder.for_circuit(circuit, backend="numpy")
>>> dets, obs = circuit.compile_detector_sampler(seed=1).sample(100, separate_observables=True)
>>> res = pd.predecode(dets)
>>> res.residual.shape == dets.shape, res.obs_flip.shape
(True, (100, 1))
>>> dem = circuit.detector_error_model(decompose_errors=True)
>>> m = pymatching.Matching.from_detector_error_model(dem)
>>> final = res.obs_flip ^ m.decode_batch(res.residual).astype(bool)
>>> final.shape
(100, 1)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import stim

from qhil.kernels._geometry import PreDecoderGeometry
from qhil.kernels._model import QuantizedModel, reference_logits

__all__ = [
    "BACKENDS",
    "MODELS",
    "PreDecodeResult",
    "PreDecoder",
    "available_backends",
    "default_threshold",
    "resolve_model",
]

BACKENDS = ("numpy", "numba", "cuda", "cuda-persistent")
# Backends that run batches through ``PreDecoder.predecode``; "cuda-persistent" is the
# persistent kernel, which streams shots (``qhil.kernels.persistent._pipeline``) instead.
_BATCH_BACKENDS = ("cuda", "numba", "numpy")
_MODEL_DIR = Path(__file__).with_name("models")
MODELS = ("default",)

Logits = Callable[[np.ndarray, QuantizedModel], np.ndarray]


def _numba_logits() -> Logits:
    from qhil.kernels._numba_backend import numba_logits

    # A few shots are not worth the threads' synchronization (it dominated batch-1
    # latency on a busy 2-core host); larger batches use every core.
    return lambda x, model: numba_logits(x, model, threads=1 if x.shape[0] <= 4 else None)


def _cuda_logits() -> Logits:
    from qhil.kernels._cuda_backend import cuda_available, cuda_logits

    ok, why = cuda_available()
    if not ok:
        raise RuntimeError(
            f"the CUDA backend needs an NVIDIA GPU with the 'gpu' extra (CuPy): {why}; "
            "use backend='numba' or 'numpy'"
        )
    return cuda_logits


def _persistent_logits() -> Logits:
    raise ValueError(
        "backend 'cuda-persistent' is the persistent GPU kernel, which streams shots rather "
        "than running batches through PreDecoder: use the 'predecoder' decoder "
        "(make_decoder('predecoder', circuit, backend='cuda-persistent'), or "
        "PersistentPreDecodedMatching); for batches use backend 'cuda', 'numba' or 'numpy'"
    )


_LOADERS: dict[str, Callable[[], Logits]] = {
    "numpy": lambda: reference_logits,
    "numba": _numba_logits,
    "cuda": _cuda_logits,
    "cuda-persistent": _persistent_logits,
}


@functools.cache
def available_backends() -> tuple[str, ...]:
    """Batch backends that run here, fastest first (never "cuda-persistent", which streams)."""
    found = []
    for name in _BATCH_BACKENDS:
        try:
            _LOADERS[name]()
        except (ImportError, RuntimeError):
            continue
        found.append(name)
    return tuple(found)


@functools.cache
def _load_model(name: str) -> QuantizedModel:
    path = _MODEL_DIR / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"the packaged model {name!r} is missing ({path}); reinstall qhil, or pass a model "
            "file path; `qhil train` reproduces it"
        )
    return QuantizedModel.load(path)


def default_threshold(model: QuantizedModel, *, correlated: bool = False) -> float:
    """The model's calibrated threshold for the matcher behind it, or 0 where it has none.

    ``qhil train`` calibrates both on fresh shots (``kernels/_train_eval.py``):
    ``meta["threshold"]``, the smallest logit threshold at which pre-decoder +
    PyMatching makes no more logical errors than PyMatching alone, and
    ``meta["threshold_correlated"]``, the same with correlated PyMatching on
    both sides (``correlated=True``).
    """
    meta = model.meta or {}
    key = "threshold_correlated" if correlated and "threshold_correlated" in meta else "threshold"
    return float(meta.get(key, 0.0))


def resolve_model(model: str | Path | QuantizedModel) -> QuantizedModel:
    """A model by packaged name (``MODELS``), by ``.npz`` path, or as given."""
    if isinstance(model, QuantizedModel):
        return model
    if isinstance(model, str) and model in MODELS:
        return _load_model(model)
    path = Path(model)
    if path.suffix != ".npz":
        raise ValueError(
            f"model must be one of {MODELS}, a .npz model file, or a QuantizedModel; got {model!r}"
        )
    return QuantizedModel.load(path)


@dataclasses.dataclass(frozen=True, eq=False)
class PreDecodeResult:
    """What the pre-decoder leaves for PyMatching.

    Attributes:
        residual: bool[shots, num_detectors], the detection events its
            corrections leave, in stim's detector order.
        obs_flip: bool[shots, num_observables], the logical flip its
            corrections make (``pre_L``).
        corrections: int64[shots], how many corrections it applied per shot.
    """

    residual: np.ndarray
    obs_flip: np.ndarray
    corrections: np.ndarray

    def __post_init__(self) -> None:
        n = self.residual.shape[0]
        if self.obs_flip.shape[0] != n or self.corrections.shape != (n,):
            raise ValueError("residual, obs_flip and corrections must cover the same shots")


class PreDecoder:
    """The CNN pre-decoder laid out for one circuit."""

    def __init__(
        self,
        geometry: PreDecoderGeometry,
        model: QuantizedModel,
        backend: str,
        *,
        batch_size: int = 256,
        threshold: float | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS} or 'auto'; got {backend!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.geometry = geometry
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.threshold = default_threshold(model) if threshold is None else float(threshold)
        # The threshold in the logits' integer scale; binarizing stays exact on every backend.
        self._cut = int(np.floor(self.threshold * 2 ** (model.weight_bits + model.act_bits)))
        self._logits = _LOADERS[backend]()

    @classmethod
    def for_circuit(
        cls,
        circuit: stim.Circuit,
        *,
        model: str | Path | QuantizedModel = "default",
        backend: str = "auto",
        batch_size: int = 256,
        threshold: float | None = None,
    ) -> PreDecoder:
        """Lay the pre-decoder out for ``circuit``.

        Args:
            circuit: a rotated surface-code memory circuit, X or Z basis, any odd
                d >= 3, any rounds; stim's generated ones or ``qhil.sim``'s, any noise.
            model: a packaged model name, a ``.npz`` model file, or a ``QuantizedModel``.
            backend: one of ``BACKENDS``, or "auto" for the fastest available.
            batch_size: shots per inference call (bounds memory).
            threshold: apply a correction where its logit exceeds this. None (the
                default) takes the model's calibrated threshold
                (``default_threshold``); 0 is the Ising binarization (more likely
                than not); a higher value applies only confident corrections,
                leaving more to PyMatching.
        """
        return cls._laid_out(
            PreDecoderGeometry.from_circuit(circuit),
            model=model,
            backend=backend,
            batch_size=batch_size,
            threshold=threshold,
        )

    @classmethod
    def for_dem(
        cls,
        dem: stim.DetectorErrorModel,
        *,
        model: str | Path | QuantizedModel = "default",
        backend: str = "auto",
        batch_size: int = 256,
        threshold: float | None = None,
    ) -> PreDecoder:
        """Lay the pre-decoder out for the circuit a detector error model came from.

        What sinter hands a decoder is the DEM alone; its detector coordinates place
        each detector (``qhil.sim.DetectorLayout.from_dem``), so the pre-decoder is
        the one ``for_circuit`` builds from that circuit.

        Args:
            dem: the model of a rotated surface-code memory circuit, stim's generated
                one or ``qhil.sim``'s, any noise, any detector order grouped by time
                (its detectors keep their (x, y, t) coordinates).
            model, backend, batch_size, threshold: as for ``for_circuit``.

        ``predecode(dets)`` then takes bool or uint8[shots, dem.num_detectors], one
        detection event per byte in the DEM's detector order (unpack sinter's
        bit-packed rows first, little-endian bit order), and returns a
        ``PreDecodeResult`` with ``residual`` bool[shots, dem.num_detectors] in the
        same order and ``obs_flip`` bool[shots, 1]. Raises ValueError naming the
        problem for a DEM it cannot lay out.

        >>> import stim
        >>> circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3,
        ...                                  rounds=2, after_clifford_depolarization=0.01)
        >>> pd = PreDecoder.for_dem(circuit.detector_error_model(decompose_errors=True),
        ...                         backend="numpy")
        >>> dets = circuit.compile_detector_sampler(seed=3).sample(5)
        >>> res = pd.predecode(dets)
        >>> res.residual.shape, res.obs_flip.shape
        ((5, 16), (5, 1))
        >>> same = PreDecoder.for_circuit(circuit, backend="numpy").predecode(dets)
        >>> bool((same.residual == res.residual).all() and (same.obs_flip == res.obs_flip).all())
        True
        """
        return cls._laid_out(
            PreDecoderGeometry.from_dem(dem),
            model=model,
            backend=backend,
            batch_size=batch_size,
            threshold=threshold,
        )

    @classmethod
    def _laid_out(
        cls,
        geometry: PreDecoderGeometry,
        *,
        model: str | Path | QuantizedModel,
        backend: str,
        batch_size: int,
        threshold: float | None,
    ) -> PreDecoder:
        if backend == "auto":
            backend = available_backends()[0]
        return cls(
            geometry, resolve_model(model), backend, batch_size=batch_size, threshold=threshold
        )

    def _batches(self, dets: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, int64 logits) per ``batch_size`` shots: inference memory stays bounded."""
        x = self.geometry.inputs(dets)
        for lo in range(0, x.shape[0], self.batch_size):
            rows = slice(lo, lo + self.batch_size)
            yield rows, self._logits(np.ascontiguousarray(x[rows]), self.model)

    def logits(self, dets: np.ndarray) -> np.ndarray:
        """The network's integer logits, before binarizing.

        Returns:
            int64[shots, 4, T, d, d], C-contiguous, in units of
            ``2**-(weight_bits + act_bits)`` (the same on every backend). Entries
            outside ``geometry.output_mask`` name no real error.
        """
        out = np.empty((np.asarray(dets).shape[0], 4, *self.geometry.shape), dtype=np.int64)
        for rows, lg in self._batches(dets):
            out[rows] = lg
        return out

    def _binarize(self, logits: np.ndarray) -> np.ndarray:
        return (logits > self._cut) & self.geometry.output_mask

    def outputs(self, dets: np.ndarray) -> np.ndarray:
        """The binarized network outputs, masked to real errors.

        Returns:
            bool[shots, 4, T, d, d] (channels: data Z flip, data X flip,
            X-measurement flip, Z-measurement flip).
        """
        out = np.empty((np.asarray(dets).shape[0], 4, *self.geometry.shape), dtype=bool)
        for rows, lg in self._batches(dets):
            out[rows] = self._binarize(lg)
        return out

    def predecode(self, dets: np.ndarray, *, logits: np.ndarray | None = None) -> PreDecodeResult:
        """Run the pre-decoder on a batch of shots.

        Args:
            dets: bool or uint8[shots, num_detectors], stim detector order.
            logits: int64[shots, 4, T, d, d], this model's ``logits(dets)`` if
                already computed (for example by a pre-decoder with another
                threshold): binarized at this one's threshold, no inference.
        """
        dets = np.asarray(dets)
        e = self.outputs(dets) if logits is None else self._binarize(np.asarray(logits))
        flips, obs = self.geometry.footprint(e)
        residual = dets.astype(bool) ^ flips
        return PreDecodeResult(residual, obs, e.reshape(e.shape[0], -1).sum(axis=1))
