"""Batch-1 sparse kernels, compiled with numba: CSR times a dense block, with values or codebook codes.

Layout: ``indptr`` int32 (rows + 1), ``cols`` uint16 when the width allows (else int32), and either
``values`` fp32 or ``codes`` uint8/uint16 into a small fp32 ``codebook`` (weight sharing: one byte
per weight instead of four). The dense operand is given transposed, ``xt`` of shape (in, batch), so
the inner loop runs over contiguous memory for any batch size; at batch 1 it is a plain dot product.
Batch > 1 kernels are plain loops (the batch loop vectorizes by itself); batch-1 dot products allow
reassociation only, see `_dot`.
"""

from __future__ import annotations

import numba
import numpy as np

from .prefetch import prefetch


# Every kernel slices a row's entries out first and indexes the slices from 0: numba then knows the
# index is not negative and drops its wraparound check from the hot loop (about 1.9x faster at batch 1
# on a 4096x4096 layer at 9% than indexing the whole arrays from the row's start).
#
# Batch > 1: a row of the output is summed in `acc`, a buffer of the kernel's own that LLVM knows aliases
# nothing, so the batch loop vectorizes without run-time overlap checks (~17% faster at batch 32 than
# summing into the output row in place). One buffer per block of rows, so the parallel kernels give each
# thread its own. Eight kept weights are applied per pass over `acc` (their input rows summed in
# registers first, multiply-adds contracted to FMAs): `acc` is loaded and stored once per eight weights
# instead of once per weight. The kernel alone on AlexNet fc6 / fc7 at 9%, batch 32, 1 thread, as speedups
# over dense in one interleaved run (loaded 2-core machine): one weight a pass 2.67x / 2.73x, eight a pass
# 3.28x / 3.57x, torch's MKL CSR 3.16x / 3.53x; fc8 (25%): 1.07x, 1.34x, 1.19x. The coded kernel likewise.
@numba.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _axpy8(acc, xt, c, w0, w1, w2, w3, w4, w5, w6, w7, j):
    """acc += the eight weights times the input rows of columns c[j:j+8] (the whole batch)."""
    s0, s1, s2, s3 = xt[c[j]], xt[c[j + 1]], xt[c[j + 2]], xt[c[j + 3]]
    s4, s5, s6, s7 = xt[c[j + 4]], xt[c[j + 5]], xt[c[j + 6]], xt[c[j + 7]]
    for b in range(len(acc)):
        acc[b] += (((w0 * s0[b] + w1 * s1[b]) + (w2 * s2[b] + w3 * s3[b]))
                   + ((w4 * s4[b] + w5 * s5[b]) + (w6 * s6[b] + w7 * s7[b])))


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, inline="always")
def _axpy1(acc, src, w):
    for b in range(len(acc)):
        acc[b] += w * src[b]


# Batch > 1 on a wide layer: its transposed input outgrows half the L2 (fc6 at batch 32: 1.2 MB), and the
# input rows the next weights gather come from further out. Hinting the rows of the weights `ahead`
# entries on: fc6 3.08x -> 3.29x dense (torch's MKL CSR 3.31x, same run); fc7 (0.5 MB) lost ~1.5%, so only
# inputs from this size up are hinted (`mm_ahead`). Both batched kernels hint through `_hint_inputs`: numba
# inlines it into the same prefetches and vector code as the hints written out in the loop (a few register
# moves differ; fc6 and fc7 at batch 32 time the same). Keep it free of branches on the batch width: an
# earlier helper that hinted the second line only `if width > 16` made fc6 2x slower instead of faster
# (reproduced with numba 0.68: 11.1 -> 20.6 ms).
MM_PREFETCH_AHEAD = 32
MM_PREFETCH_MIN_BYTES = 1 << 20


def mm_ahead(xt: np.ndarray) -> int:
    """The batched kernels' prefetch distance for a transposed input ``xt`` (0: none)."""
    return MM_PREFETCH_AHEAD if xt.nbytes >= MM_PREFETCH_MIN_BYTES else 0


@numba.njit(cache=True, nogil=True, inline="always")
def _hint_inputs(flat, cols, g, width):
    """Hint the input rows (two cache lines each, ``width`` floats a row of the flat transposed input) of the
    eight columns ``cols[g:g + 8]``, where there are eight."""
    if g + 8 <= len(cols):
        for q in range(8):
            base = np.int64(cols[g + q]) * width
            prefetch(flat, base)
            prefetch(flat, base + 16)


@numba.njit(cache=True, nogil=True)
def _mm_rows(indptr, cols, values, xt, out, r0, r1, ahead):
    acc = np.empty(xt.shape[1], dtype=np.float32)
    flat = xt.reshape(-1)
    for r in range(r0, r1):
        start = indptr[r]
        c, v = cols[start:indptr[r + 1]], values[start:indptr[r + 1]]
        acc[:] = 0
        j = 0
        while j + 8 <= len(c):
            if ahead > 0:
                _hint_inputs(flat, cols, start + j + ahead, len(acc))
            _axpy8(acc, xt, c, v[j], v[j + 1], v[j + 2], v[j + 3], v[j + 4], v[j + 5], v[j + 6], v[j + 7], j)
            j += 8
        for i in range(j, len(c)):
            _axpy1(acc, xt[c[i]], v[i])
        out[r, :] = acc


# The coded twin of _mm_rows (a weight is codebook[code], looked up once per row pass, not per batch item).
@numba.njit(cache=True, nogil=True)
def _mm_rows_coded(indptr, cols, codes, codebook, xt, out, r0, r1, ahead):
    acc = np.empty(xt.shape[1], dtype=np.float32)
    flat = xt.reshape(-1)
    t = codebook
    for r in range(r0, r1):
        start = indptr[r]
        c, k = cols[start:indptr[r + 1]], codes[start:indptr[r + 1]]
        acc[:] = 0
        j = 0
        while j + 8 <= len(c):
            if ahead > 0:
                _hint_inputs(flat, cols, start + j + ahead, len(acc))
            _axpy8(acc, xt, c, t[k[j]], t[k[j + 1]], t[k[j + 2]], t[k[j + 3]], t[k[j + 4]], t[k[j + 5]], t[k[j + 6]],
                   t[k[j + 7]], j)
            j += 8
        for i in range(j, len(c)):
            _axpy1(acc, xt[c[i]], t[k[i]])
        out[r, :] = acc


@numba.njit(cache=True, nogil=True)
def csr_mm(indptr, cols, values, xt, out, ahead=0):
    """out (rows, batch) = W @ xt, one thread; ``ahead``: input-row prefetch distance (`mm_ahead`) or 0."""
    _mm_rows(indptr, cols, values, xt, out, 0, len(indptr) - 1, ahead)


@numba.njit(cache=True, nogil=True)
def csr_mm_coded(indptr, cols, codes, codebook, xt, out, ahead=0):
    _mm_rows_coded(indptr, cols, codes, codebook, xt, out, 0, len(indptr) - 1, ahead)


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mm_parallel(indptr, cols, values, xt, out, chunks, ahead=0):
    for t in numba.prange(len(chunks) - 1):
        _mm_rows(indptr, cols, values, xt, out, chunks[t], chunks[t + 1], ahead)


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mm_coded_parallel(indptr, cols, codes, codebook, xt, out, chunks, ahead=0):
    for t in numba.prange(len(chunks) - 1):
        _mm_rows_coded(indptr, cols, codes, codebook, xt, out, chunks[t], chunks[t + 1], ahead)


# The batch-1 dot products allow reassociation (and nothing else of fastmath): LLVM then vectorizes the
# sum into 8 lanes with AVX2/AVX-512 gathers of x, which on a 4096x4096 layer at 9% is ~1.7x faster than
# four scalar partial sums (0.34 vs 0.58 ms). The lane order is fixed by the compiled code, so results
# repeat exactly run to run on one machine, and the serial and parallel kernels, which share this
# function, agree bit for bit; across CPUs with other vector widths they may differ in the last bits.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot(indptr, cols, values, x, r):
    c, v = cols[indptr[r]:indptr[r + 1]], values[indptr[r]:indptr[r + 1]]
    acc = np.float32(0.0)
    for j in range(len(c)):
        acc += v[j] * x[c[j]]
    return acc


# The coded twin of _dot: kept separate on purpose, because a shared version would need a branch or
# an extra indirection per weight inside the hottest loop of the runtime.
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot_coded(indptr, cols, codes, codebook, x, r):
    c, k = cols[indptr[r]:indptr[r + 1]], codes[indptr[r]:indptr[r + 1]]
    acc = np.float32(0.0)
    for j in range(len(c)):
        acc += codebook[k[j]] * x[c[j]]
    return acc


# How far ahead of the row being summed the batch-1 kernels hint weights and columns into the cache
# (~3 rows of a 4096-wide layer at 9%). 4096x4096 at 9%, caches flushed: none 0.82 ms, 256 ahead 0.59,
# 1024 0.54, 4096 0.61. Small layers stay in L2 between calls and pass ``ahead=0`` (the hints would
# cost ~9% there for nothing); `SparseMatrix` decides by the layer's bytes.
PREFETCH_AHEAD = 1024
PREFETCH_MIN_BYTES = 1 << 20  # weights (or codes) + columns


@numba.njit(cache=True, nogil=True, inline="always")
def _hint_up_to(data, start, stop):
    """Hint ``data[start:stop]``, one hint per 64-byte line; returns where the next hint starts."""
    step = max(64 // data.itemsize, 1)
    while start < stop:
        prefetch(data, start)
        start += step
    return start


@numba.njit(cache=True, nogil=True)
def _mv_rows(indptr, cols, values, x, bias, out, r0, r1, ahead):
    has_bias = len(bias) > 0
    next_value = next_col = indptr[r0] + ahead  # the streams are hinted up to these positions
    for r in range(r0, r1):
        if ahead > 0:
            stop = min(indptr[r + 1] + ahead, len(values))
            next_value = _hint_up_to(values, next_value, stop)
            next_col = _hint_up_to(cols, next_col, stop)
        acc = _dot(indptr, cols, values, x, r)
        out[r] = acc + bias[r] if has_bias else acc


@numba.njit(cache=True, nogil=True)
def _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, r0, r1, ahead):
    has_bias = len(bias) > 0
    next_code = next_col = indptr[r0] + ahead
    for r in range(r0, r1):
        if ahead > 0:
            stop = min(indptr[r + 1] + ahead, len(codes))
            next_code = _hint_up_to(codes, next_code, stop)
            next_col = _hint_up_to(cols, next_col, stop)
        acc = _dot_coded(indptr, cols, codes, codebook, x, r)
        out[r] = acc + bias[r] if has_bias else acc


@numba.njit(cache=True, nogil=True)
def csr_mv(indptr, cols, values, x, bias, out, ahead):
    """out = W @ x + bias for one input vector (``bias`` may be empty); ``ahead``: prefetch distance or 0."""
    _mv_rows(indptr, cols, values, x, bias, out, 0, len(indptr) - 1, ahead)


@numba.njit(cache=True, nogil=True)
def csr_mv_coded(indptr, cols, codes, codebook, x, bias, out, ahead):
    _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, 0, len(indptr) - 1, ahead)


# Parallel versions: each thread runs the serial row kernel over a block of rows holding an equal
# share of the nonzeros (``chunks`` from `row_chunks`), so every thread gets the same optimized loop.
@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mv_parallel(indptr, cols, values, x, bias, out, ahead, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mv_rows(indptr, cols, values, x, bias, out, chunks[t], chunks[t + 1], ahead)


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mv_coded_parallel(indptr, cols, codes, codebook, x, bias, out, ahead, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, chunks[t], chunks[t + 1], ahead)


def row_chunks(indptr: np.ndarray, parts: int) -> np.ndarray:
    """Row boundaries splitting the nonzeros into ``parts`` nearly equal blocks."""
    targets = np.linspace(0, indptr[-1], parts + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(indptr) - 1
    return np.maximum.accumulate(bounds)


# Below this many weights a second thread costs more than it saves. Measured with numba's OpenMP layer on
# the 2-core CI machine, batch 1: 15k weights 4.4 us on one thread or two; 22k: 6.2 vs 5.5 us; 100k: 25 vs 16 us.
PARALLEL_MIN_NNZ = 20_000


def column_dtype(width: int):
    """The narrowest column index type for a matrix ``width`` columns wide."""
    return np.uint16 if width <= 1 << 16 else np.int32


def to_csr(dense: np.ndarray, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int32, cols narrow, flat positions) of the kept entries of a 2-D weight (row-major)."""
    keep = dense != 0 if keep is None else keep
    rows, cols = np.nonzero(keep)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return indptr, cols.astype(column_dtype(dense.shape[1])), rows * dense.shape[1] + cols
