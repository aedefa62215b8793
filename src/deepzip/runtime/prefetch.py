"""`prefetch(array, i)`: a hint to the CPU to start loading ``array[i]``'s cache line, for numba kernels.

At batch 1 a sparse layer's weights are read once per call, and in a real model the other layers have
evicted them since the last one: the kernel then waits on memory. The hardware prefetcher stops at
every 4 KB page; asking for the data a little ahead keeps the loads in flight (4096x4096 at 9%, after
the caches are flushed: 0.78 -> 0.54 ms; with the data in cache it costs ~4%).

LLVM's `llvm.prefetch` has no numba spelling, so this is a numba intrinsic. If this numba/llvmlite
cannot compile it, `prefetch` is a no-op: kernels stay correct, only slower on cold caches. Which of the
two a kernel gets is decided when that kernel is first compiled (a probe compiled once), not at import.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload


@intrinsic
def _llvm_prefetch(typingctx, array, index):
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0i8")
        # read (0), keep in all cache levels (3), data cache (1)
        builder.call(fn, [pointer, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@numba.njit(nogil=True, inline="always")
def _hint(array, index):
    _llvm_prefetch(array, index)


@functools.cache
def works() -> bool:
    """Whether the intrinsic compiles and runs here (probed once, on first use)."""
    @numba.njit
    def probe(array):
        _hint(array, 1)
        return array[0]

    try:
        return probe(np.ones(2, np.float32)) == 1.0
    except Exception:  # any compile failure of the intrinsic: fall back to no hint  # noqa: BLE001
        return False


def prefetch(array, index) -> None:
    """Hint that ``array[index]`` will be read soon (numba kernels only; a no-op in Python)."""


@overload(prefetch, inline="always")
def _prefetch(array, index):
    # Runs when a kernel that calls prefetch is compiled: it gets the hint, or the no-op where the
    # intrinsic does not compile.
    if works():
        def hint(array, index):
            _llvm_prefetch(array, index)
        return hint

    def no_hint(array, index):
        pass
    return no_hint
