"""Dense weight-shared kernels: every weight stored as its codebook index, compiled with numba.

At batch 1 (and small batches) a dense layer's cost is reading its weights; 4-bit codes are 8x fewer
bytes than fp32, 8-bit codes 4x. Layout (`CodedMatrix`): ``codes`` (rows, bytes per row) uint8, either

- packed 4-bit, two codes a byte: byte j of a row holds column j in its low nibble and column
  j + half in its high nibble (half = ceil(width / 2)), so the two halves of the input are read as two
  contiguous streams and the loop vectorizes (llama.cpp's Q4 blocks split a block the same way); or
- one uint8 code a weight (5 to 8 bits),

and ``codebook`` fp32 (1, k) for one codebook per layer or (rows, k) for per-row codebooks (row r reads
``codebook[r * per_row]``). Pruned weights, where a layer has a mask, get one extra code whose value is
+0.0, so a little sparsity costs nothing here (much sparsity is the CSR kernels' job). Exact outliers
(a dense-and-sparse split) are not covered: such layers stay on the CSR or dense kernels.

Batch 1: one fused pass per row, table lookups feeding the dot product. Batch > 1: a block of rows is
decoded into a small fp32 buffer once and reused for every input row, four weight rows at a time, so each
load of the input feeds four multiply-adds. The input and output keep torch's layout, (batch, in) and
(batch, out): no transposes. Dot products allow reassociation only (as `kernels._dot`): results repeat
exactly run to run on one machine, and agree with a dense matmul within fp32 reassociation.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from . import kernels
from .threads import kernel_threads

MAX_CODES = 256  # codes are bytes; a layer needs at most 255 shared values (+1 for pruned weights)
ROW_BLOCK = 4  # weight rows decoded together at batch > 1


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot4(row, table, x, half):
    width = len(x)
    acc = np.float32(0.0)
    both = width - half
    for j in range(both):
        b = row[j]
        acc += table[b & 15] * x[j] + table[b >> 4] * x[j + half]
    if half > both:  # odd width: the last byte's high nibble is padding
        acc += table[row[half - 1] & 15] * x[half - 1]
    return acc


# With one codebook per layer, a 4-bit byte is looked up whole in a table of its 256 value pairs (2 KB,
# stays in L1): one 8-byte load gives two weights, ~2x faster than two nibble lookups (384x1536, batch 1:
# 126 vs 191 us on the loaded 2-core CI machine). Per-row codebooks would need a table per row (2 KB each).
@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot_pairs(row, pairs, x, half):
    width = len(x)
    low = high = np.float32(0.0)
    pairs_end = width - half
    for j in range(pairs_end):
        b = row[j]
        low += pairs[b, 0] * x[j]
        high += pairs[b, 1] * x[j + half]
    if half > pairs_end:
        low += pairs[row[half - 1], 0] * x[half - 1]
    return low + high


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot8(row, table, x):
    acc = np.float32(0.0)
    for j in range(len(x)):
        acc += table[row[j]] * x[j]
    return acc


@numba.njit(cache=True, nogil=True)
def _mv_rows(codes, codebook, pairs, per_row, half, x, bias, out, r0, r1):
    has_bias = len(bias) > 0
    use_pairs = half > 0 and len(pairs) > 0
    for r in range(r0, r1):
        table = codebook[r * per_row]
        if use_pairs:
            acc = _dot_pairs(codes[r], pairs, x, half)
        elif half > 0:
            acc = _dot4(codes[r], table, x, half)
        else:
            acc = _dot8(codes[r], table, x)
        out[r] = acc + bias[r] if has_bias else acc


@numba.njit(cache=True, nogil=True)
def _decode_row(row, table, half, dest):
    width = len(dest)
    if half > 0:
        both = width - half
        for j in range(both):
            b = row[j]
            dest[j] = table[b & 15]
            dest[j + half] = table[b >> 4]
        if half > both:
            dest[half - 1] = table[row[half - 1] & 15]
    else:
        for j in range(width):
            dest[j] = table[row[j]]


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot4rows(w, x):
    a0 = a1 = a2 = a3 = np.float32(0.0)
    for j in range(len(x)):
        v = x[j]
        a0 += w[0, j] * v
        a1 += w[1, j] * v
        a2 += w[2, j] * v
        a3 += w[3, j] * v
    return a0, a1, a2, a3


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _dot(w, x):
    acc = np.float32(0.0)
    for j in range(len(x)):
        acc += w[j] * x[j]
    return acc


@numba.njit(cache=True, nogil=True)
def _mm_rows(codes, codebook, per_row, half, x, bias, out, r0, r1):
    """out[:, r0:r1] = x @ W[r0:r1].T + bias, for x (batch, in) and out (batch, out)."""
    has_bias = len(bias) > 0
    width = x.shape[1]
    w = np.empty((ROW_BLOCK, width), dtype=np.float32)  # this block's weights, decoded once for the batch
    for r in range(r0, r1, ROW_BLOCK):
        n = min(ROW_BLOCK, r1 - r)
        for i in range(n):
            _decode_row(codes[r + i], codebook[(r + i) * per_row], half, w[i])
        for b in range(x.shape[0]):
            xb = x[b]
            if n == ROW_BLOCK:
                a0, a1, a2, a3 = _dot4rows(w, xb)
                out[b, r], out[b, r + 1], out[b, r + 2], out[b, r + 3] = a0, a1, a2, a3
            else:
                for i in range(n):
                    out[b, r + i] = _dot(w[i], xb)
            if has_bias:
                for i in range(n):
                    out[b, r + i] += bias[r + i]


@numba.njit(cache=True, nogil=True)
def codes_mv(codes, codebook, pairs, per_row, half, x, bias, out):
    """out = W @ x + bias for one input vector (``bias`` may be empty), W given by its codes; ``pairs``:
    the (256, 2) pair table of a 4-bit layer with one codebook (`pair_table`), else empty."""
    _mv_rows(codes, codebook, pairs, per_row, half, x, bias, out, 0, codes.shape[0])


@numba.njit(cache=True, nogil=True)
def codes_mm(codes, codebook, per_row, half, x, bias, out):
    """out (batch, rows) = x @ W.T + bias for x (batch, in), W given by its codes."""
    _mm_rows(codes, codebook, per_row, half, x, bias, out, 0, codes.shape[0])


# Parallel versions: each thread takes an equal block of rows (every row costs the same here), blocks
# a multiple of ROW_BLOCK so the batch kernel's row groups stay whole.
@numba.njit(cache=True, nogil=True, parallel=True)
def codes_mv_parallel(codes, codebook, pairs, per_row, half, x, bias, out, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mv_rows(codes, codebook, pairs, per_row, half, x, bias, out, chunks[t], chunks[t + 1])


@numba.njit(cache=True, nogil=True, parallel=True)
def codes_mm_parallel(codes, codebook, per_row, half, x, bias, out, chunks):
    for t in numba.prange(len(chunks) - 1):
        _mm_rows(codes, codebook, per_row, half, x, bias, out, chunks[t], chunks[t + 1])


def row_blocks(rows: int, parts: int) -> np.ndarray:
    """Row boundaries splitting ``rows`` into ``parts`` nearly equal blocks (multiples of ROW_BLOCK)."""
    bounds = (np.linspace(0, rows / ROW_BLOCK, parts + 1).round() * ROW_BLOCK).astype(np.int64)
    bounds[-1] = rows
    return np.minimum(np.maximum.accumulate(bounds), rows)


def pair_table(table: np.ndarray) -> np.ndarray:
    """(256, 2) fp32: the values of a byte's low and high nibble codes under a 16-entry ``table``."""
    table = np.concatenate([table, np.zeros(16 - len(table), np.float32)])
    byte = np.arange(256)
    return np.ascontiguousarray(np.stack([table[byte & 15], table[byte >> 4]], axis=1), dtype=np.float32)


def pack(index: np.ndarray, bits: int) -> np.ndarray:
    """Codes (rows, width) of values < 2**bits as the kernels read them: 4-bit two a byte (see the
    module docstring), else one byte each."""
    index = np.ascontiguousarray(index, dtype=np.uint8)
    if bits > 4:
        return index
    rows, width = index.shape
    half = (width + 1) // 2
    packed = index[:, :half].copy()
    packed[:, : width - half] |= index[:, half:] << 4
    return packed


class CodedMatrix:
    """A dense weight as codebook indices (see the module docstring) and the multiply that uses them."""

    def __init__(self, shape, codes, codebook, half: int):
        self.shape = tuple(shape)
        self.codes = np.ascontiguousarray(codes, np.uint8)
        self.codebook = np.ascontiguousarray(codebook, np.float32)
        self.per_row = 1 if self.codebook.shape[0] > 1 else 0  # (1, k): one codebook for every row
        self.half = int(half)
        self.pairs = pair_table(self.codebook[0]) if self.half and not self.per_row else np.zeros((0, 2), np.float32)
        self.nnz = self.shape[0] * self.shape[1]  # dense: every position is stored
        self.bits = 4 if self.half else 8
        self._chunks: dict[int, np.ndarray] = {}

    @classmethod
    def eligible(cls, codebook: torch.Tensor | None, has_outliers: bool) -> bool:
        """Whether a layer's sharing state fits these kernels: a codebook ([k] or per-row [rows, k])
        of at most 255 values, no exact outliers."""
        return codebook is not None and not has_outliers and codebook.shape[-1] < MAX_CODES

    @classmethod
    def from_index(cls, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None) -> "CodedMatrix":
        """From a layer's sharing state: ``codebook`` [k] or [rows, k], ``index`` of the weight's shape,
        ``mask`` (bool, the weight's shape) or None. Pruned weights get an extra code of value +0.0."""
        rows = index.shape[0]
        table = codebook.detach().float().reshape(-1 if codebook.dim() == 2 else 1, codebook.shape[-1]).numpy()
        idx = index.reshape(rows, -1).numpy().astype(np.int64)
        if mask is not None and not bool(mask.all()):
            table = np.concatenate([table, np.zeros((table.shape[0], 1), np.float32)], axis=1)
            idx = np.where(mask.reshape(rows, -1).numpy(), idx, table.shape[1] - 1)
        k = table.shape[1]
        if k > MAX_CODES:
            raise ValueError(f"dense codes hold at most {MAX_CODES} values per codebook, this layer needs {k}")
        bits = 4 if k <= 16 else 8
        width = idx.shape[1]
        return cls((rows, width), pack(idx, bits), table, (width + 1) // 2 if bits == 4 else 0)

    def nbytes(self) -> int:
        return self.codes.nbytes + self.codebook.nbytes + self.pairs.nbytes

    def _threads(self) -> int:
        return kernel_threads() if self.nnz >= kernels.PARALLEL_MIN_NNZ else 1

    def _chunks_for(self, threads: int) -> np.ndarray:
        chunks = self._chunks.get(threads)
        if chunks is None:
            chunks = self._chunks[threads] = row_blocks(self.shape[0], threads)
        return chunks

    def matvec(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W @ x + bias for one float32 vector."""
        out = np.empty(self.shape[0], dtype=np.float32) if out is None else out
        threads = self._threads()
        if threads > 1:
            codes_mv_parallel(self.codes, self.codebook, self.pairs, self.per_row, self.half, x, bias, out, self._chunks_for(threads))
        else:
            codes_mv(self.codes, self.codebook, self.pairs, self.per_row, self.half, x, bias, out)
        return out

    def matmul(self, x: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """x @ W.T + bias for x (batch, in) float32 C-contiguous: (batch, out)."""
        out = np.empty((x.shape[0], self.shape[0]), dtype=np.float32)
        threads = self._threads()
        if threads > 1:
            codes_mm_parallel(self.codes, self.codebook, self.per_row, self.half, x, bias, out, self._chunks_for(threads))
        else:
            codes_mm(self.codes, self.codebook, self.per_row, self.half, x, bias, out)
        return out

    def to_dense(self) -> torch.Tensor:
        """For tests and fallback decisions only."""
        dense = np.empty(self.shape, dtype=np.float32)
        for r in range(self.shape[0]):
            _decode_row(self.codes[r], self.codebook[r * self.per_row], self.half, dense[r])
        return torch.from_numpy(dense)
