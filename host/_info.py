"""``qhil info``: what this machine offers the loop (GPU, board, backends, versions)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import shutil
import subprocess

from qhil.fpga import find_board, which_frontend
from qhil.host._decoders import DECODERS
from qhil.host._report import machine_description

__all__ = ["Environment", "probe_environment"]

_PACKAGES = (
    "qhil",
    "numpy",
    "numba",
    "stim",
    "pymatching",
    "pyzmq",
    "matplotlib",
    "rich",
    "cupy-cuda13x",
    "numba-cuda",
    "torch",
    "pynq",
    "cocotb",
    "cudaq",
)


@dataclasses.dataclass(frozen=True)
class Environment:
    """The probe's findings; each ``*_reason`` says why a piece is missing, or what was found.

    ``frontend`` is what ``FrontEnd.open(target="auto")`` would use: "board <name>,
    bitstream <path>", or "cycle model (<why no board>)".
    """

    machine: str
    python: str
    gpu: bool
    gpu_reason: str
    board: bool
    board_reason: str
    frontend: str
    transports: tuple[str, ...]
    decoders: tuple[str, ...]
    numba_threads: int
    predecoder_backends: tuple[str, ...]
    versions: dict[str, str]


def _gpu() -> tuple[bool, str]:
    try:
        import cupy  # type: ignore[import-not-found]
    except Exception as ex:
        reason = f"CuPy not importable ({type(ex).__name__}); install the 'gpu' extra"
    else:
        try:
            n = cupy.cuda.runtime.getDeviceCount()
            cupy.zeros(1)
            name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
            return True, f"{n} CUDA device(s): {name}"
        except Exception as ex:
            reason = f"CuPy present but no usable CUDA device ({type(ex).__name__})"
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                reason += f"; nvidia-smi sees: {out.stdout.strip().splitlines()[0]}"
        except (OSError, subprocess.SubprocessError):
            pass
    return False, reason


def _predecoder_backends() -> tuple[str, ...]:
    from qhil.kernels import available_backends

    return available_backends()


def probe_environment() -> Environment:
    """Look around without side effects; never raises for missing hardware.

    >>> env = probe_environment()
    >>> "pymatching" in env.decoders and env.frontend.startswith(("cycle model (", "board "))
    True
    """
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    gpu, gpu_reason = _gpu()
    board = find_board()
    import numba

    return Environment(
        machine=machine_description(),
        python=platform.python_version(),
        gpu=gpu,
        gpu_reason=gpu_reason,
        board=board.present,
        board_reason=board.reason if not board.present else f"{board.name}",
        frontend=which_frontend()[1],
        transports=("shm", "zmq"),
        decoders=DECODERS(),
        numba_threads=numba.get_num_threads(),
        predecoder_backends=_predecoder_backends(),
        versions=versions,
    )
