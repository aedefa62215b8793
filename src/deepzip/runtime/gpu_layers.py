"""GPU inference modules on the compact weights: the weight (CSR, sliced CSR or dense packed codes) and the
layer around it.

A weight is a small module of buffers (so ``.to(device)`` and ``state_dict`` carry it) with one method,
``matmul(x2, bias)`` for a (batch, in) input. `GpuLinear` and `GpuConv2d` (im2col, as the CPU runtime)
hold either kind. They are built from a `SparseMatrix` (the CPU runtime's CSR, from a module or straight
from a .dz), so no dense fp32 weight is ever made on the GPU. Inference only (no autograd).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import triton_kernels as tk
from .layers import SparseMatrix


def _tensor(array: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


class GpuCsr(nn.Module):
    """CSR on the device: int32 row pointers, uint16/int32 columns, uint8/uint16 codes + fp32 codebook or values."""

    kind = "csr"

    def __init__(self, matrix: SparseMatrix, device):
        super().__init__()
        self.shape = matrix.shape
        self.register_buffer("indptr", _tensor(matrix.indptr, device))
        self.register_buffer("cols", _tensor(matrix.cols, device))
        coded = matrix.codes is not None
        self.register_buffer("data", _tensor(matrix.codes if coded else matrix.values, device))
        self.register_buffer("codebook", _tensor(matrix.codebook, device) if coded else None)

    def matmul(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return tk.csr_matmul(self.indptr, self.cols, self.data, self.codebook, x2, bias)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.cols, self.data, self.codebook)
                   if t is not None)

    def extra_repr(self) -> str:
        return f"{self.shape[1]} -> {self.shape[0]}, nnz={self.data.numel()}, {self.nbytes():,} bytes"


class GpuSliced(nn.Module):
    """The CSR's entries in the sliced layout (`triton_kernels.slice_rows`): rows sorted by length, 16 to a
    slice, stored step-major so a step's codes for 16 rows are one 16-byte load, the slices in a few groups
    whose offsets the kernel computes from its arguments. Same codes and columns as `GpuCsr`, plus a little
    padding and 8 bytes a row (its length and its place in the output)."""

    kind = "sliced"

    def __init__(self, matrix: SparseMatrix, device):
        super().__init__()
        self.shape = matrix.shape
        coded = matrix.codes is not None
        layout = tk.slice_rows(matrix.indptr, matrix.cols, matrix.codes if coded else matrix.values)
        for name in ("lengths", "order", "cols", "data"):
            self.register_buffer(name, _tensor(layout[name], device))
        self.register_buffer("codebook", _tensor(matrix.codebook, device) if coded else None)
        self.groups = tk.group_args(layout)  # host ints: a launch needs no device read
        self.nnz = matrix.nnz

    def get_extra_state(self) -> dict:  # (the groups are not tensors; state_dict carries them this way)
        return {"groups": list(self.groups), "nnz": self.nnz}

    def set_extra_state(self, state: dict) -> None:
        self.groups, self.nnz = tuple(int(v) for v in state["groups"]), int(state["nnz"])

    def matmul(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return tk.sliced_matmul(self.groups, self.lengths, self.order, self.cols, self.data, self.codebook, x2, bias)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.lengths, self.order, self.cols, self.data,
                                                           self.codebook) if t is not None)

    def extra_repr(self) -> str:
        return (f"{self.shape[1]} -> {self.shape[0]}, nnz={self.nnz}, {self.data.numel() - self.nnz} padding, "
                f"{self.nbytes():,} bytes")


def dense_codes_bits(matrix: SparseMatrix) -> int:
    """The packed width dense codes of ``matrix`` would take (a pruned entry is one more code, for 0.0);
    0 when it has no codebook or needs more than 8 bits."""
    if matrix.codes is None:
        return 0
    pruned = matrix.nnz < matrix.shape[0] * matrix.shape[1]
    return tk.packed_bits(len(matrix.codebook) + int(pruned))


class GpuCodes(nn.Module):
    """Every weight as a 1/2/4/8-bit codebook index, packed (`triton_kernels.pack_codes`); pruned entries
    point at an extra 0.0 entry of the codebook. For dense-ish layers: 4-bit codes are 1/8 of fp32's bytes."""

    kind = "codes"

    def __init__(self, matrix: SparseMatrix, device):
        super().__init__()
        bits = dense_codes_bits(matrix)
        if bits == 0:
            raise ValueError("dense codes need a codebook of at most 256 entries (255 with pruned weights)")
        rows, width = matrix.shape
        self.shape, self.bits = matrix.shape, bits
        codebook = np.append(matrix.codebook, np.float32(0.0))  # the pruned entries' code: len(codebook)
        codes = np.full((rows, width), len(matrix.codebook), dtype=np.uint8)
        row_of = np.repeat(np.arange(rows), np.diff(matrix.indptr))
        codes[row_of, matrix.cols.astype(np.int64)] = matrix.codes
        self.register_buffer("packed", tk.pack_codes(torch.from_numpy(codes), bits).to(device))
        self.register_buffer("codebook", torch.from_numpy(codebook).to(device))

    def matmul(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return tk.codes_matmul(self.packed, self.bits, self.shape[1], self.codebook, x2, bias)

    def nbytes(self) -> int:
        return self.packed.numel() + self.codebook.numel() * 4

    def extra_repr(self) -> str:
        return f"{self.shape[1]} -> {self.shape[0]}, {self.bits}-bit codes, {self.nbytes():,} bytes"


WEIGHTS = {"csr": GpuCsr, "sliced": GpuSliced, "codes": GpuCodes}


def _rows(x: torch.Tensor, width: int) -> torch.Tensor:
    x2 = x.reshape(-1, width)
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


class GpuLinear(nn.Module):
    def __init__(self, weight: nn.Module, bias: torch.Tensor | None):
        super().__init__()
        self.weight = weight
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float().to(_device(weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.matmul(_rows(x, self.in_features), self.bias).reshape(*x.shape[:-1], self.out_features)


class GpuConv2d(nn.Module):
    """Conv2d as im2col + the weight's multiply (groups=1, zero padding), as `runtime.SparseConv2d`."""

    def __init__(self, weight: nn.Module, bias: torch.Tensor | None, conv: nn.Module):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("GpuConv2d supports groups=1 and numeric zero padding only")
        self.weight = weight
        self.out_channels, self.kernel_size = conv.out_channels, conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("bias", None if bias is None else bias.detach().clone().float().to(_device(weight)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (B, C*kh*kw, L)
        h_out = (height + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        w_out = (width + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        rows = cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (B*L, C*kh*kw), one output pixel per row
        out = self.weight.matmul(rows.contiguous(), self.bias)  # (B*L, out)
        return out.reshape(batch, h_out, w_out, self.out_channels).permute(0, 3, 1, 2).contiguous()


def _device(weight: nn.Module) -> torch.device:
    return next(iter(weight.buffers())).device


def build(kind: str, matrix: SparseMatrix, bias: torch.Tensor | None, module: nn.Module, device) -> nn.Module:
    """The GPU layer of ``kind`` (csr, sliced or codes) for ``module`` (its Linear / Conv2d hyperparameters)."""
    weight = WEIGHTS[kind](matrix, device)
    if isinstance(module, nn.Linear):
        return GpuLinear(weight, bias)
    return GpuConv2d(weight, bias, module)


def kinds_for(matrix: SparseMatrix) -> list[str]:
    """The GPU weight kinds ``matrix`` can run as."""
    return ["csr", "sliced"] + (["codes"] if dense_codes_bits(matrix) else [])
