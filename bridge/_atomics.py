"""Acquire/release atomics on uint64 NumPy arrays, for Numba ``@njit`` code.

The shared-memory ring (``_ring.py``) publishes slots between processes with
two counters. Correctness needs *ordering*, not just atomicity: the consumer
must see a slot's bytes once it sees the producer's ``head`` move, and the
producer must not overwrite a slot before it sees the consumer's ``tail`` move.
That is the acquire/release pairing:

- ``store_release_u64(arr, i, v)``: every earlier load and store of this thread
  becomes visible before the store of ``v``.
- ``load_acquire_u64(arr, i)``: no later load or store of this thread is moved
  before this load.

They emit LLVM ``store atomic ... release`` / ``load atomic ... acquire`` on an
8-byte-aligned word. On x86-64 (TSO) both compile to plain ``MOV`` plus a
compiler barrier: the hardware already keeps stores in order and loads in
order. On aarch64 they compile to ``STLR``/``LDAR``, which is what makes the ring
correct under ARM's weaker memory model.

Plain Python or NumPy writes to shared memory carry NO such guarantee on
aarch64 (and NumPy may reorder or vectorise copies freely), so the ring's hot
path lives in Numba functions that use these intrinsics.

Both take a ``uint64`` 1-D array (any contiguity; indexed by element) and an
integer element index; the index is not bounds-checked.

>>> import numpy as np
>>> from numba import njit
>>> @njit
... def bump(a):
...     store_release_u64(a, 1, load_acquire_u64(a, 0) + 1)
...     return load_acquire_u64(a, 1)
>>> bump(np.array([41, 0], dtype=np.uint64))
42
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["cpu_relax", "load_acquire_u64", "store_release_u64"]


def _check_array(arr: Any) -> None:
    if not isinstance(arr, types.Array) or arr.dtype != types.uint64 or arr.ndim != 1:
        raise TypeError(
            f"expected a 1-D uint64 array, got {arr}; view the buffer with "
            "np.frombuffer(buf, dtype=np.uint64)"
        )


def _element_ptr(context: Any, builder: Any, aryty: Any, ary_val: Any, idx_val: Any) -> Any:
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx_val])


@intrinsic
def _load_acquire_u64(typingctx: Any, arr: Any, idx: Any) -> Any:
    """Atomic acquire load of ``arr[idx]`` (``arr``: uint64 1-D, 8-byte aligned)."""
    _check_array(arr)
    if not isinstance(idx, types.Integer):
        raise TypeError(f"index must be an integer, got {idx}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        aryty, idxty = sig.args
        idx_val = context.cast(builder, args[1], idxty, types.intp)
        ptr = _element_ptr(context, builder, aryty, args[0], idx_val)
        return builder.load_atomic(ptr, "acquire", 8)

    return types.uint64(arr, idx), codegen


@intrinsic
def _store_release_u64(typingctx: Any, arr: Any, idx: Any, val: Any) -> Any:
    """Atomic release store of ``val`` into ``arr[idx]`` (``arr``: uint64 1-D, aligned)."""
    _check_array(arr)
    if not isinstance(idx, types.Integer) or not isinstance(val, types.Integer):
        raise TypeError(f"index and value must be integers, got {idx} and {val}")

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        aryty, idxty, valty = sig.args
        idx_val = context.cast(builder, args[1], idxty, types.intp)
        value = context.cast(builder, args[2], valty, types.uint64)
        ptr = _element_ptr(context, builder, aryty, args[0], idx_val)
        builder.store_atomic(value, ptr, "release", 8)
        return context.get_dummy_value()

    return types.none(arr, idx, val), codegen


_RELAX = {  # the spin-wait hint per architecture: (LLVM intrinsic, its i32 argument or None)
    "x86_64": ("llvm.x86.sse2.pause", None),
    "AMD64": ("llvm.x86.sse2.pause", None),
    "aarch64": ("llvm.aarch64.hint", 1),  # YIELD
    "arm64": ("llvm.aarch64.hint", 1),
}.get(platform.machine())


@intrinsic
def _cpu_relax(typingctx: Any) -> Any:
    """The CPU's spin-wait hint (x86 ``PAUSE``, ARM ``YIELD``; nothing elsewhere).

    A busy-polling thread issues it on every empty poll. It frees the core's shared
    resources for whatever runs beside it (an SMT sibling, or on a VM's vCPUs possibly
    the decoder), which otherwise runs up to twice as slowly, and it costs the poller a
    few tens of ns of reaction time."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        if _RELAX is not None:
            name, arg = _RELAX
            params = [] if arg is None else [ir.IntType(32)]
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), params), name
            )
            builder.call(fn, [] if arg is None else [ir.Constant(ir.IntType(32), arg)])
        return context.get_dummy_value()

    return types.none(), codegen


# As called from njit code: numba supplies typingctx, so callers pass (arr, idx[, val]).
load_acquire_u64: Callable[[np.ndarray, int], int] = cast(Any, _load_acquire_u64)
store_release_u64: Callable[[np.ndarray, int, int], None] = cast(Any, _store_release_u64)
cpu_relax: Callable[[], None] = cast(Any, _cpu_relax)
