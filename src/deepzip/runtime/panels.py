"""Codebook GEMM on panels of 16 outputs: a 4-bit weight-shared Linear layer run from its codes at
register speed, for one input row or a small batch (a transformer's tokens).

A layer with one codebook of at most 16 values keeps every weight as a 4-bit code. The codes are stored
in panels: 16 consecutive outputs, and per step along the input the codes of those 16 outputs side by
side, two a byte. The kernel (LLVM IR, compiled for this CPU by `runtime.jit`) holds the codebook in one
vector register and turns a step's codes into 16 weights with one table lookup in registers, then
multiplies them into the accumulators of up to `MAX_BLOCK` input rows at once (the classic GEMM
micro-kernel, with the weight panel decoded on the fly instead of loaded as fp32): each decoded weight
feeds every row of the block, and the codes are 8x fewer bytes than fp32 weights. Two precisions:

- ``fp32``: the codebook as fp32 (``vpermps``), fp32 multiply-adds; results equal a dense fp32 matmul
  of the same weights within fp32 reassociation. Needs AVX-512F.
- ``int8``: the codebook rounded to int8 with one scale per layer (``vpshufb`` looks up 64 codes at
  once), each input row quantized to int8 with its own scale (as dynamic int8 quantization does), int32
  sums. On a CPU with AMX (and the OS granting it) the looked-up weights are written as AMX B tiles and
  ``tdpbusd`` multiplies 16 rows x 16 outputs x 64 inputs an instruction (`panel_ir.amx_kernel_ir`); else
  ``vpdpbusd`` dot products of four weights a lane (needs AVX-512 VNNI). At 17 rows 3-4x the fp32
  kernel's speed (AMX), ~2x (VNNI); the rounding is int8 dynamic quantization's (reported, not hidden).

Layout, ``fp32``: panel p, step k: 8 bytes, byte b holding output 16p+b's code (low nibble) and output
16p+b+8's (high nibble). ``int8``: a step is 4 inputs, 64 lanes (lane 4n+t: output 16p+n, input 4k+t; 16
steps are one AMX B tile), 32 bytes, byte b holding lane b (low) and lane b+32 (high). Outputs pad to a
multiple of 16 (int8: of 32, the AMX kernel's two panels), inputs to a multiple of 64 (int8), with code 0;
padded outputs are never stored, padded inputs meet zero inputs.
"""

from __future__ import annotations

import ctypes
import functools

import numba
import numpy as np
import torch

from . import jit
from .panel_ir import PANEL, STEP, amx_kernel_ir, amx_kernel_name, kernel_ir, kernel_name

MAX_BLOCK = 24  # input rows a kernel call multiplies at once: 24 accumulator registers of AVX-512's 32
PRECISIONS = ("fp32", "int8")
NEEDS = {"fp32": ("avx512f",), "int8": ("avx512f", "avx512bw", "avx512vnni")}
STEPS_MULTIPLE = {"fp32": 1, "int8": 16}  # int8 steps pad to whole AMX chunks of 64 inputs
PANEL_MULTIPLE = {"fp32": 1, "int8": 2}  # the AMX kernel runs two panels at a time
AMX_ROWS = 32  # input rows an AMX kernel call takes: two tiles of 16
INT8_MAX = 127
INT8_MAX_WIDTH = (2**31 - 1) // (255 * INT8_MAX)  # inputs an int32 sum of uint8 x int8 products holds (66,311)


def available(precision: str = "fp32") -> bool:
    """Whether this CPU runs the panel kernels at ``precision``."""
    return jit.has(*NEEDS[precision])


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "fp32" and not available(precision):
        raise ValueError(f"precision={precision!r} needs a CPU with {', '.join(NEEDS[precision])} (this one lacks "
                         f"{', '.join(sorted(set(NEEDS[precision]) - jit.host_features()))}); use precision='fp32'")


def eligible(codebook: torch.Tensor | None, has_outliers: bool, pruned: bool) -> bool:
    """One codebook of at most 16 values (15 when pruned weights need their own +0.0 code), no outliers."""
    if codebook is None or has_outliers or codebook.dim() != 1:
        return False
    return codebook.shape[0] + int(pruned) <= 16


def precision_for(width: int, precision: str) -> str:
    """The precision a layer of ``width`` inputs runs at: int8 only while its int32 sums cannot overflow."""
    return "fp32" if precision == "int8" and width > INT8_MAX_WIDTH else precision


# ---------------------------------------------------------------------------------------------- kernels
# (their IR: `runtime.panel_ir`)

@numba.njit(cache=True, nogil=True)
def _finish_int8(sums, scales, correction, bias, out):
    """out[r, c] = scales[r] * (sums[r, c] - correction[c]) + bias[c] (bias may be empty), for the
    columns of ``out`` (sums may be wider: padded panels)."""
    rows, width = out.shape
    has_bias = len(bias) > 0
    for r in range(rows):
        scale = scales[r]
        for c in range(width):
            value = scale * (np.float32(sums[r, c]) - correction[c])
            out[r, c] = value + bias[c] if has_bias else value


@functools.cache
def amx_kernel(tiles: int):
    """The compiled AMX kernel for 1 or 2 row tiles (see `amx_kernel_ir`), compiled on first use. Tile
    instructions fault (SIGILL) in a process the OS has not granted them to: asked for here first."""
    if not amx_available():
        raise RuntimeError("AMX tiles are not available to this process (CPU or OS); use the VNNI int8 kernels")
    return jit.compile_function(amx_kernel_name(tiles), amx_kernel_ir(tiles), None,
                                [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_void_p] + [ctypes.c_int64] * 2)


def amx_available() -> bool:
    """Whether int8 runs on AMX tiles here: the CPU has them and the OS grants them to this process."""
    return available("int8") and jit.amx_permitted()


# For the threaded drivers, the same kernels typed with integer addresses (numba passes no void pointers)
_WORDS = [ctypes.c_uint64] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_uint64] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_uint64] * 2
_AMX_WORDS = [ctypes.c_uint64] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_uint64] + [ctypes.c_int64] * 2


def _as_words(function, words: list):
    """``function`` (a compiled kernel) as a ctypes function of integer arguments, for numba to call."""
    return _typed(ctypes.cast(function, ctypes.c_void_p).value, tuple(words))


@functools.cache
def _typed(address: int, words: tuple):
    return ctypes.CFUNCTYPE(None, *words)(address)


# Threads split a layer's panels (each writes its own output columns): numba's prange on its OpenMP layer,
# torch's pool (`threads`), calling the compiled kernel through its address. One compile per signature.
@numba.njit(cache=True, nogil=True, parallel=True)
def _drive(fn, codes, lut, xt, ldx, steps, bounds, bias, out, ldo, nvalid, scale, correction):
    for t in numba.prange(len(bounds) - 1):
        fn(codes, lut, xt, ldx, steps, bounds[t], bounds[t + 1], bias, out, ldo, nvalid, scale, correction)


@numba.njit(cache=True, nogil=True, parallel=True)
def _drive_amx(fn, codes, lut, xq, ldx, steps, bounds, sums, ldsums, rows):
    for t in numba.prange(len(bounds) - 1):
        fn(codes, lut, xq, ldx, steps, bounds[t], bounds[t + 1], sums, ldsums, rows)


def panel_bounds(panels_count: int, parts: int, multiple: int) -> np.ndarray:
    """Panel boundaries splitting ``panels_count`` into ``parts`` near-equal runs, multiples of ``multiple``."""
    bounds = (np.linspace(0, panels_count / multiple, parts + 1).round() * multiple).astype(np.int64)
    bounds[-1] = panels_count
    return bounds


_ARGS = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] * 2


@functools.cache  # the IR text is only built on a kernel's first use
def kernel(precision: str, rows: int):
    """The compiled kernel for ``rows`` input rows (see `kernel_ir`), compiled on first use."""
    return jit.compile_function(kernel_name(precision, rows), kernel_ir(precision, rows), None, _ARGS)


# ---------------------------------------------------------------------------------------------- layout


def pack(index: np.ndarray, precision: str) -> np.ndarray:
    """Codes (rows, width) < 16 in panel layout: (panels, steps, bytes a step) uint8 (module docstring)."""
    step, multiple = STEP[precision], STEPS_MULTIPLE[precision]
    rows, width = index.shape
    panels, steps = -(-rows // PANEL), -(-width // (step * multiple)) * multiple
    panels += panels % PANEL_MULTIPLE[precision]
    padded = np.zeros((panels * PANEL, steps * step), np.uint8)
    padded[:rows, :width] = index
    lanes = padded.reshape(panels, PANEL, steps, step).transpose(0, 2, 1, 3).reshape(panels, steps, PANEL * step)
    half = PANEL * step // 2
    return np.ascontiguousarray(lanes[:, :, :half] | (lanes[:, :, half:] << 4))


def unpack(codes: np.ndarray, precision: str, shape: tuple[int, int]) -> np.ndarray:
    """The inverse of `pack`: codes (rows, width) uint8."""
    step = STEP[precision]
    panels, steps, _ = codes.shape
    lanes = np.concatenate([codes & 15, codes >> 4], axis=2)
    index = lanes.reshape(panels, steps, PANEL, step).transpose(0, 2, 1, 3).reshape(panels * PANEL, steps * step)
    return np.ascontiguousarray(index[: shape[0], : shape[1]])


def int8_table(table: np.ndarray) -> tuple[np.ndarray, float]:
    """(the codebook as int8 levels, scale): table ~= scale * levels, levels in [-127, 127]."""
    peak = float(np.abs(table).max()) if len(table) else 0.0
    scale = peak / INT8_MAX if peak > 0 else 1.0
    return np.clip(np.rint(table / scale), -INT8_MAX, INT8_MAX).astype(np.int8), scale


@numba.njit(cache=True, nogil=True)
def _row_peaks(bits, peaks):
    """max |x| of each row, from x's float32 bits as int32: with the sign bit cleared, the bits of
    non-negative floats order as the floats do, and an integer max vectorizes (a float max does not)."""
    for r in range(bits.shape[0]):
        peak = np.int32(0)
        for j in range(bits.shape[1]):
            peak = max(peak, bits[r, j] & np.int32(0x7FFFFFFF))
        peaks[r] = peak


@numba.njit(cache=True, nogil=True, fastmath=True)
def _quantize_rows(x, peaks, q, scales, weight_scale):
    """Each row of x (rows, width) as int8 with its own scale (its peak |x| / 127), plus 128 (uint8),
    into q (rows, padded width; the padding stays zero-valued: 128); scales[r] = the row's scale times
    the weight scale. Inputs must be finite (as for any int8 quantization)."""
    rows, width = x.shape
    for r in range(rows):
        scale = peaks[r] / np.float32(INT8_MAX) if peaks[r] > 0 else np.float32(1.0)
        inverse = np.float32(1.0) / scale
        scales[r] = scale * weight_scale
        for j in range(width):  # x * inverse + 128 in [1, 255]: + 0.5 and truncation round it
            q[r, j] = np.uint8(np.int32(x[r, j] * inverse + np.float32(128.5)))
        for j in range(width, q.shape[1]):
            q[r, j] = np.uint8(128)


def quantize_rows(x: np.ndarray, padded_width: int, weight_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(q, scales): x's rows as uint8 (int8 + 128) with per-row scales (`_quantize_rows`)."""
    peaks = np.empty(x.shape[0], np.int32)
    _row_peaks(x.view(np.int32), peaks)
    quantized = np.empty((x.shape[0], padded_width), np.uint8)
    scales = np.empty(x.shape[0], np.float32)
    _quantize_rows(x, peaks.view(np.float32), quantized, scales, np.float32(weight_scale))
    return quantized, scales


@functools.cache
def blocks(rows: int, most: int = MAX_BLOCK) -> tuple[tuple[int, int], ...]:
    """Input rows split into near-equal blocks of at most ``most`` (24: 17 -> one block; 32 -> 16 + 16)."""
    count = -(-rows // most)
    bounds = [round(i * rows / count) for i in range(count + 1)]
    return tuple((bounds[i], bounds[i + 1]) for i in range(count))


class PanelMatrix(jit.AddressedMatrix):
    """A dense weight of 4-bit codes in panel layout and the multiplies that use it (module docstring).
    The same interface as `codes.CodedMatrix` (``matvec``, ``matmul``, ``nbytes``, ``to_dense``)."""

    bits = 4
    per_row = 0
    layout = "panels"

    def __init__(self, shape, index: np.ndarray, table: np.ndarray, precision: str = "fp32"):
        check_precision(precision)
        if len(table) > 16 or (index.size and int(index.max()) >= len(table)):
            raise ValueError(f"panel codes hold at most 16 values, and every index must be < {len(table)}")
        self.shape = tuple(shape)
        self.precision = precision
        self.nnz = self.shape[0] * self.shape[1]
        self.codes = pack(index, precision)
        self.steps = self.codes.shape[1]
        self.table = np.zeros(16, np.float32)
        self.table[: len(table)] = table
        if precision == "int8":
            levels, self.weight_scale = int8_table(self.table)
            self.lut = np.tile(levels, 4)  # vpshufb looks up within each 128-bit lane
            weights = levels[unpack(self.codes, precision, (self.codes.shape[0] * PANEL, self.steps * 4))]
            self.correction = (128.0 * weights.sum(axis=1, dtype=np.int64)).astype(np.float32)
        else:
            self.lut, self.weight_scale, self.correction = self.table, 1.0, np.zeros(0, np.float32)
        self._thread_bounds: dict[int, np.ndarray] = {}
        self._cache_addresses()

    def _cache_addresses(self) -> None:
        """Addresses read on every call (numpy's ``.ctypes`` costs ~1 us each), valid while self holds
        the arrays; a copy (deepcopy, pickle) takes them anew (`__setstate__`), never the original's."""
        self._codes_at, self._lut_at = self.codes.ctypes.data, self.lut.ctypes.data
        self._correction_at = self.correction.ctypes.data if self.precision == "int8" else None

    @classmethod
    def from_index(cls, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None,
                   precision: str = "fp32") -> "PanelMatrix":
        """From a layer's sharing state (one codebook [k]); pruned weights get an extra code of value +0.0."""
        rows = index.shape[0]
        table = codebook.detach().float().reshape(-1).numpy()
        idx = index.reshape(rows, -1).numpy().astype(np.int64)
        if mask is not None and not bool(mask.all()):
            table = np.append(table, np.float32(0.0))
            idx = np.where(mask.reshape(rows, -1).numpy(), idx, len(table) - 1)
        return cls((rows, idx.shape[1]), idx.astype(np.uint8), table, precision)

    def nbytes(self) -> int:
        return self.codes.nbytes + self.lut.nbytes + self.correction.nbytes

    def index(self) -> np.ndarray:
        """The codes as (rows, width) uint8 indices into `table`."""
        return unpack(self.codes, self.precision, self.shape)

    def to_dense(self) -> torch.Tensor:
        """The weight the kernels multiply by (int8: the codebook as its int8 levels times their scale)."""
        table = self.table if self.precision == "fp32" else self.lut[:16].astype(np.float32) * self.weight_scale
        return torch.from_numpy(np.ascontiguousarray(table[self.index()], dtype=np.float32))

    def _run(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
        rows = x.shape[0]
        scale_at = None
        if self.precision == "int8" and amx_available():
            self._run_amx(x, bias, out)
            return
        if self.precision == "int8":
            quantized, scales = quantize_rows(x, self.steps * 4, self.weight_scale)
            xt = quantized.view(np.uint32)  # a row's four inputs of a step as one word
            xt = xt if rows == 1 else np.ascontiguousarray(xt.T)  # step-major: (steps, rows)
            scale_at = scales.ctypes.data
        else:
            xt = x if rows == 1 else np.ascontiguousarray(x.T)  # step-major: (in, rows)
        bias_at = bias.ctypes.data if len(bias) else None
        xt_at, out_at, width = xt.ctypes.data, out.ctypes.data, out.shape[1]
        bounds = self._bounds()
        for start, stop in blocks(rows):
            function = kernel(self.precision, stop - start)
            at = (xt_at + 4 * start, rows, self.steps)
            rest = (out_at + 4 * start * width, width, self.shape[0], None if scale_at is None else scale_at + 4 * start,
                    self._correction_at)
            if bounds is None:
                function(self._codes_at, self._lut_at, *at, 0, self.codes.shape[0], bias_at, *rest)
            else:  # numba takes no None: null addresses are 0
                _drive(_as_words(function, _WORDS), self._codes_at, self._lut_at, *at, bounds, bias_at or 0,
                       *(value or 0 for value in rest))

    def _split(self, threads: int) -> np.ndarray:
        """Panel boundaries, one run a thread (`jit.AddressedMatrix._bounds`)."""
        return panel_bounds(self.codes.shape[0], threads, PANEL_MULTIPLE[self.precision])

    def _run_amx(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
        """int8 on AMX tiles: the quantized rows as they are (no transpose), up to 32 rows a call, into
        int32 sums, then scaled in one vectorized pass."""
        rows = x.shape[0]
        quantized, scales = quantize_rows(x, self.steps * 4, self.weight_scale)
        panels_count = self.codes.shape[0]
        sums = np.empty((rows, panels_count * PANEL), np.int32)
        ldx, ldsums = quantized.shape[1], sums.shape[1] * 4
        xq_at, sums_at = quantized.ctypes.data, sums.ctypes.data
        bounds = self._bounds()
        for start, stop in blocks(rows, AMX_ROWS):
            function = amx_kernel(1 if stop - start <= 16 else 2)
            at = (xq_at + start * ldx, ldx, self.steps)
            if bounds is None:
                function(self._codes_at, self._lut_at, *at, 0, panels_count, sums_at + start * ldsums, ldsums,
                         stop - start)
            else:
                _drive_amx(_as_words(function, _AMX_WORDS), self._codes_at, self._lut_at, *at, bounds,
                           sums_at + start * ldsums, ldsums, stop - start)
        _finish_int8(sums, scales, self.correction, bias, out)
