"""The CUDA backend on a real GPU: bit-identical to the NumPy reference.

Tests marked ``gpu`` skip cleanly without a usable NVIDIA GPU and CuPy (see the repo's
conftest); ``cuda_compile_test.py`` checks the same kernels on the host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import stim

from qhil.kernels import PreDecoder, PreDecoderGeometry, QuantizedModel, reference_logits
from qhil.kernels import _cuda_backend as cb
from qhil.kernels._predecoder import _load_model


def _input(rng: np.random.Generator, b: int, t: int, h: int, w: int, top: int = 1) -> np.ndarray:
    return rng.integers(0, top + 1, size=(b, 4, t, h, w)).astype(np.uint8)


def _circuit(d: int, rounds: int, basis: str = "z", p: float = 0.004) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=p,
        before_round_data_depolarization=p,
        before_measure_flip_probability=p,
        after_reset_flip_probability=p,
    )


def test_without_a_gpu_cuda_backend_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, why = cb.cuda_available()  # before hiding CuPy below: the answer is cached
    if not ok:
        with pytest.raises(RuntimeError, match="CUDA backend needs an NVIDIA GPU") as err:
            PreDecoder.for_circuit(_circuit(3, 3), backend="cuda")
        assert why in str(err.value) and "use backend='numba' or 'numpy'" in str(err.value)
    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    ok, why = cb.cuda_available.__wrapped__()
    assert not ok and "install the 'gpu' extra" in why


@pytest.mark.gpu
def test_cuda_is_available_where_gpu_tests_run() -> None:
    ok, why = cb.cuda_available()
    assert ok, why


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    ("widths", "kernel"), [((4, 8, 6, 4), 3), ((4, 4), 1), ((4, 5, 4), 5), ((4, 32, 32, 4), 3)]
)
def test_matches_reference_on_random_models(
    widths: tuple[int, ...], kernel: int, fused: bool
) -> None:
    rng = np.random.default_rng(len(widths) * 10 + kernel)
    m = QuantizedModel.random(widths=widths, kernel=kernel, seed=kernel)
    for b, t, h, w in [(1, 1, 3, 3), (5, 3, 4, 4), (2, 4, 3, 5), (33, 6, 7, 7)]:
        for top in (1, 3):
            x = _input(rng, b, t, h, w, top)
            got = cb.cuda_logits(x, m, fused=fused)
            assert got.dtype == np.int64 and got.shape == x.shape
            np.testing.assert_array_equal(got, reference_logits(x, m))


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
def test_int64_wraparound_matches_numpy(fused: bool) -> None:
    a = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=1)
    big = QuantizedModel(
        tuple(np.full_like(w, 2**31 - 1) for w in a.weights),
        tuple(np.full_like(b, 2**62) for b in a.biases),
        weight_bits=0,
        act_bits=20,
    )
    x = _input(np.random.default_rng(2), 3, 3, 3, 3, top=255)
    np.testing.assert_array_equal(cb.cuda_logits(x, big, fused=fused), reference_logits(x, big))


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(("d", "rounds"), [(3, 3), (5, 5), (7, 4)])
def test_default_model_on_real_syndromes(d: int, rounds: int, fused: bool) -> None:
    circuit = _circuit(d, rounds)
    geometry = PreDecoderGeometry.from_circuit(circuit)
    dets, _ = circuit.compile_detector_sampler(seed=d).sample(64, separate_observables=True)
    x = geometry.inputs(dets)
    m = _load_model("default")
    np.testing.assert_array_equal(cb.cuda_logits(x, m, fused=fused), reference_logits(x, m))


@pytest.mark.gpu
@pytest.mark.parametrize("basis", ["x", "z"])
def test_predecoder_cuda_equals_numpy(basis: str) -> None:
    circuit = _circuit(5, 5, basis)
    dets, _ = circuit.compile_detector_sampler(seed=11).sample(300, separate_observables=True)
    want = PreDecoder.for_circuit(circuit, backend="numpy", batch_size=64).predecode(dets)
    got = PreDecoder.for_circuit(circuit, backend="cuda", batch_size=64).predecode(dets)
    np.testing.assert_array_equal(got.residual, want.residual)
    np.testing.assert_array_equal(got.obs_flip, want.obs_flip)
    np.testing.assert_array_equal(got.corrections, want.corrections)


@pytest.mark.gpu
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found: cannot build a cubin")
def test_prebuilt_cubin_via_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cupy  # type: ignore[import-not-found]

    cc = int(cupy.cuda.Device().compute_capability)
    out = tmp_path / f"predecoder.sm_{cc}.cubin"
    cmd = ["nvcc", "-std=c++17", "-O3", f"-arch=sm_{cc}", "--cubin", "-o", str(out)]
    subprocess.run([*cmd, str(cb.SOURCE)], check=True, capture_output=True)
    monkeypatch.setenv("QHIL_CUBIN_DIR", str(tmp_path))
    monkeypatch.setattr(cb, "_MODULES", {})  # restored afterwards: later tests use NVRTC again
    m = QuantizedModel.random(widths=(4, 8, 4), kernel=3, seed=5)
    x = _input(np.random.default_rng(5), 4, 3, 5, 5)
    for fused in (False, True):
        np.testing.assert_array_equal(cb.cuda_logits(x, m, fused=fused), reference_logits(x, m))
