"""Shared by the GPU benchmark's parts: constants, the GPU's description, timing helpers."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SECTIONS = ("bridge_loopback", "inference", "sustained", "loop")
# Run order: the inference section uses CuPy before any persistent kernel is resident, so
# a persistent kernel that failed to exit cannot stall its launches.
RUN_ORDER = ("inference", "bridge_loopback", "sustained", "loop")
ROUND_CLOCK_HZ = 1e6  # the 1 µs QEC round clock: 1,000,000 rounds/s
SEED = 10**9  # fresh shots, never seen in training (as benchmarks/predecoder.py)

# Set when a persistent kernel did not exit: later GPU timings may be disturbed.
_LEFT_RUNNING: list[str] = []


# --------------------------------------------------------------------------- the GPU


def gpu_unavailable_reason() -> str | None:
    """None if CuPy and numba-cuda can both use a GPU here, else why not (one line)."""
    from qhil.bridge import simulator_enabled

    if simulator_enabled():
        return "NUMBA_ENABLE_CUDASIM=1 is set: Numba's CUDA simulator is not a GPU; unset it"
    try:
        from numba import cuda

        if not cuda.is_available():
            return (
                "numba.cuda sees no usable GPU (needs an NVIDIA driver and numba-cuda; "
                "install the 'gpu' extra)"
            )
    except Exception as ex:
        return f"numba.cuda is not usable ({type(ex).__name__}: {ex})"
    from qhil.kernels import cuda_available

    ok, why = cuda_available()
    return None if ok else why


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def gpu_description() -> dict[str, Any]:
    """The GPU by CuPy's device properties and ``nvidia-smi``, and the software versions."""
    import cupy  # type: ignore[import-not-found]
    import numba

    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device()
    props = rt.getDeviceProperties(dev.id)
    name = props["name"]
    out: dict[str, Any] = {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "device_id": dev.id,
        "compute_capability": str(dev.compute_capability),
        "sm_count": int(props.get("multiProcessorCount", 0)),
        "memory_gib": round(int(props.get("totalGlobalMem", 0)) / 2**30, 1),
        "can_map_host_memory": bool(props.get("canMapHostMemory", 0)),
        "cuda_runtime": int(rt.runtimeGetVersion()),
        "cuda_driver": int(rt.driverGetVersion()),
        "cupy": cupy.__version__,
        "numba": numba.__version__,
    }
    try:
        from importlib.metadata import version

        out["numba_cuda"] = version("numba-cuda")
    except Exception:
        out["numba_cuda"] = None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        out["nvidia_smi"] = None
    else:
        try:
            proc = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            text = proc.stdout.strip() or proc.stderr.strip()
            out["nvidia_smi"] = _one_line(text) if text else f"exit {proc.returncode}"
        except Exception as ex:
            out["nvidia_smi"] = f"failed: {type(ex).__name__}: {ex}"
    return out


# --------------------------------------------------------------------------- helpers


def _circuit(distance: int, rounds: int, p: float) -> Any:
    from qhil.sim import NoiseModel, memory_circuit

    noise = NoiseModel.from_name("stim-depolarizing", p)
    return memory_circuit(distance=distance, rounds=rounds, noise=noise)


def _pct_us(ns: np.ndarray) -> dict[str, float]:
    from qhil.host import Percentiles

    return dataclasses.asdict(Percentiles.of(np.asarray(ns)).scaled(1e-3))


def _time_calls(
    fn: Callable[[], Any], sync: Callable[[], Any], *, repeats: int, deadline: float, least: int = 3
) -> np.ndarray:
    """ns per call: ``sync(); t0; fn(); sync(); t1``, ``repeats`` times (at least ``least``,
    more only while before ``deadline``)."""
    times = []
    for i in range(repeats):
        if i >= least and time.monotonic() > deadline:
            break
        sync()
        t0 = time.perf_counter_ns()
        fn()
        sync()
        times.append(time.perf_counter_ns() - t0)
    return np.array(times, dtype=np.int64)


def _wait_result(pd: Any, what: str, timeout_s: float = 10.0) -> Any:
    """Spin on ``pd.poll()`` until one result arrives; raise after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        res = pd.poll()
        if res:
            return res
        if time.monotonic() > end:
            raise TimeoutError(f"no result for {what} within {timeout_s} s: {pd.counters()}")
