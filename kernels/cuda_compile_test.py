"""Checks of the CUDA kernels that need no GPU: nvcc, the CMake build, NVRTC, and the
kernels' arithmetic and argument lists run on the host.

The last part compiles ``predecoder.cu`` as host code (``-DQHIL_HOST_REFERENCE``) and runs
``cuda_logits`` against it through a stand-in for CuPy, so the Python side's launches (kernel
names, argument order and C types, grid sizes) and the kernels' indexing are checked against
``reference_logits`` here; only the real device execution is left to the ``gpu`` tests.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from qhil.kernels import _cuda_backend as cb
from qhil.kernels._model import QuantizedModel, reference_logits

REPO = Path(__file__).resolve().parent.parent
CUDA_DIR = Path(__file__).with_name("cuda")
ARCHS = (80, 90)
ENTRIES = ("qhil_conv3d_u8", "qhil_conv3d_i64", "qhil_predecoder_forward")


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if found is None and home and (Path(home) / "bin" / "nvcc").is_file():
        found = str(Path(home) / "bin" / "nvcc")
    return found


NVCC = _nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (no CUDA toolkit)")


def _run(cmd: list[Any], timeout: float = 120) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


# --------------------------------------------------------------------------- nvcc


@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["cubin", "ptx"])
def test_nvcc_compiles_without_warnings(arch: int, kind: str, tmp_path: Path) -> None:
    out = tmp_path / f"predecoder.sm_{arch}.{kind}"
    cmd = [NVCC, "-std=c++17", "-O3", f"-arch=sm_{arch}", f"--{kind}", "-Werror", "all-warnings"]
    log = _run([*cmd, "-o", out, cb.SOURCE])
    assert "warning" not in log.lower(), log
    data = out.read_bytes()
    for name in ENTRIES:
        assert name.encode() in data
    if kind == "ptx":
        text = data.decode()
        assert f".target sm_{arch}" in text
        assert all(f".visible .entry {name}(" in text for name in ENTRIES)


@needs_nvcc
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found")
def test_cmake_builds_ptx_and_cubin_per_arch(tmp_path: Path) -> None:
    build = tmp_path / "build"
    _run(["cmake", "-S", REPO, "-B", build])
    _run(["cmake", "--build", build, "--parallel", "4"], timeout=300)
    sources = sorted(CUDA_DIR.glob("*.cu"))
    assert cb.SOURCE in sources
    for src in sources:
        for arch in ARCHS:
            for kind in ("ptx", "cubin"):
                art = build / "kernels" / f"{src.stem}.sm_{arch}.{kind}"
                assert art.is_file() and art.stat().st_size > 0, art
    # What QHIL_CUBIN_DIR=build loads on each device generation.
    out = build / "kernels"
    assert cb.prebuilt_path(build, 90) == out / "predecoder.sm_90.cubin"
    assert cb.prebuilt_path(out, 80) == out / "predecoder.sm_80.cubin"
    assert cb.prebuilt_path(out, 86) == out / "predecoder.sm_80.cubin"  # same major: runs
    assert cb.prebuilt_path(out, 100) == out / "predecoder.sm_90.ptx"  # newer: driver JIT
    with pytest.raises(FileNotFoundError, match="compute capability 75"):
        cb.prebuilt_path(out, 75)


# --------------------------------------------------------------------------- NVRTC


@pytest.mark.parametrize("arch", ARCHS)
def test_nvrtc_compiles_to_ptx_without_a_gpu(arch: int) -> None:
    try:
        from cupy_backends.cuda.libs import nvrtc  # type: ignore[import-not-found]
    except Exception as ex:
        pytest.skip(f"CuPy is not importable ({type(ex).__name__}); install the 'gpu' extra")
    try:
        nvrtc.getVersion()
    except Exception as ex:
        pytest.skip(f"NVRTC library not loadable: {ex}")
    # The options cupy.RawModule passes, with the architecture named rather than queried
    # from a device (CuPy's own compile helpers ask the device).
    opts = (*cb.NVRTC_OPTIONS, "--device-as-default-execution-space", f"-arch=compute_{arch}")
    prog = nvrtc.createProgram(cb.SOURCE.read_text(), "predecoder.cu", (), ())
    try:
        try:
            nvrtc.compileProgram(prog, opts)
        except Exception as ex:
            pytest.fail(f"NVRTC failed: {ex}\n{nvrtc.getProgramLog(prog)}")
        ptx = nvrtc.getPTX(prog)
        ptx = (ptx.decode() if isinstance(ptx, bytes) else ptx).rstrip("\0")
    finally:
        nvrtc.destroyProgram(prog)
    assert f".target sm_{arch}" in ptx
    assert all(f".visible .entry {name}(" in ptx for name in ENTRIES)


# --------------------------------------------------------------------------- host emulation

_C_TYPES: dict[str, type] = {"unsigned char": np.uint8, "int": np.int32, "long long": np.int64}


def _kernel_signatures() -> dict[str, list[tuple[type, bool]]]:
    """Per extern "C" kernel: (numpy scalar type, is pointer) of each parameter."""
    src = cb.SOURCE.read_text()
    sigs: dict[str, list[tuple[type, bool]]] = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', src):
        parsed = []
        for p in params.split(","):
            decl = re.sub(r"\b(const|__restrict__)\b", " ", p)
            base = " ".join(decl.replace("*", " ").split()[:-1])
            parsed.append((_C_TYPES[base], "*" in decl))
        sigs[name] = parsed
    return sigs


class _HostKernel:
    """Stands in for a cupy RawKernel: checks the arguments against the kernel's C
    signature, as CuPy packs them by their types, then runs the host emulation."""

    def __init__(self, lib: ctypes.CDLL, name: str, sig: list[tuple[type, bool]]) -> None:
        self.fn, self.name, self.sig = getattr(lib, f"qhil_host_{name[len('qhil_') :]}"), name, sig
        self.fn.restype = None

    def __call__(self, grid: tuple[int], block: tuple[int], args: tuple[Any, ...]) -> None:
        assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and block[0] >= 1
        assert len(args) == len(self.sig), f"{self.name}: {len(args)} args, wants {len(self.sig)}"
        c_args: list[Any] = []
        for i, (a, (dtype, pointer)) in enumerate(zip(args, self.sig, strict=True)):
            if pointer:
                assert isinstance(a, np.ndarray) and a.dtype == dtype, (self.name, i)
                assert a.flags.c_contiguous, (self.name, i)
                c_args.append(a.ctypes.data_as(ctypes.c_void_p))
            else:
                assert type(a) is dtype, f"{self.name} arg {i}: {type(a)} is not {dtype}"
                ctype = ctypes.c_int32 if dtype is np.int32 else ctypes.c_int64
                c_args.append(ctype(int(args[i])))  # args[i]: `a` is narrowed to object
        self.fn(*c_args, ctypes.c_int(grid[0]), ctypes.c_int(block[0]))


def _fake_cupy(lib: ctypes.CDLL, sms: int) -> SimpleNamespace:
    """Enough of CuPy's API for _cuda_backend, on NumPy arrays."""
    sigs = _kernel_signatures()
    assert set(sigs) == set(ENTRIES)

    class RawModule:
        def __init__(self, **kw: Any) -> None:
            assert kw == {"code": cb.SOURCE.read_text(), "options": cb.NVRTC_OPTIONS}

        def get_function(self, name: str) -> _HostKernel:
            return _HostKernel(lib, name, sigs[name])

    device = SimpleNamespace(id=0, compute_capability="90")
    attrs = {16: sms}  # cudaDevAttrMultiProcessorCount
    runtime = SimpleNamespace(
        cudaDevAttrMultiProcessorCount=16, deviceGetAttribute=lambda a, dev: attrs[a]
    )

    def empty(shape: Any, dtype: Any) -> np.ndarray:
        return np.full(shape, -0x5A5A5A5A5A5A5A5A, dtype=dtype)  # poisoned, not zeros

    return SimpleNamespace(
        asarray=lambda a: np.array(a, copy=True),
        asnumpy=lambda a: np.array(a, copy=True),
        empty=empty,
        int64=np.int64,
        RawModule=RawModule,
        cuda=SimpleNamespace(Device=lambda i=0: device, runtime=runtime),
    )


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if NVCC is None:
        pytest.skip("nvcc not found (no CUDA toolkit)")
    lib = tmp_path_factory.mktemp("host") / "predecoder_host.so"
    flags = ["-std=c++17", "-O2", "-shared", "-Xcompiler", "-fPIC", "-arch=sm_80"]
    _run([NVCC, *flags, "-Werror", "all-warnings", "-DQHIL_HOST_REFERENCE", "-o", lib, cb.SOURCE])
    return ctypes.CDLL(str(lib))


@pytest.fixture
def host_cuda(host_lib: ctypes.CDLL, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """cuda_logits running on the host emulation (2 'SMs', so grids are small and stride)."""
    monkeypatch.setattr(cb, "_cupy", lambda: _fake_cupy(host_lib, sms=2))
    monkeypatch.delenv("QHIL_CUBIN_DIR", raising=False)
    monkeypatch.setattr(cb, "_MODULES", {})
    monkeypatch.setattr(cb, "_DEVICE_MODELS", cb.weakref.WeakKeyDictionary())
    monkeypatch.setattr(cb, "_BLOCKS_PER_SM", 1)  # fewer threads than outputs: grid-stride
    monkeypatch.setattr(cb, "_THREADS", 32)
    cb._sm_count.cache_clear()
    yield
    cb._sm_count.cache_clear()


def _input(rng: np.random.Generator, shape: tuple[int, ...], top: int) -> np.ndarray:
    """uint8[B, 4, T, H, W] with values 0..top; shape is (B, T, H, W)."""
    b, t, h, w = shape
    return rng.integers(0, top + 1, size=(b, 4, t, h, w)).astype(np.uint8)


@pytest.mark.usefixtures("host_cuda")
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    ("widths", "kernel", "shape"),
    [
        ((4, 8, 6, 4), 3, (5, 3, 4, 4)),
        ((4, 4), 1, (3, 2, 3, 3)),
        ((4, 5, 4), 5, (2, 4, 3, 5)),  # kernel wider than the grid: padding on both sides
        ((4, 32, 32, 4), 3, (1, 1, 5, 5)),
    ],
)
def test_host_emulated_cuda_logits_equal_reference(
    widths: tuple[int, ...], kernel: int, shape: tuple[int, ...], fused: bool
) -> None:
    rng = np.random.default_rng(len(widths) * 10 + kernel)
    m = QuantizedModel.random(widths=widths, kernel=kernel, seed=kernel)
    for top in (1, 3):  # 0/1 input, and general uint8 (the kernels scale any value)
        x = _input(rng, shape, top)
        got = cb.cuda_logits(x, m, fused=fused)
        assert got.dtype == np.int64 and got.shape == x.shape
        np.testing.assert_array_equal(got, reference_logits(x, m))


@pytest.mark.usefixtures("host_cuda")
@pytest.mark.parametrize("fused", [False, True])
def test_host_emulated_mixed_kernels_and_int64_wraparound(fused: bool) -> None:
    rng = np.random.default_rng(7)
    a = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=1)
    b = QuantizedModel.random(widths=(4, 6, 4), kernel=5, seed=2)
    mixed = QuantizedModel((a.weights[0], b.weights[1]), (a.biases[0], b.biases[1]), 8, 6)
    x = _input(rng, (3, 4, 5, 5), 1)
    np.testing.assert_array_equal(cb.cuda_logits(x, mixed, fused=fused), reference_logits(x, mixed))
    # Huge weights and no rescaling: accumulators overflow int64 and wrap, as NumPy's do.
    big = QuantizedModel(
        tuple(np.full_like(w, 2**31 - 1) for w in a.weights),
        tuple(np.full_like(bb, 2**62) for bb in a.biases),
        weight_bits=0,
        act_bits=20,
    )
    x = _input(rng, (2, 3, 3, 3), 255)
    with np.errstate(over="ignore"):
        want = reference_logits(x, big)
    np.testing.assert_array_equal(cb.cuda_logits(x, big, fused=fused), want)


@pytest.mark.usefixtures("host_cuda")
def test_host_emulated_default_model_and_empty_batch() -> None:
    from qhil.kernels._predecoder import _load_model

    m = _load_model("default")
    x = _input(np.random.default_rng(3), (2, 3, 3, 3), 1)
    np.testing.assert_array_equal(cb.cuda_logits(x, m), reference_logits(x, m))
    assert cb.cuda_logits(np.zeros((0, 4, 2, 3, 3), np.uint8), m).shape == (0, 4, 2, 3, 3)
    with pytest.raises(ValueError, match="must be uint8"):
        cb.cuda_logits(np.zeros((1, 3, 2, 3, 3), np.uint8), m)
