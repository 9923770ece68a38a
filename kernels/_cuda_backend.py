"""CUDA backend of the pre-decoder (CuPy): bit-identical to ``reference_logits``.

The kernels are ``kernels/cuda/predecoder.cu``. By default they are compiled at
run time with NVRTC (``cupy.RawModule``), so no CUDA toolkit is needed; if
``QHIL_CUBIN_DIR`` names a CMake build (``cmake -S . -B build``; the folder
``build`` or ``build/kernels``), the prebuilt cubin for the device's
architecture is loaded instead (or, failing that, the newest PTX the device can
JIT).

Each layer is one launch, one thread per output element, int64 (wrapping)
accumulation as in the reference, so the logits match bit for bit. With
``fused=True`` the whole network runs in one launch, one block per shot
(``qhil_predecoder_forward``, the building block of a persistent kernel).

Importing this module never needs CuPy or a GPU; ``cuda_available()`` says
whether the backend can run here, and why not.
"""

from __future__ import annotations

import functools
import os
import re
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ._model import QuantizedModel

__all__ = ["SOURCE", "cuda_available", "cuda_logits"]

SOURCE = Path(__file__).with_name("cuda") / "predecoder.cu"
# NVRTC options; CuPy adds the -arch of the current device.
NVRTC_OPTIONS = ("-std=c++17",)
_THREADS = 256  # threads per block, both kernels
_BLOCKS_PER_SM = 32  # grid cap for the grid-stride layer kernel
_STEM = "predecoder"


def _cupy() -> Any:
    import cupy  # type: ignore[import-not-found]

    return cupy


@functools.cache
def cuda_available() -> tuple[bool, str]:
    """(True, device description) if the backend runs here, else (False, why not)."""
    try:
        cupy = _cupy()
    except Exception as ex:  # ImportError, or a broken CUDA library underneath
        return False, f"CuPy is not importable ({type(ex).__name__}); install the 'gpu' extra"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as ex:  # no driver, or one too old for CuPy's runtime
        return False, f"no usable CUDA driver ({ex})"
    if n < 1:
        return False, "no CUDA device found"
    try:
        cupy.zeros(1)  # CuPy imports on GPU-less machines but cannot allocate
    except Exception as ex:
        return False, f"the CUDA device cannot allocate memory ({ex})"
    try:
        _function(cupy, "qhil_conv3d_u8")  # compiles (NVRTC) or loads the prebuilt kernels
    except Exception as ex:
        return False, f"the CUDA kernels cannot be compiled or loaded ({type(ex).__name__}: {ex})"
    dev = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(dev.id)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return True, f"CUDA device {dev.id}: {name}, compute capability {dev.compute_capability}"


# --------------------------------------------------------------------------- kernels


def prebuilt_path(folder: str | Path, cc: int) -> Path:
    """The CMake artifact to load on a device of compute capability ``cc`` (e.g. 86).

    A cubin runs on its own major architecture at the same or a higher minor
    version; PTX is JIT-compiled by the driver for any newer device.
    """
    folder = Path(folder)
    if (folder / "kernels").is_dir() and not any(folder.glob(f"{_STEM}.sm_*")):
        folder = folder / "kernels"
    found: dict[str, dict[int, Path]] = {"cubin": {}, "ptx": {}}
    for p in folder.glob(f"{_STEM}.sm_*.*"):
        m = re.fullmatch(rf"{_STEM}\.sm_(\d+)\.(cubin|ptx)", p.name)
        if m:
            found[m[2]][int(m[1])] = p
    cubins = [a for a in found["cubin"] if a // 10 == cc // 10 and a <= cc]
    if cubins:
        return found["cubin"][max(cubins)]
    ptxs = [a for a in found["ptx"] if a <= cc]
    if ptxs:
        return found["ptx"][max(ptxs)]
    have = sorted(p.name for d in found.values() for p in d.values())
    raise FileNotFoundError(
        f"QHIL_CUBIN_DIR={str(folder)!r} has no {_STEM} cubin or PTX for compute capability "
        f"{cc} (found {have or 'nothing'}); rebuild with QHIL_CUDA_ARCHS including {cc}, or "
        "unset QHIL_CUBIN_DIR to compile with NVRTC"
    )


_MODULES: dict[int, Any] = {}  # device id -> cupy.RawModule


def _function(cupy: Any, name: str) -> Any:
    dev = cupy.cuda.Device()
    module = _MODULES.get(dev.id)
    if module is None:
        folder = os.environ.get("QHIL_CUBIN_DIR")
        if folder:
            module = cupy.RawModule(path=str(prebuilt_path(folder, int(dev.compute_capability))))
        else:
            module = cupy.RawModule(code=SOURCE.read_text(), options=NVRTC_OPTIONS)
        _MODULES[dev.id] = module
    return module.get_function(name)


@functools.cache
def _sm_count(device_id: int) -> int:
    rt = _cupy().cuda.runtime
    return int(rt.deviceGetAttribute(rt.cudaDevAttrMultiProcessorCount, device_id))


# --------------------------------------------------------------------------- weights


class _DeviceModel:
    """A model's weights on one device: per layer, and packed for the fused kernel."""

    def __init__(self, cupy: Any, model: QuantizedModel) -> None:
        ws = [np.ascontiguousarray(w, dtype=np.int32) for w in model.weights]
        bs = [np.ascontiguousarray(b, dtype=np.int64) for b in model.biases]
        # (weights, bias, c_in, c_out, k) per layer
        self.layers = [
            (cupy.asarray(w), cupy.asarray(b), w.shape[1], w.shape[0], w.shape[2])
            for w, b in zip(ws, bs, strict=True)
        ]
        # Fused kernel: int64[n_layers, 5] rows of c_in, c_out, k, weight offset, bias offset
        w_off = np.cumsum([0] + [w.size for w in ws])[:-1]
        b_off = np.cumsum([0] + [b.size for b in bs])[:-1]
        table = [
            (w.shape[1], w.shape[0], w.shape[2], wo, bo)
            for w, wo, bo in zip(ws, w_off, b_off, strict=True)
        ]
        self.table = cupy.asarray(np.array(table, dtype=np.int64))
        self.w_all = cupy.asarray(np.concatenate([w.ravel() for w in ws]))
        self.b_all = cupy.asarray(np.concatenate(bs))
        self.max_hidden = max((w.shape[0] for w in ws[:-1]), default=0)


# Keyed by the model object itself (QuantizedModel compares by identity), so weights are
# uploaded once per model and device, and freed with the model.
_DEVICE_MODELS: weakref.WeakKeyDictionary[QuantizedModel, dict[int, _DeviceModel]] = (
    weakref.WeakKeyDictionary()
)


def _device_model(cupy: Any, model: QuantizedModel) -> _DeviceModel:
    per_device = _DEVICE_MODELS.setdefault(model, {})
    dev = cupy.cuda.Device().id
    if dev not in per_device:
        per_device[dev] = _DeviceModel(cupy, model)
    return per_device[dev]


# --------------------------------------------------------------------------- inference


def cuda_logits(x: np.ndarray, model: QuantizedModel, *, fused: bool = False) -> np.ndarray:
    """int64[B, 4, T, d, d] logits of uint8[B, 4, T, d, d] input; == ``reference_logits``.

    Runs on CuPy's current device and stream. ``fused`` runs the whole network
    in one launch (one block per shot) instead of one launch per layer.
    """
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.ndim != 5 or x.shape[1] != 4:
        raise ValueError(f"x must be uint8[B, 4, T, d, d]; got shape {x.shape}")
    if x.size == 0:
        return np.empty(x.shape, dtype=np.int64)
    cupy = _cupy()
    dm = _device_model(cupy, model)
    xd = cupy.asarray(x)
    out = _forward(cupy, xd, dm, model) if fused else _per_layer(cupy, xd, dm, model)
    return np.asarray(cupy.asnumpy(out), dtype=np.int64)


def _per_layer(cupy: Any, xd: Any, dm: _DeviceModel, model: QuantizedModel) -> Any:
    i32 = np.int32
    n_b, _, n_t, n_h, n_w = xd.shape
    sms = _sm_count(cupy.cuda.Device().id)
    last = len(dm.layers) - 1
    a = xd
    for i, (w, b, c_in, c_out, k) in enumerate(dm.layers):
        out = cupy.empty((n_b, c_out, n_t, n_h, n_w), dtype=cupy.int64)
        grid = min(-(-out.size // _THREADS), sms * _BLOCKS_PER_SM)
        dims = (i32(n_b), i32(c_in), i32(c_out), i32(n_t), i32(n_h), i32(n_w), i32(k))
        epi = (i32(i != last), i32(model.weight_bits))  # relu, out_shift
        if i == 0:
            kernel = _function(cupy, "qhil_conv3d_u8")
            kernel((grid,), (_THREADS,), (a, i32(model.act_bits), w, b, out, *dims, *epi))
        else:
            kernel = _function(cupy, "qhil_conv3d_i64")
            kernel((grid,), (_THREADS,), (a, w, b, out, *dims, *epi))
        a = out
    return a


def _forward(cupy: Any, xd: Any, dm: _DeviceModel, model: QuantizedModel) -> Any:
    i32 = np.int32
    n_b, _, n_t, n_h, n_w = xd.shape
    blocks = min(n_b, 4 * _sm_count(cupy.cuda.Device().id))
    stride = max(dm.max_hidden * n_t * n_h * n_w, 1)
    scratch = cupy.empty((blocks, 2, stride), dtype=cupy.int64)
    logits = cupy.empty((n_b, 4, n_t, n_h, n_w), dtype=cupy.int64)
    args = (
        xd, dm.w_all, dm.b_all, dm.table, i32(len(dm.layers)),
        i32(n_b), i32(n_t), i32(n_h), i32(n_w), i32(model.act_bits), i32(model.weight_bits),
        scratch, np.int64(stride), logits,
    )  # fmt: skip
    _function(cupy, "qhil_predecoder_forward")((blocks,), (_THREADS,), args)
    return logits
