"""Device-side pieces both persistent kernels share: the flag intrinsics, the wait loop,
and ``inline_device``, which lets a kernel be written as small functions.

The ring's layout and protocol are the bridge's (``qhil.bridge.MappedSlotRing``); this
module is the kernel's side of it:

- ``flag_load(arr, idx)`` / ``flag_store(arr, idx, value)``: ``ld.acquire.sys.u64`` and
  ``st.release.sys.u64`` on a uint64 1-D array in mapped memory (the bridge's module
  docstring says why each is needed);
- ``await_flag(ctrl, arr, idx, target, beat)``: thread 0's wait for ``arr[idx] >= target``,
  honouring ``W_SHUTDOWN`` on every poll and beating ``W_HEARTBEAT`` every
  ``HEARTBEAT_EVERY`` polls; ``W_STALL`` (a test hook) makes it spin with neither progress
  nor beats, still honouring shutdown.

Why ``inline_device`` and not ``cuda.jit(device=True)``: Numba compiles a called device
function for the *current* device, which needs a GPU, so a kernel calling one could not
be compiled with ``compile_ptx(..., cc=(9, 0))`` on a machine without a GPU (CI). An
``inline_device`` function is compiled into its caller with the caller's target instead
(``context.compile_internal``), so kernels built from them compile anywhere and leave no
call in the PTX. In the simulator (``NUMBA_ENABLE_CUDASIM=1``) it is an ordinary
simulated device function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import cuda, types

from qhil.bridge import HEARTBEAT_EVERY, W_HEARTBEAT, W_SHUTDOWN, W_STALL, simulator_enabled

__all__ = ["await_flag", "flag_load", "flag_store", "inline_device"]


def inline_device(restype: Any) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: a device function returning ``restype`` (a numba type), inlined into
    whichever kernel calls it. Arguments are typed at the call. Declare no ``cuda.shared``
    array inside (pass it in); a barrier inside must be reached by the whole block."""

    def wrap(impl: Callable[..., Any]) -> Any:
        if simulator_enabled():  # a simulated device function sees its thread's cuda module
            return cuda.jit(device=True)(impl)
        from numba.core import cgutils
        from numba.core.extending import intrinsic

        @intrinsic(target="cuda")
        def call(typingctx: Any, *args: Any) -> Any:
            tys = args[0].types if isinstance(args[0], types.StarArgTuple) else args
            inner = restype(*tys)

            def codegen(context: Any, builder: Any, signature: Any, llargs: Any) -> Any:
                vals = cgutils.unpack_tuple(builder, llargs[0], len(tys))
                return context.compile_internal(builder, impl, inner, vals)

            return restype(types.StarArgTuple(tys)), codegen

        call.__doc__ = impl.__doc__
        return call

    return wrap


if simulator_enabled():

    @cuda.jit(device=True)
    def flag_load(arr: Any, idx: int) -> int:  # pragma: no cover - simulator only
        """Acquire load of ``arr[idx]`` (uint64 1-D): a plain read in the simulator."""
        return arr[idx]

    @cuda.jit(device=True)
    def flag_store(arr: Any, idx: int, value: int) -> None:  # pragma: no cover - simulator
        """Release store of ``value`` into ``arr[idx]`` (uint64 1-D)."""
        arr[idx] = value

else:
    from llvmlite import ir
    from numba.core import cgutils
    from numba.core.extending import intrinsic

    def _item_ptr(context: Any, builder: Any, aryty: Any, ary_val: Any, idx: Any, idxty: Any):
        ary = context.make_array(aryty)(context, builder, ary_val)
        i = context.cast(builder, idx, idxty, types.intp)
        return cgutils.get_item_pointer(context, builder, aryty, ary, [i])

    def _check_u64(arr: Any) -> None:
        if not isinstance(arr, types.Array) or arr.dtype != types.uint64 or arr.ndim != 1:
            raise TypeError(f"flag arrays must be 1-D uint64; got {arr}")

    @intrinsic(target="cuda")
    def _ld_acquire_sys_u64(typingctx: Any, arr: Any, idx: Any) -> Any:
        _check_u64(arr)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            fty = ir.FunctionType(ir.IntType(64), [ptr.type])
            asm = "ld.acquire.sys.u64 $0, [$1];"
            return builder.asm(fty, asm, "=l,l,~{memory}", [ptr], side_effect=True)

        return types.uint64(arr, idx), codegen

    @intrinsic(target="cuda")
    def _st_release_sys_u64(typingctx: Any, arr: Any, idx: Any, val: Any) -> Any:
        _check_u64(arr)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
            v = context.cast(builder, args[2], sig.args[2], types.uint64)
            fty = ir.FunctionType(ir.VoidType(), [ptr.type, ir.IntType(64)])
            asm = "st.release.sys.u64 [$0], $1;"
            builder.asm(fty, asm, "l,l,~{memory}", [ptr, v], side_effect=True)
            return context.get_dummy_value()

        return types.none(arr, idx, val), codegen

    flag_load = _ld_acquire_sys_u64  # ld.acquire.sys.u64 of arr[idx] (uint64 1-D)
    flag_store = _st_release_sys_u64  # st.release.sys.u64 of value into arr[idx]


@inline_device(types.UniTuple(types.int64, 2))
def await_flag(ctrl, arr, idx, target, beat):  # type: ignore[no-untyped-def]
    """Thread 0: poll ``arr[idx]`` (acquire, system scope) until it reads ``>= target``.

    Returns ``(status, beat)``: status 1 when it did, -1 on shutdown; ``beat`` is the
    heartbeat count to carry on with. Flags and counters only grow, so ``>=`` is the
    test for both a slot's sequence flag (a stale lap reads lower) and a consumer count.
    """
    status, spins = np.int64(0), np.int64(0)
    while status == 0:
        if flag_load(ctrl, W_SHUTDOWN) != 0:
            status = -1
        elif flag_load(ctrl, W_STALL) == 0:
            if np.int64(flag_load(arr, idx)) >= target:
                status = 1
            else:
                spins += 1
                if spins % HEARTBEAT_EVERY == 0:
                    beat += 1
                    flag_store(ctrl, W_HEARTBEAT, beat)
    return status, np.int64(beat)
