"""Whether the persistent kernel can run here, and the fix when it cannot.

``persistent_available()`` is asked before anything loads ``numba.cuda``'s device code:
the loop refuses ``--backend cuda-persistent`` up front, with the reason and the fix,
rather than failing once the run has started.
"""

from __future__ import annotations

import os

__all__ = ["BACKEND", "FIX", "persistent_available"]

BACKEND = "cuda-persistent"
FIX = (
    "use --backend cuda, numba or numpy (the same pre-decoder, launched per batch), "
    "or set NUMBA_ENABLE_CUDASIM=1 to run the persistent kernel in Numba's CUDA simulator "
    "(slow; for testing)"
)


def persistent_available() -> tuple[bool, str]:
    """(True, what it runs on) if the persistent kernel can run here, else (False, why not).

    It needs Numba's CUDA target (the 'gpu' extra: numba-cuda) and a usable NVIDIA
    GPU and driver, or the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
    """
    try:
        from numba import cuda

        from qhil.bridge import simulator_enabled
    except Exception as ex:  # no numba.cuda, or a broken install underneath
        return False, (
            f"Numba's CUDA target is not importable ({type(ex).__name__}: {ex}); "
            "install the 'gpu' extra (numba-cuda)"
        )
    if simulator_enabled():
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): slow but exact"
    late = ""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        late = (
            " (NUMBA_ENABLE_CUDASIM=1 is set, but only after Numba's CUDA target was "
            "imported in this process: set it before starting Python)"
        )
    try:
        ok = bool(cuda.is_available())
    except Exception as ex:
        return False, f"Numba cannot initialize CUDA ({type(ex).__name__}: {ex}){late}"
    if not ok:
        why = "no usable NVIDIA GPU or CUDA driver"
        try:
            from numba.cuda.cudadrv import driver as _driver

            err = getattr(_driver.driver, "initialization_error", None)
            if err:
                why += f" ({' '.join(str(err).split())})"
        except Exception:  # the reason is a courtesy; is_available() already said no
            pass
        return False, f"Numba's CUDA target found {why}{late}"
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, f"CUDA device {dev.id}: {name}, compute capability {dev.compute_capability}"
    except Exception as ex:
        return False, f"the CUDA device is unusable ({type(ex).__name__}: {ex}){late}"
