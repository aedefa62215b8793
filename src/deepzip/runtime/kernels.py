"""Batch-1 sparse kernels, compiled with numba: CSR times a dense block, with values or codebook codes.

Layout: ``indptr`` int32 (rows + 1), ``cols`` uint16 when the width allows (else int32), and either
``values`` fp32 or ``codes`` uint8/uint16 into a small fp32 ``codebook`` (weight sharing: one byte
per weight instead of four). The dense operand is given transposed, ``xt`` of shape (in, batch), so
the inner loop runs over contiguous memory for any batch size; at batch 1 it is a plain dot product.
Plain loops without fastmath: accumulation order is fixed, so results are deterministic.
"""

from __future__ import annotations

import os

import numba
import numpy as np

# numba's OpenMP layer resets the OpenMP thread count that torch also uses; the workqueue layer
# leaves torch's threads alone. A user's own NUMBA_THREADING_LAYER still wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


# Every kernel slices a row's entries out first and indexes the slices from 0: numba then knows the
# index is not negative and drops its wraparound check from the hot loop (about 1.9x faster at batch 1
# on a 4096x4096 layer at 9% than indexing the whole arrays from the row's start).
@numba.njit(cache=True, nogil=True)
def _row(indptr, cols, values, xt, out, r):
    c, v = cols[indptr[r]:indptr[r + 1]], values[indptr[r]:indptr[r + 1]]
    dst = out[r]
    for j in range(len(c)):
        w = v[j]
        src = xt[c[j]]
        for b in range(len(src)):
            dst[b] += w * src[b]


@numba.njit(cache=True, nogil=True)
def _row_coded(indptr, cols, codes, codebook, xt, out, r):
    c, k = cols[indptr[r]:indptr[r + 1]], codes[indptr[r]:indptr[r + 1]]
    dst = out[r]
    for j in range(len(c)):
        w = codebook[k[j]]
        src = xt[c[j]]
        for b in range(len(src)):
            dst[b] += w * src[b]


@numba.njit(cache=True, nogil=True)
def csr_mm(indptr, cols, values, xt, out):
    """out (rows, batch) += W @ xt, one thread."""
    for r in range(len(indptr) - 1):
        _row(indptr, cols, values, xt, out, r)


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mm_parallel(indptr, cols, values, xt, out):
    for r in numba.prange(len(indptr) - 1):
        _row(indptr, cols, values, xt, out, r)


@numba.njit(cache=True, nogil=True)
def csr_mm_coded(indptr, cols, codes, codebook, xt, out):
    for r in range(len(indptr) - 1):
        _row_coded(indptr, cols, codes, codebook, xt, out, r)


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mm_coded_parallel(indptr, cols, codes, codebook, xt, out):
    for r in numba.prange(len(indptr) - 1):
        _row_coded(indptr, cols, codes, codebook, xt, out, r)


@numba.njit(cache=True, nogil=True, inline="always")
def _dot(indptr, cols, values, x, r):
    # Four partial sums: one running sum is a chain of dependent adds (latency-bound, ~4 cycles a
    # weight); four independent chains let the CPU overlap them. The order is fixed, so results are
    # deterministic (and equal between the one- and multi-threaded kernels).
    c, v = cols[indptr[r]:indptr[r + 1]], values[indptr[r]:indptr[r + 1]]
    n = len(c)
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for q in range(n // 4):
        j = 4 * q
        a0 += v[j] * x[c[j]]
        a1 += v[j + 1] * x[c[j + 1]]
        a2 += v[j + 2] * x[c[j + 2]]
        a3 += v[j + 3] * x[c[j + 3]]
    for j in range(n - n % 4, n):
        a0 += v[j] * x[c[j]]
    return (a0 + a1) + (a2 + a3)


# The coded twin of _dot: kept separate on purpose, because a shared version would need a branch or
# an extra indirection per weight inside the hottest loop of the runtime.
@numba.njit(cache=True, nogil=True, inline="always")
def _dot_coded(indptr, cols, codes, codebook, x, r):
    c, k = cols[indptr[r]:indptr[r + 1]], codes[indptr[r]:indptr[r + 1]]
    n = len(c)
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    for q in range(n // 4):
        j = 4 * q
        a0 += codebook[k[j]] * x[c[j]]
        a1 += codebook[k[j + 1]] * x[c[j + 1]]
        a2 += codebook[k[j + 2]] * x[c[j + 2]]
        a3 += codebook[k[j + 3]] * x[c[j + 3]]
    for j in range(n - n % 4, n):
        a0 += codebook[k[j]] * x[c[j]]
    return (a0 + a1) + (a2 + a3)


@numba.njit(cache=True, nogil=True)
def _mv_rows(indptr, cols, values, x, bias, out, r0, r1):
    has_bias = len(bias) > 0
    for r in range(r0, r1):
        acc = _dot(indptr, cols, values, x, r)
        out[r] = acc + bias[r] if has_bias else acc


@numba.njit(cache=True, nogil=True)
def _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, r0, r1):
    has_bias = len(bias) > 0
    for r in range(r0, r1):
        acc = _dot_coded(indptr, cols, codes, codebook, x, r)
        out[r] = acc + bias[r] if has_bias else acc


@numba.njit(cache=True, nogil=True)
def csr_mv(indptr, cols, values, x, bias, out):
    """out = W @ x + bias for one input vector (``bias`` may be empty)."""
    _mv_rows(indptr, cols, values, x, bias, out, 0, len(indptr) - 1)


@numba.njit(cache=True, nogil=True)
def csr_mv_coded(indptr, cols, codes, codebook, x, bias, out):
    _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, 0, len(indptr) - 1)


# Parallel versions: each thread runs the serial row kernel over a block of rows holding an equal
# share of the nonzeros (``chunks`` from `row_chunks`), so every thread gets the same optimized loop.
@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mv_parallel(indptr, cols, values, x, bias, out, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mv_rows(indptr, cols, values, x, bias, out, chunks[t], chunks[t + 1])


@numba.njit(cache=True, nogil=True, parallel=True)
def csr_mv_coded_parallel(indptr, cols, codes, codebook, x, bias, out, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mv_rows_coded(indptr, cols, codes, codebook, x, bias, out, chunks[t], chunks[t + 1])


def row_chunks(indptr: np.ndarray, parts: int) -> np.ndarray:
    """Row boundaries splitting the nonzeros into ``parts`` nearly equal blocks."""
    targets = np.linspace(0, indptr[-1], parts + 1)
    bounds = np.searchsorted(indptr, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(indptr) - 1
    return np.maximum.accumulate(bounds)


PARALLEL_MIN_NNZ = 200_000  # below this, waking a second thread costs more than it saves


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


def threads() -> int:
    return numba.get_num_threads()
