"""4-bit codes with a table per output row: the pretrained pipeline's layer format (`WeightedKMeans`, a
codebook of at most 16 values per row, plus exact outliers) run from its codes at register speed.

The panel kernels (`runtime.panels`) hold one table for 16 outputs, so they cannot take a table per row.
Here the kernel walks one output row at a time: the row's own 16 fp32 values sit in one vector register,
``vpermps`` turns the codes of 16 consecutive inputs into their 16 weights, and one FMA per input row
(token) multiplies them with that token's 16 inputs into its accumulator; at the end of the row the
accumulators of up to `MAX_BLOCK` tokens are summed across their lanes together (a transpose-add tree,
`row_ir.reduce_lines`). The decode (2 instructions a block) is shared by every token of the block, and the
codes are 1/8 of fp32's bytes. Results equal a dense fp32 matmul of the same weights within reassociation.
Needs AVX-512F. One table for all rows is served too (broadcast), but `PanelMatrix` is faster there.

Layout: row r, pair of blocks p (inputs 32p..32p+31): 16 bytes, byte j holding input 32p+j's code (low
nibble) and input 32p+16+j's (high nibble): one load and a widening give the first block's indices (vpermps
reads an index's low 4 bits), a shift the second's. The width pads to a multiple of 64 with code 0; each
call copies its input rows block-major (block k's 16 inputs of every token side by side, zero-padded), so
padded inputs meet zeros and every FMA's memory operand is one pointer plus a constant.

Exact outliers (a dense-and-sparse split) are a CSR correction (`layers.SparseMatrix`, int32 columns): at
each outlier position the exact value minus the table's value there. The kernel adds a row's entries into
its token accumulators before the reduction: per entry, the value in its column's lane of a vector times
the inputs' block, one FMA a token (0.5% outliers: ~2 entries a 384-wide row against its 24 blocks).
Added after the kernel by the CSR kernels instead, they cost more than the codes' product itself at 17
tokens (the input transposed and the output added through a transpose). A pruned weight gets an extra
code of value +0.0, so a row table holds at most 15 values then.

``precision="int8"`` (`row_ir.int8_kernel_ir`; AVX-512 BW + VNNI): each row's table rounded to int8 with
the row's own scale (peak |value| / 127), each input row quantized to int8 with its own (as the int8 panels
and dynamic int8 quantization do, +128 as uint8). One register holds the row's 16 levels in each 128-bit
lane; ``vpshufb`` turns 32 code bytes into the weights of 64 consecutive inputs, one ``vpdpbusd`` a token
multiplies them with its 64 uint8 inputs (one 64-byte load, chunk-major like the fp32 kernel's blocks) into
its int32 accumulator; the same transpose-add tree on i32, then the scaling. Exact outliers stay fp32: a
CSR of (exact - the dequantized code) added to the row's scaled outputs before the store, each entry one
vector of its column's inputs for all tokens (the inputs transposed once a call).
"""

from __future__ import annotations

import ctypes
import functools
import threading

import numba
import numpy as np
import torch

from . import jit
from .layers import SparseMatrix
from .panels import INT8_MAX, INT8_MAX_WIDTH, MAX_BLOCK, NEEDS as PANEL_NEEDS, _row_peaks, blocks, check_precision
from .row_ir import (BLOCK_BYTES, BLOCK_MULTIPLE, CHUNK, CHUNK_BYTES, LANES, PAIR, int8_kernel_ir, int8_kernel_name,
                     kernel_ir, kernel_name)
from ..quantize.sharing import shared_weight

TABLE = 16  # values a 4-bit table holds
NEEDS = ("avx512f",)
INT8_NEEDS = PANEL_NEEDS["int8"]  # vpshufb (BW) and vpdpbusd (VNNI), as the int8 panels
# Every output row reads all of a call's inputs again: they must stay in the L1 data cache (48 KB here), or
# the kernel waits on L2 (384x1536 at 17 tokens: 104 KB of inputs, ~1.25x slower). Wide layers run in runs
# of blocks whose inputs fit this budget, each run's sums added to the output.
RUN_BYTES = 40 << 10


def available(precision: str = "fp32") -> bool:
    """Whether this CPU runs the row-table kernel at ``precision``."""
    return jit.has(*(INT8_NEEDS if precision == "int8" else NEEDS))


def eligible(codebook: torch.Tensor | None, pruned: bool) -> bool:
    """A codebook ([k] or per-row [rows, k]) of at most 16 values (15 when pruned weights need their own
    +0.0 code); exact outliers are allowed (a CSR correction)."""
    if codebook is None or codebook.dim() not in (1, 2):
        return False
    return codebook.shape[-1] + int(pruned) <= TABLE


# The kernel typed with integer addresses, for numba to call (numba passes no void pointers):
# codes, cstride, tables, tstride, xb, blocks, r0, r1, bias, out, ldo, accumulate, oindptr, ocols, ovalues, kbase
_WORDS = (ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint64) + (ctypes.c_int64,) * 3 \
    + (ctypes.c_uint64,) * 2 + (ctypes.c_int64,) * 2 + (ctypes.c_uint64,) * 3 + (ctypes.c_int64,)


@functools.cache  # the IR text is only built on a kernel's first use
def kernel(tokens: int):
    """The compiled kernel for ``tokens`` input rows (see `row_ir.kernel_ir`), compiled on first use."""
    return jit.compile_function(kernel_name(tokens), kernel_ir(tokens), None, list(_WORDS))


@numba.njit(cache=True, nogil=True)
def _runs(fn, codes, cstride, tables, tstride, xb, tokens, runs, r0, r1, bias, out, ldo, outliers):
    """Rows r0..r1-1 over each run of blocks (``runs``: block boundaries), the first run storing its sums
    plus the bias, the later ones adding theirs; ``outliers``: the addresses of the CSR correction."""
    for i in range(len(runs) - 1):
        k0, k1 = runs[i], runs[i + 1]
        fn(codes + np.uint64(BLOCK_BYTES * k0), cstride, tables, tstride, xb + np.uint64(4 * LANES * tokens * k0),
           k1 - k0, r0, r1, bias if i == 0 else 0, out, ldo, i, outliers[0], outliers[1], outliers[2], k0)


# Threads split a layer's rows (each writes its own output columns): numba's prange on its OpenMP layer,
# torch's pool (`threads`), calling the compiled kernel through its address, as `panels._drive`.
@numba.njit(cache=True, nogil=True, parallel=True)
def _drive(fn, codes, cstride, tables, tstride, xb, tokens, runs, bounds, bias, out, ldo, outliers):
    for t in numba.prange(len(bounds) - 1):
        _runs(fn, codes, cstride, tables, tstride, xb, tokens, runs, bounds[t], bounds[t + 1], bias, out, ldo,
              outliers)


# The int8 kernel, typed with integer addresses as the fp32 one: codes, cstride, luts, lstride, xq, chunks,
# r0, r1, correction, wscale, xscale, bias, out, ldo, oindptr, ocols, ovalues, xt
_INT8_WORDS = (ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int64, ctypes.c_uint64) \
    + (ctypes.c_int64,) * 3 + (ctypes.c_uint64,) * 5 + (ctypes.c_int64,) + (ctypes.c_uint64,) * 4


@functools.cache
def int8_kernel(tokens: int):
    """The compiled int8 kernel for ``tokens`` input rows (see `row_ir.int8_kernel_ir`), compiled on first use."""
    return jit.compile_function(int8_kernel_name(tokens), int8_kernel_ir(tokens), None, list(_INT8_WORDS))


@numba.njit(cache=True, nogil=True, parallel=True)
def _drive_int8(fn, codes, cstride, luts, lstride, xq, chunks, bounds, correction, wscale, xscale, bias, out, ldo,
                outliers, xt):
    for t in numba.prange(len(bounds) - 1):
        fn(codes, cstride, luts, lstride, xq, chunks, bounds[t], bounds[t + 1], correction, wscale, xscale, bias,
           out, ldo, outliers[0], outliers[1], outliers[2], xt)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _quantize_chunk_major(x, start, stop, chunks, peaks, q, scales):
    """Rows start..stop-1 of x as int8 + 128 (uint8) with each row's own scale (its peak |x| / 127, into
    scales[row]), into q (flat, read as (chunks, stop - start, 64)): chunk c's 64 inputs of each row side by
    side, inputs past the width 128 (zero). The rounding of `panels.quantize_rows`, so tests share it."""
    width, tokens = x.shape[1], stop - start
    for t in range(tokens):
        r = start + t
        scale = peaks[r] / np.float32(INT8_MAX) if peaks[r] > 0 else np.float32(1.0)
        inverse = np.float32(1.0) / scale
        scales[r] = scale
        row = x[r]
        for c in range(chunks):
            first, at = c * CHUNK, (c * tokens + t) * CHUNK
            count = max(0, min(CHUNK, width - first))
            for j in range(count):  # x * inverse + 128 in [1, 255]: + 0.5 and truncation round it
                q[at + j] = np.uint8(np.int32(row[first + j] * inverse + np.float32(128.5)))
            for j in range(count, CHUNK):
                q[at + j] = np.uint8(128)


@numba.njit(cache=True, nogil=True)
def _block_major(x, start, stop, nblocks, xb):
    """xb (flat, read as (nblocks, stop - start, 16)) = rows start..stop-1 of x (rows, width), block k's 16
    inputs of each row side by side; inputs past the width are zero."""
    width, tokens = x.shape[1], stop - start
    for k in range(nblocks):
        first = k * LANES
        count = max(0, min(LANES, width - first))
        for t in range(tokens):
            row = x[start + t]
            at = (k * tokens + t) * LANES
            for j in range(count):
                xb[at + j] = row[first + j]
            for j in range(count, LANES):
                xb[at + j] = np.float32(0.0)


def pack(index: np.ndarray) -> np.ndarray:
    """Codes (rows, width) < 16 as (rows, blocks * 8) uint8 (module docstring)."""
    rows, width = index.shape
    nblocks = -(-width // (LANES * BLOCK_MULTIPLE)) * BLOCK_MULTIPLE
    padded = np.zeros((rows, nblocks * LANES), np.uint8)
    padded[:, :width] = index
    pairs = padded.reshape(rows, nblocks // PAIR, PAIR * LANES)
    return np.ascontiguousarray((pairs[:, :, :LANES] | (pairs[:, :, LANES:] << 4)).reshape(rows, -1))


def pack_int8(index: np.ndarray) -> np.ndarray:
    """Codes (rows, width) < 16 as (rows, chunks * 32) uint8 for the int8 kernel: chunk c (inputs 64c..64c+63),
    byte j holding input 64c+j's code (low nibble) and 64c+32+j's (high); the width pads to a multiple of 64
    with code 0 (its weights meet inputs of 128, zero once the correction, which counts them, is taken off)."""
    rows, width = index.shape
    chunks = -(-width // CHUNK)
    padded = np.zeros((rows, chunks * CHUNK), np.uint8)
    padded[:, :width] = index
    halves = padded.reshape(rows, chunks, CHUNK)
    return np.ascontiguousarray((halves[:, :, :CHUNK_BYTES] | (halves[:, :, CHUNK_BYTES:] << 4)).reshape(rows, -1))


def unpack_int8(codes: np.ndarray, width: int | None = None) -> np.ndarray:
    """The inverse of `pack_int8`: codes (rows, width) uint8 (all padded inputs where ``width`` is None)."""
    rows = codes.shape[0]
    both = codes.reshape(rows, -1, CHUNK_BYTES)
    lanes = np.concatenate([both & 15, both >> 4], axis=2).reshape(rows, -1)
    return np.ascontiguousarray(lanes if width is None else lanes[:, :width])


def int8_tables(tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(levels (rows, 16) int8, scales (rows,) float32): each row's table ~= its scale times its levels in
    [-127, 127], the scale its peak |value| / 127 (1 for an all-zero table)."""
    peaks = np.abs(tables).max(axis=1)
    scales = np.where(peaks > 0, peaks / INT8_MAX, 1.0).astype(np.float32)
    levels = np.clip(np.rint(tables / scales[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return levels, scales


def unpack(codes: np.ndarray, width: int) -> np.ndarray:
    """The inverse of `pack`: codes (rows, width) uint8."""
    rows = codes.shape[0]
    both = codes.reshape(rows, -1, LANES)
    lanes = np.concatenate([both & 15, both >> 4], axis=2)
    return np.ascontiguousarray(lanes.reshape(rows, -1)[:, :width])


def row_bounds(rows: int, parts: int) -> np.ndarray:
    """Row boundaries splitting ``rows`` into ``parts`` near-equal runs."""
    return np.linspace(0, rows, parts + 1).round().astype(np.int64)


def block_runs(nblocks: int, tokens: int) -> np.ndarray:
    """Block boundaries splitting ``nblocks`` (a multiple of BLOCK_MULTIPLE) into near-equal runs whose
    inputs for ``tokens`` rows fit `RUN_BYTES`, each a multiple of BLOCK_MULTIPLE."""
    most = max(1, RUN_BYTES // (4 * LANES * tokens * BLOCK_MULTIPLE))  # in units of BLOCK_MULTIPLE blocks
    units = nblocks // BLOCK_MULTIPLE
    count = max(1, -(-units // most))
    return (np.linspace(0, units, count + 1).round() * BLOCK_MULTIPLE).astype(np.int64)


class RowTableMatrix(jit.AddressedMatrix):
    """A dense weight of 4-bit codes with a 16-entry table per row, plus an optional CSR correction for
    exact outliers (module docstring). The interface of `panels.PanelMatrix` (``matvec``, ``matmul``,
    ``nbytes``, ``to_dense``)."""

    bits = 4
    layout = "row tables"
    precision = "fp32"  # the instance's own since int8 (matrices pickled before it read this)

    def __init__(self, shape, index: np.ndarray, tables: np.ndarray, outliers: SparseMatrix | None = None,
                 precision: str = "fp32"):
        """``index`` (rows, width) codes, ``tables`` (rows, k) or (k,) fp32 with k <= 16, ``outliers``
        a CSR correction of the same shape (added to the codes' product) or None. ``precision`` int8: each
        row's table rounded to int8 with its own scale, the inputs quantized per row (`_run_int8`); the
        outliers' correction is then to the int8 table's value (exact minus the dequantized code)."""
        check_precision(precision)
        if precision == "int8" and shape[1] > INT8_MAX_WIDTH:
            raise ValueError(f"int8 row tables take at most {INT8_MAX_WIDTH} inputs (int32 sums), got {shape[1]}")
        tables = np.asarray(tables, np.float32)
        if tables.ndim not in (1, 2) or tables.shape[-1] > TABLE or (tables.ndim == 2 and len(tables) != shape[0]):
            raise ValueError(f"tables must be (k,) or ({shape[0]}, k) with k <= {TABLE}, got {tables.shape}")
        if index.size and int(index.max()) >= tables.shape[-1]:
            raise ValueError(f"every index must be < the table size {tables.shape[-1]}")
        if outliers is not None and (tuple(outliers.shape) != tuple(shape) or outliers.values is None):
            raise ValueError(f"outliers must be a CSR of fp32 values of the weight's shape {tuple(shape)}, got "
                             f"{outliers.shape}{' with codes' if outliers.values is None else ''}")
        if outliers is not None and outliers.cols.dtype != np.int32:  # the kernel reads int32 columns
            outliers = SparseMatrix(outliers.shape, outliers.indptr, outliers.cols.astype(np.int32), values=outliers.values)
        self.shape = tuple(shape)
        self.precision = precision
        self.nnz = self.shape[0] * self.shape[1]
        self.per_row = int(tables.ndim == 2)
        self.tables = np.zeros((tables.shape[0] if self.per_row else 1, TABLE), np.float32)
        self.tables[:, : tables.shape[-1]] = tables
        index = np.asarray(index, np.uint8)
        if precision == "int8":
            self._init_int8(index)
            outliers = self._int8_outliers(index, outliers)
        else:
            self.codes = pack(index)
            self.blocks = self.codes.shape[1] // BLOCK_BYTES
        self.outliers = outliers
        self._thread_bounds: dict[int, np.ndarray] = {}
        self._block_runs: dict[int, np.ndarray] = {}
        self._plans: dict[int, tuple] = {}
        self.cstride, self.tstride = self.codes.shape[1], TABLE if self.per_row else 0
        self._cache_addresses()

    def _init_int8(self, index: np.ndarray) -> None:
        """The int8 kernel's arrays: codes (`pack_int8`), each row's levels replicated in the four 128-bit
        lanes (``vpshufb`` looks up within a lane), the rows' scales and corrections (128 * the row's int8
        weights' sum over the padded width: the quantized inputs are q + 128, padded ones 128)."""
        levels, scales = int8_tables(self.tables)
        self.levels = levels
        self.luts = np.ascontiguousarray(np.tile(levels, (1, 4)))
        self.codes = pack_int8(index)
        self.chunks = self.codes.shape[1] // CHUNK_BYTES
        self.blocks = self.chunks  # nonzero where there are inputs (`_run`)
        weights = np.take_along_axis(np.broadcast_to(levels.astype(np.int64), (self.shape[0], TABLE)),
                                     unpack_int8(self.codes).astype(np.int64), axis=1)
        self.correction = (128 * weights.sum(axis=1)).astype(np.int32)
        self.weight_scales = np.ascontiguousarray(np.broadcast_to(scales, (self.shape[0],)), np.float32)
        self.lstride = CHUNK if self.per_row else 0

    def _int8_outliers(self, index: np.ndarray, outliers: SparseMatrix | None) -> SparseMatrix | None:
        """The outliers' correction to the int8 codes: (exact - fp32 code value) + (fp32 code value -
        dequantized int8 code value), so that codes plus correction is the exact weight again."""
        if outliers is None:
            return None
        rows = np.repeat(np.arange(self.shape[0]), np.diff(outliers.indptr))
        cols = outliers.cols.astype(np.int64)
        table_rows = rows if self.per_row else np.zeros_like(rows)
        codes = index[rows, cols].astype(np.int64)
        fp32 = self.tables[table_rows, codes].astype(np.float64)
        dequantized = self.weight_scales[rows].astype(np.float64) * self.levels[table_rows, codes]
        values = (outliers.values.astype(np.float64) + fp32 - dequantized).astype(np.float32)
        return SparseMatrix(outliers.shape, outliers.indptr, outliers.cols, values=values)

    def _cache_addresses(self) -> None:
        """Addresses read on every call (numpy's ``.ctypes`` costs ~1 us each), valid while self holds
        the arrays; a copy (deepcopy, pickle) takes them anew (`__setstate__`), never the original's."""
        self._codes_at, self._tables_at = self.codes.ctypes.data, self.tables.ctypes.data
        if self.precision == "int8":
            self._int8_at = (self.luts.ctypes.data, self.correction.ctypes.data, self.weight_scales.ctypes.data)
        if self.outliers is None:  # every row's entries empty: an all-zero row pointer, shared by layers
            self._outliers_at = np.array([_no_entries(self.shape[0]).ctypes.data, 0, 0], np.uint64)
        else:
            parts = (self.outliers.indptr, self.outliers.cols, self.outliers.values)
            self._outliers_at = np.array([part.ctypes.data for part in parts], np.uint64)
        self._outlier_words = tuple(int(word) for word in self._outliers_at)

    def __getstate__(self) -> dict:  # compiled kernels (in _plans) are this process's: planned anew
        state = super().__getstate__()
        state.pop("_outlier_words", None)
        return {**state, "_plans": {}}

    @classmethod
    def from_index(cls, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None,
                   outlier_mask: torch.Tensor | None = None, outliers: torch.Tensor | None = None,
                   precision: str = "fp32") -> "RowTableMatrix":
        """From a layer's sharing state: ``codebook`` [k] or [rows, k], ``index`` of the weight's shape,
        ``mask`` (pruned weights: an extra code of value +0.0) and the exact outliers (``outlier_mask``,
        their values in row-major order) or None; ``precision`` fp32 or int8 (`__init__`)."""
        rows = index.shape[0]
        tables = codebook.detach().float().cpu().numpy()
        idx = index.reshape(rows, -1).cpu().numpy().astype(np.int64)
        if tables.shape[-1] > TABLE:
            raise ValueError(f"row tables hold at most {TABLE} values, this layer's codebook has {tables.shape[-1]}")
        if mask is not None and not bool(mask.all()):
            if tables.shape[-1] == TABLE:
                raise ValueError(f"pruned weights need a +0.0 code: a codebook of at most {TABLE - 1} values")
            tables = np.concatenate([tables, np.zeros(tables.shape[:-1] + (1,), np.float32)], axis=-1)
            idx = np.where(mask.reshape(rows, -1).cpu().numpy(), idx, tables.shape[-1] - 1)
        correction = None
        if outlier_mask is not None:
            correction = _outlier_correction(codebook, index, mask, outlier_mask, outliers)
        return cls((rows, idx.shape[1]), idx.astype(np.uint8), tables, correction, precision)

    def nbytes(self) -> int:
        """The bytes a call reads: codes and tables (int8: the replicated levels, scales and corrections;
        the fp32 tables stay only for `to_dense` of the fp32 weight) plus the outliers."""
        outliers = 0 if self.outliers is None else self.outliers.nbytes()
        if self.precision == "int8":
            return self.codes.nbytes + self.luts.nbytes + self.correction.nbytes + self.weight_scales.nbytes + outliers
        return self.codes.nbytes + self.tables.nbytes + outliers

    def index(self) -> np.ndarray:
        """The codes as (rows, width) uint8 indices into the row tables."""
        if self.precision == "int8":
            return unpack_int8(self.codes, self.shape[1])
        return unpack(self.codes, self.shape[1])

    def row_tables(self) -> np.ndarray:
        """The values the kernel multiplies by, (rows or 1, 16): the fp32 tables, or int8's levels times
        each row's scale (one table for all rows: the first row's scale is every row's)."""
        if self.precision == "int8":
            return self.levels.astype(np.float32) * self.weight_scales[: len(self.levels), None]
        return self.tables

    def codes_dense(self) -> np.ndarray:
        """The weight the codes alone stand for (without the outliers' correction)."""
        index, tables = self.index(), self.row_tables()
        if self.per_row:
            return np.take_along_axis(tables, index.astype(np.int64), axis=1)
        return tables[0][index]

    def to_dense(self) -> torch.Tensor:
        """The weight the kernel multiplies by: the codes' values plus each outlier's correction (its exact
        value minus the code's, in fp32: within one rounding of the exact value, not always bit for bit)."""
        dense = self.codes_dense()
        if self.outliers is not None:
            dense = dense + self.outliers.to_dense().numpy()
        return torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))

    def _run(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
        # Python here costs per call what a 384x384 layer's kernel takes in ~10% of its time at 17 tokens:
        # addresses cached, no array views made (numpy's .ctypes and slicing cost ~1 us each)
        if self.blocks == 0:  # no inputs: the output is the bias
            out[...] = bias if len(bias) else 0.0
            return
        if self.precision == "int8":
            self._run_int8(x, bias, out)
            return
        rows, outputs, ldo = x.shape[0], self.shape[0], out.shape[1]
        bias_at = bias.ctypes.data if len(bias) else 0  # a null address: no bias
        out_at = out.ctypes.data
        bounds = self._bounds()
        buffer, buffer_at = _scratch(self.blocks * min(rows, MAX_BLOCK) * LANES)
        for start, stop in blocks(rows):
            tokens = stop - start
            _block_major(x, start, stop, self.blocks, buffer)
            function, runs = self._plan(tokens)
            at = out_at + 4 * start * ldo
            if bounds is None:  # straight through ctypes: numba's dispatch on a ctypes function costs ~10 us
                for k0, k1, accumulate in runs:
                    function(self._codes_at + BLOCK_BYTES * k0, self.cstride, self._tables_at, self.tstride,
                             buffer_at + 4 * LANES * tokens * k0, k1 - k0, 0, outputs, 0 if accumulate else bias_at,
                             at, ldo, accumulate, *self._outlier_words, k0)
            else:
                _drive(function, self._codes_at, self.cstride, self._tables_at, self.tstride, buffer_at, tokens,
                       self._runs_for(tokens), bounds, bias_at, at, ldo, self._outliers_at)

    def _run_int8(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
        """Each block of tokens quantized chunk-major into this thread's scratch (and, for the outliers'
        fp32 term, transposed after it), then the int8 kernel over all inputs at once: a token's uint8 inputs
        are a quarter of fp32's (24 x 1536 in 36 KB of L1), so no runs of blocks; wider layers read L2."""
        rows, ldo = x.shape[0], out.shape[1]
        peaks = np.empty(rows, np.int32)
        _row_peaks(x.view(np.int32), peaks)
        scales = np.empty(rows, np.float32)
        most = min(rows, MAX_BLOCK)
        floats = self.chunks * most * (CHUNK // 4)  # the quantized inputs, in fp32 words: 64 bytes a chunk and token
        transposing = self.outliers is not None
        buffer, buffer_at = _scratch(floats + (self.shape[1] * most if transposing else 0))
        quantized, xt = buffer[:floats].view(np.uint8), buffer[floats:]
        xt_at = buffer_at + 4 * floats if transposing else 0
        luts_at, correction_at, wscale_at = self._int8_at
        bias_at, out_at, scales_at = bias.ctypes.data if len(bias) else 0, out.ctypes.data, scales.ctypes.data
        bounds = self._bounds()
        for start, stop in blocks(rows):
            tokens = stop - start
            _quantize_chunk_major(x, start, stop, self.chunks, peaks.view(np.float32), quantized, scales)
            if transposing:  # numpy's blocked transpose: a numba loop measured 2-4x slower (17 x 1536)
                np.copyto(xt[: self.shape[1] * tokens].reshape(self.shape[1], tokens), x[start:stop].T)
            function = int8_kernel(tokens)
            at, xscale_at = out_at + 4 * start * ldo, scales_at + 4 * start
            if bounds is None:
                function(self._codes_at, self.cstride, luts_at, self.lstride, buffer_at, self.chunks, 0, self.shape[0],
                         correction_at, wscale_at, xscale_at, bias_at, at, ldo, *self._outlier_words, xt_at)
            else:
                _drive_int8(function, self._codes_at, self.cstride, luts_at, self.lstride, buffer_at, self.chunks,
                            bounds, correction_at, wscale_at, xscale_at, bias_at, at, ldo, self._outliers_at, xt_at)

    def _plan(self, tokens: int) -> tuple:
        """(the kernel, [(first block, end block, accumulate) of each run]) for a call of ``tokens`` rows."""
        found = self._plans.get(tokens)
        if found is None:
            edges = [int(k) for k in self._runs_for(tokens)]
            found = self._plans[tokens] = (kernel(tokens), [(k0, k1, int(i > 0)) for i, (k0, k1)
                                                            in enumerate(zip(edges[:-1], edges[1:]))])
        return found

    def _runs_for(self, tokens: int) -> np.ndarray:
        found = self._block_runs.get(tokens)
        if found is None:
            found = self._block_runs[tokens] = block_runs(self.blocks, tokens)
        return found

    def _split(self, threads: int) -> np.ndarray:
        """Row boundaries, one run a thread (`jit.AddressedMatrix._bounds`)."""
        return row_bounds(self.shape[0], threads)


@functools.cache  # kept for the process: layers without outliers point at it
def _no_entries(rows: int) -> np.ndarray:
    """The CSR row pointer of no entries in ``rows`` rows (all zeros)."""
    return np.zeros(rows + 1, np.int32)

ALIGN = 64  # bytes: a cache line. Each FMA loads 64 bytes of input; unaligned, every load spans two lines


def _aligned(count: int) -> np.ndarray:
    """An fp32 buffer of ``count`` values starting on a cache line (numpy aligns to 16 bytes only)."""
    raw = np.empty(count + ALIGN // 4, np.float32)
    skip = (-raw.ctypes.data % ALIGN) // 4
    return raw[skip: skip + count]


_buffers = threading.local()  # a thread's scratch: ctypes calls release the GIL, so threads may overlap


def _scratch(count: int) -> tuple[np.ndarray, int]:
    """(a cache-line aligned fp32 buffer of at least ``count`` values, its address), this thread's own,
    reused across calls: a fresh 26 KB buffer a call measured ~10 us slower (384x384 at 17 tokens)."""
    found = getattr(_buffers, "inputs", None)
    if found is None or len(found[0]) < count:
        array = _aligned(max(count, 1))
        found = _buffers.inputs = (array, array.ctypes.data)
    return found


def _outlier_correction(codebook, index, mask, outlier_mask, outliers) -> SparseMatrix:
    """CSR of (exact weight - the codes' value) at the outlier positions: the layer's weight is the codes'
    product plus this one's. The exact weight is the sharing state's own (`shared_weight`), so pruned
    positions and the outliers' order are exactly as it defines them."""
    exact = shared_weight(codebook.detach().float().cpu(), index.cpu(), None if mask is None else mask.cpu(),
                          outlier_mask.cpu(), outliers.detach().float().cpu())
    coded = shared_weight(codebook.detach().float().cpu(), index.cpu(), None if mask is None else mask.cpu())
    rows = exact.shape[0]
    difference = (exact - coded).reshape(rows, -1)
    return SparseMatrix.from_dense(difference, mask=outlier_mask.reshape(rows, -1).cpu())
