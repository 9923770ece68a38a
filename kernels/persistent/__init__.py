"""qhil.kernels.persistent: the GPU-direct path's device side, in one place.

Persistent kernels are launched once and poll the bridge's mapped slot ring
(``qhil.bridge.MappedSlotRing``, whose layout and protocol the bridge defines):

- ``PersistentPreDecoder.start(geometry, model)``: the CNN pre-decoder as a
  persistent kernel (``streaming_kernel``) fed wire-v1 packets, one per round;
  ``PersistentResult`` per shot, ``StopReport`` when it ends.
- ``PersistentPreDecodedMatching``: that kernel plus PyMatching behind the loop's
  decoder interface (``--backend cuda-persistent``); ``persistent_available()``
  says whether it can run here and why not.
- ``EchoLoopback``: the ring alone, through a persistent echo kernel
  (``echo_kernel``), for the bridge's latency floor.
- ``KernelRun``: the launch, heartbeat watchdog and stop both kernels share;
  ``PersistentKernelError`` / ``KernelStalled`` are its failures.
- Device pieces both kernels use: ``flag_load`` / ``flag_store`` (system-scope
  acquire / release), ``await_flag`` (the poll, heartbeat and shutdown loop) and
  ``inline_device``. ``KERNEL_SIGNATURE`` / ``ECHO_SIGNATURE`` compile the kernels
  with ``numba.cuda.compile_ptx`` on a machine without a GPU.

Everything but the decoder and ``persistent_available`` loads ``numba.cuda`` and is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from qhil.kernels.persistent._available import persistent_available
from qhil.kernels.persistent._pipeline import PersistentPreDecodedMatching

_LAZY = {
    "COUNTER_NAMES": "_kernel",
    "KERNEL_SIGNATURE": "_kernel",
    "streaming_kernel": "_kernel",
    "ECHO_SIGNATURE": "_echo",
    "EchoLoopback": "_echo",
    "echo_kernel": "_echo",
    "KernelRun": "_launch",
    "KernelStalled": "_launch",
    "PersistentKernelError": "_launch",
    "PersistentPreDecoder": "_predecoder",
    "PersistentResult": "_predecoder",
    "StopReport": "_predecoder",
    "await_flag": "_device",
    "flag_load": "_device",
    "flag_store": "_device",
    "inline_device": "_device",
}

__all__ = ["PersistentPreDecodedMatching", "persistent_available", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
