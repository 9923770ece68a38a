"""``clock_ns()``: the monotonic clock, read from inside compiled (numba) code.

The host's compiled hot loops stamp packets as they take them, without returning to
Python for ``time.monotonic_ns()``. ``clock_ns`` calls ``clock_gettime(CLOCK_MONOTONIC)``
(the vDSO: about 25 ns, no system call), the same clock ``time.monotonic_ns()`` reads on
Linux, so stamps from both compare directly. It is an intrinsic: call it from njit code
only. The call is to a libc symbol, so a function using it is cached like any other.

>>> import time
>>> from numba import njit
>>> @njit
... def stamp():
...     return clock_ns()
>>> abs(stamp() - time.monotonic_ns()) < 10**9
True
"""

from __future__ import annotations

import sys
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["clock_ns"]

if not sys.platform.startswith("linux"):  # CLOCK_MONOTONIC's number below is Linux's
    raise ImportError(f"qhil's compiled clock needs Linux; this is {sys.platform}")

_CLOCK_MONOTONIC = 1


@intrinsic
def _clock_ns(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        timespec = ir.LiteralStructType([i64, i64])
        ts = cgutils.alloca_once(builder, timespec)
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), timespec.as_pointer()])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
        builder.call(fn, [ir.Constant(ir.IntType(32), _CLOCK_MONOTONIC), ts])
        sec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nsec = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


clock_ns = _clock_ns
