"""A small LLVM JIT for the host CPU: kernels written as LLVM IR text, compiled once per process.

numba compiles Python loops well, but some instructions a kernel needs have no Python spelling: a
16-entry table lookup held in a register (``vpermps`` / ``vpshufb``), or the int8 dot product
(``vpdpbusd``). LLVM's x86 intrinsics reach them; llvmlite (already here under numba) compiles the IR
for this machine's CPU and features. A function is compiled on first use and kept for the process
(never at import); the CPU's features decide which kernels exist (`has`).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import llvmlite.binding as llvm
import numpy as np

from .kernels import PARALLEL_MIN_NNZ
from .threads import kernel_threads

_compiled: dict[str, tuple] = {}  # name -> (ctypes function, module, engine): the engine owns the code
_compiling = threading.Lock()
_FLOAT32 = np.dtype(np.float32)  # numpy's built-in dtypes are singletons: an identity test suffices


@functools.cache
def _target_machine():
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, codemodel="jitdefault")


@functools.cache
def host_features() -> frozenset[str]:
    """The host CPU's features as LLVM names them (``avx512f``, ``avx512vnni``, ...)."""
    try:
        flags = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot read them on this platform: no JIT kernels
        return frozenset()
    return frozenset(name for name, on in flags.items() if on)


def has(*features: str) -> bool:
    """Whether the host CPU has every one of ``features`` (LLVM's names)."""
    return set(features) <= host_features()


@functools.cache
def amx_permitted() -> bool:
    """Whether this process may use AMX tiles: Linux grants the tile data state only on request
    (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; once per process, as oneDNN does too)."""
    if not has("amx-tile", "amx-int8"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):  # not Linux, or no syscall(): no tiles
        return False


_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18  # x86-64 Linux


def compile_function(name: str, ir: str, restype, argtypes: list) -> ctypes._CFuncPtr:
    """The function ``name`` of the LLVM IR module ``ir``, compiled for this CPU (once per process and name).

    Under a lock: llvmlite releases the GIL while compiling, and two threads compiling one name would each
    store an engine, the second dropping (and freeing the code of) the first while its caller still holds
    the function (found by review: a segfault with two threads on a new token count)."""
    found = _compiled.get(name)
    if found is not None:
        return found[0]
    with _compiling:
        return _compile_locked(name, ir, restype, argtypes)


def _compile_locked(name: str, ir: str, restype, argtypes: list) -> ctypes._CFuncPtr:
    found = _compiled.get(name)  # another thread may have compiled it while this one waited
    if found is None:
        module, machine = _optimized(ir)
        engine = llvm.create_mcjit_compiler(module, machine)
        engine.finalize_object()
        function = ctypes.CFUNCTYPE(restype, *argtypes)(engine.get_function_address(name))
        found = _compiled[name] = (function, module, engine)
    return found[0]


def assembly(ir: str) -> str:
    """The machine code LLVM makes of ``ir`` for this CPU (for tests and for reading what a kernel became)."""
    module, machine = _optimized(ir)
    return machine.emit_assembly(module)


def _optimized(ir: str):
    """(the module of ``ir``, verified and optimized at -O3 for this CPU, the target machine)."""
    module = llvm.parse_assembly(ir)
    module.verify()
    machine = _target_machine()
    passes = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    passes.getModulePassManager().run(module, passes)
    return module, machine


class AddressedMatrix:
    """A weight matrix whose compiled kernels take its arrays by address (`PanelMatrix`, `RowTableMatrix`).

    Subclasses set ``shape``, ``nnz`` and ``_thread_bounds`` (a dict) and define `_cache_addresses` (the
    addresses read on every call: numpy's ``.ctypes`` costs ~1 us each), ``_run(x, bias, out)`` and
    ``_split(threads)`` (the boundaries of the runs the threads take). The addresses are valid while the
    matrix holds its arrays, so they never travel: a copy (deepcopy, pickle) takes its own anew."""

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.endswith("_at")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache_addresses()

    def matvec(self, x, bias, out=None):
        """W @ x + bias for one float32 vector (``bias``: float32, the outputs long, or empty for none)."""
        self._check(x, bias, 1)
        out = np.empty(self.shape[0], dtype=np.float32) if out is None else out
        self._run(x.reshape(1, -1), bias, out.reshape(1, -1))
        return out

    def matmul(self, x, bias):
        """x @ W.T + bias for x (batch, in) float32 C-contiguous: (batch, out)."""
        self._check(x, bias, 2)
        out = np.empty((x.shape[0], self.shape[0]), dtype=np.float32)
        self._run(x, bias, out)
        return out

    def _bounds(self) -> np.ndarray | None:
        """`_split`'s boundaries, one run a thread, where the layer is large enough for threads; else None."""
        threads = kernel_threads() if self.nnz >= PARALLEL_MIN_NNZ else 1
        if threads <= 1:
            return None
        found = self._thread_bounds.get(threads)
        if found is None:
            found = self._thread_bounds[threads] = self._split(threads)
        return found

    def _check(self, x, bias, ndim: int) -> None:
        """The kernels read raw memory: a wrong dtype, width or bias length would be read as if right.
        (Identity tests on the dtype and one flags read: ~0.3 us a call, where a 384x384 matvec takes ~25 us.)"""
        if x.dtype is not _FLOAT32 or bias.dtype is not _FLOAT32 or not x.flags.c_contiguous:
            raise TypeError(f"x and bias must be float32 and x C-contiguous, got {x.dtype} / {bias.dtype}")
        if x.ndim != ndim or x.shape[-1] != self.shape[1] or bias.shape not in ((0,), (self.shape[0],)):
            raise ValueError(f"a {self.shape[0]}x{self.shape[1]} matrix takes x of {ndim} dimensions, "
                             f"{self.shape[1]} wide, and a bias of {self.shape[0]} or none; got x {tuple(x.shape)}, "
                             f"bias {tuple(bias.shape)}")
