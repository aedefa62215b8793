"""Inference modules holding compact storage: `SparseLinear` and `SparseConv2d` (im2col), `CodedLinear`.

The sparse ones hold CSR storage (int32 row pointers, uint16 columns when the width allows) with fp32
values or uint8/uint16 codebook codes; `CodedLinear` holds every weight as a 4- or 8-bit codebook index
(`runtime.codes`). Never a dense fp32 weight. Inference only (no autograd). Inputs may have any
leading dimensions ([batch, seq, features] in a transformer), as ``nn.Linear``'s.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .threads import kernel_threads


class SparseMatrix:
    """A CSR weight, values or codebook codes, and the multiply that uses the right kernel."""

    def __init__(self, shape, indptr, cols, values=None, codes=None, codebook=None):
        self.shape = tuple(shape)
        self.indptr, self.cols = np.ascontiguousarray(indptr, np.int32), np.ascontiguousarray(cols)
        self.values = None if values is None else np.ascontiguousarray(values, np.float32)
        self.codes = None if codes is None else np.ascontiguousarray(codes)
        self.codebook = None if codebook is None else np.ascontiguousarray(codebook, np.float32)
        if (self.values is None) == (self.codes is None):
            raise ValueError("give either values or codes (with a codebook)")
        self._chunks: dict[int, np.ndarray] = {}
        self.nnz = int(self.indptr[-1])  # read on every call: a plain attribute, not a property
        streamed = self.cols.nbytes + (self.values if self.codes is None else self.codes).nbytes
        self.prefetch_ahead = kernels.PREFETCH_AHEAD if streamed >= kernels.PREFETCH_MIN_BYTES else 0

    @classmethod
    def from_dense(cls, weight: torch.Tensor, codebook: torch.Tensor | None = None,
                   index: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> "SparseMatrix":
        w = weight.detach().reshape(weight.shape[0], -1).numpy()
        keep = None if mask is None else mask.reshape(w.shape).numpy()
        indptr, cols, positions = kernels.to_csr(w, keep)
        if codebook is None:
            return cls(w.shape, indptr, cols, values=w.reshape(-1)[positions])
        k = len(codebook)
        codes = index.reshape(-1).numpy()[positions].astype(np.uint8 if k <= 256 else np.uint16)
        return cls(w.shape, indptr, cols, codes=codes, codebook=codebook.detach().numpy())

    def nbytes(self) -> int:
        parts = [self.indptr, self.cols, self.values, self.codes, self.codebook]
        return sum(p.nbytes for p in parts if p is not None)

    def _chunks_for(self, threads: int) -> np.ndarray:
        chunks = self._chunks.get(threads)
        if chunks is None:
            chunks = self._chunks[threads] = kernels.row_chunks(self.indptr, threads)
        return chunks

    def _threads(self) -> int:
        return kernel_threads() if self.nnz >= kernels.PARALLEL_MIN_NNZ else 1

    def matvec(self, x: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """W @ x + bias for one float32 vector (the batch-1 fast path); threads only for large layers."""
        out = np.empty(self.shape[0], dtype=np.float32) if out is None else out
        threads = self._threads()
        if threads > 1:
            chunks = self._chunks_for(threads)
            if self.codes is None:
                kernels.csr_mv_parallel(self.indptr, self.cols, self.values, x, bias, out, self.prefetch_ahead, chunks)
            else:
                kernels.csr_mv_coded_parallel(self.indptr, self.cols, self.codes, self.codebook, x, bias, out,
                                              self.prefetch_ahead, chunks)
        elif self.codes is None:
            kernels.csr_mv(self.indptr, self.cols, self.values, x, bias, out, self.prefetch_ahead)
        else:
            kernels.csr_mv_coded(self.indptr, self.cols, self.codes, self.codebook, x, bias, out, self.prefetch_ahead)
        return out

    def matmul_t(self, xt: np.ndarray) -> np.ndarray:
        """W @ xt for xt of shape (in, batch), float32 C-contiguous."""
        out = np.empty((self.shape[0], xt.shape[1]), dtype=np.float32)
        threads = self._threads()
        ahead = kernels.mm_ahead(xt)
        if threads > 1:
            chunks = self._chunks_for(threads)
            if self.codes is None:
                kernels.csr_mm_parallel(self.indptr, self.cols, self.values, xt, out, chunks, ahead)
            else:
                kernels.csr_mm_coded_parallel(self.indptr, self.cols, self.codes, self.codebook, xt, out, chunks, ahead)
        elif self.codes is None:
            kernels.csr_mm(self.indptr, self.cols, self.values, xt, out, ahead)
        else:
            kernels.csr_mm_coded(self.indptr, self.cols, self.codes, self.codebook, xt, out, ahead)
        return out

    def to_dense(self) -> torch.Tensor:
        """For tests and fallback decisions only."""
        dense = np.zeros(self.shape, dtype=np.float32)
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        values = self.values if self.codes is None else self.codebook[self.codes]
        dense[rows, self.cols.astype(np.int64)] = values
        return torch.from_numpy(dense)


_NO_BIAS = np.zeros(0, dtype=np.float32)


class _CompactLinear(nn.Module):
    """What the compact Linear layers share: a matrix with ``matvec(x, bias, out)``, the bias, and the
    batch-1 path."""

    def __init__(self, matrix, bias: torch.Tensor | None):
        super().__init__()
        self.matrix = matrix
        self.in_features, self.out_features = matrix.shape[1], matrix.shape[0]
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())
        self._view_bias()

    def _view_bias(self) -> None:
        """The kernels read the bias as a numpy view of the buffer: taken again whenever the buffer may be
        another tensor (a copy, a loaded state_dict), or a copy would keep reading the old values."""
        self._bias = _NO_BIAS if self.bias is None else self.bias.numpy()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._view_bias()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._view_bias()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._batch_one(x)
        if out is not None:
            return out
        lead = x.shape[:-1]
        rows = np.ascontiguousarray(x.detach().reshape(-1, self.in_features).numpy(), dtype=np.float32)
        out = self.matrix.matvec(rows[0], self._bias) if rows.shape[0] == 1 else self._matmul(rows)
        return torch.from_numpy(out).reshape(*lead, self.out_features)

    def _matmul(self, rows: np.ndarray) -> np.ndarray:
        """``rows @ W.T + bias`` for a batch of rows (fp32, C-contiguous): each layer's batched kernel."""
        raise NotImplementedError

    def _batch_one(self, x: torch.Tensor) -> torch.Tensor | None:
        """The output for one contiguous fp32 row, else None. Batch 1 is latency-bound: a small layer's
        whole product takes a few microseconds, so this path does no reshapes or copies in Python, and
        the bias is added inside the kernel."""
        if x.dim() == 2 and x.shape[0] == 1 and x.dtype == torch.float32 and x.is_contiguous():
            out = np.empty((1, self.out_features), dtype=np.float32)
            self.matrix.matvec((x.detach() if x.requires_grad else x).numpy()[0], self._bias, out[0])
            return torch.from_numpy(out)
        return None


class SparseLinear(_CompactLinear):
    """A Linear layer run from its CSR weight (`SparseMatrix`: fp32 values or codebook codes)."""

    def _matmul(self, rows: np.ndarray) -> np.ndarray:
        # The batched CSR kernels take the input transposed: each kept weight updates a contiguous batch vector.
        out = self.matrix.matmul_t(np.ascontiguousarray(rows.T)).T
        return out if self.bias is None else out + self._bias

    def extra_repr(self) -> str:
        kind = "codes" if self.matrix.codes is not None else "values"
        return f"{self.in_features} -> {self.out_features}, nnz={self.matrix.nnz}, {kind}, {self.matrix.nbytes():,} bytes"


class CodedLinear(_CompactLinear):
    """A Linear layer run from its codebook indices: the weight-shared dense kernels, rows
    (`codes.CodedMatrix`), panels (`panels.PanelMatrix`) or row tables (`rowtables.RowTableMatrix`)."""

    def _matmul(self, rows: np.ndarray) -> np.ndarray:
        return self.matrix.matmul(rows, self._bias)

    def extra_repr(self) -> str:
        table = "per-row codebooks" if self.matrix.per_row else "one codebook"
        layout = f", {self.matrix.layout}, {self.matrix.precision}" if hasattr(self.matrix, "layout") else ""
        if getattr(self.matrix, "outliers", None) is not None:
            layout += f", {self.matrix.outliers.nnz} exact outliers"
        return (f"{self.in_features} -> {self.out_features}, {self.matrix.bits}-bit codes, {table}{layout}, "
                f"{self.matrix.nbytes():,} bytes")


class SparseConv2d(nn.Module):
    """Conv2d as im2col + sparse matrix multiply (groups=1)."""

    def __init__(self, matrix: SparseMatrix, bias: torch.Tensor | None, conv: nn.Conv2d):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("SparseConv2d supports groups=1 and zero padding only")
        self.matrix = matrix
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        padding = self.padding if not isinstance(self.padding, str) else 0
        cols = F.unfold(x, self.kernel_size, self.dilation, padding, self.stride)  # (B, C*kh*kw, L)
        h_out = (height + 2 * padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        w_out = (width + 2 * padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        xt = np.ascontiguousarray(cols.detach().permute(1, 0, 2).reshape(cols.shape[1], -1).numpy(), dtype=np.float32)
        out = torch.from_numpy(self.matrix.matmul_t(xt))  # (out, B*L)
        out = out.reshape(self.out_channels, batch, h_out * w_out).permute(1, 0, 2)
        if self.bias is not None:
            out = out + self.bias[None, :, None]
        return out.reshape(batch, self.out_channels, h_out, w_out)

    def extra_repr(self) -> str:
        return f"{self.matrix.shape[1]} -> {self.out_channels}, kernel {self.kernel_size}, nnz={self.matrix.nnz}"
