"""The chain compiler: a model that is a chain of supported layers runs in ONE compiled call.

Small models spend most of a batch-1 call in Python between layers (module calls, tensor wrapping,
reshapes): dense LeNet-300-100 takes ~47 us of which its multiply-adds are a few. When a model's
traced graph (torch.fx) is a straight chain of ops this module runs, `compile_chain` lowers it to a
program, a table of ops with offsets into a few flat pools (the weights it runs, copied once) and an
activation arena preallocated for one input shape, and `run_program` (numba, cached) runs the whole
chain without returning to Python. The per-layer kernels of `runtime.kernels` and `runtime.codes` do the
work inside it.

Ops: Linear (CSR values, CSR codebook codes, dense codes, dense fp32), Conv2d (CSR or dense, lowered to
im2col + multiply; groups=1, zero padding), ReLU, max / average pooling (no padding, floor mode), and
flatten / view / reshape / dropout / identity (free: the arena is contiguous). Anything else, or a graph
that branches, raises `Unsupported` saying which node and why; `runtime.convert` then keeps the
per-layer model. The program is planned for the example's shape; `FusedModel` runs other inputs through
the per-layer model.
"""

from __future__ import annotations

import math
import operator

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from . import codes as codes_mod
from . import kernels
from .codes import CodedMatrix
from .panels import PanelMatrix
from .rowtables import RowTableMatrix
from .layers import CodedLinear, SparseConv2d, SparseLinear, SparseMatrix

# Op codes (column 0 of a program row); the other columns are documented at each builder below.
LINEAR_CSR, LINEAR_CSR_CODED, LINEAR_DENSE, LINEAR_CODES, CONV_CSR, CONV_CSR_CODED, CONV_DENSE, RELU, MAXPOOL, \
    AVGPOOL = range(1, 11)
WIDTH = 32  # columns of a program row
ALIGN = 16  # pool and arena segments start on 64-byte lines (16 floats)


class Unsupported(ValueError):
    """The model is not a chain of ops `run_program` runs; the message says which node and why."""


# ---------------------------------------------------------------------------------------------------
# The compiled side: one call runs the whole program.

@numba.njit(cache=True, nogil=True)
def _dense_mm(w, xt, out):
    """out (rows, L) = w (rows, K) @ xt (K, L); zero weights (a pruned layer run dense) are skipped."""
    acc = np.empty(xt.shape[1], dtype=np.float32)
    for r in range(w.shape[0]):
        acc[:] = 0
        for k in range(w.shape[1]):
            v = w[r, k]
            if v != 0:
                src = xt[k]
                for b in range(len(acc)):
                    acc[b] += v * src[b]
        out[r, :] = acc


@numba.njit(cache=True, nogil=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols):
    """cols (C*kh*kw, ho*wo) of one image x (C, H, W), rows in F.unfold's order (channel, ky, kx)."""
    channels, height, width = x.shape
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = cols[(c * kh + i) * kw + j]
                for oy in range(ho):
                    iy = oy * sh - ph + i * dh
                    base = oy * wo
                    if iy < 0 or iy >= height:
                        row[base:base + wo] = 0
                        continue
                    for ox in range(wo):
                        ix = ox * sw - pw + j * dw
                        row[base + ox] = x[c, iy, ix] if 0 <= ix < width else np.float32(0)


@numba.njit(cache=True, nogil=True)
def _add_channel_bias(out, bias):
    for r in range(out.shape[0]):
        b = bias[r]
        for j in range(out.shape[1]):
            out[r, j] += b


@numba.njit(cache=True, nogil=True)
def _pool(x, out, kh, kw, sh, sw, average):
    """Max or average pooling of planes x (P, H, W) into out (P, ho, wo); no padding, floor mode."""
    scale = np.float32(1.0 / (kh * kw))
    for p in range(x.shape[0]):
        for oy in range(out.shape[1]):
            for ox in range(out.shape[2]):
                y0, x0 = oy * sh, ox * sw
                if average:
                    acc = np.float32(0.0)
                    for i in range(kh):
                        for j in range(kw):
                            acc += x[p, y0 + i, x0 + j]
                    out[p, oy, ox] = acc * scale
                else:
                    best = x[p, y0, x0]
                    for i in range(kh):
                        for j in range(kw):
                            v = x[p, y0 + i, x0 + j]
                            if v > best or v != v:  # NaN propagates, as torch's max pooling
                                best = v
                    out[p, oy, ox] = best


@numba.njit(cache=True, nogil=True)
def _seg(pool, offset, length):
    return pool[offset:offset + length]


@numba.njit(cache=True, nogil=True)
def _bias(f32, offset, length):
    return f32[offset:offset + length] if offset >= 0 else f32[0:0]


@numba.njit(cache=True, nogil=True)
def _linear(p, arena, f32, i32, u16, u8):
    """Linear ops. p: op, src, dst, rows, in, out, bias, then per kind (see `_Builder.linear_*`)."""
    op, src, dst, rows, width, height, bias_at = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    bias = _bias(f32, bias_at, height)
    if op == LINEAR_CODES:
        dense_codes = _seg(u8, p[7], height * p[8]).reshape((height, p[8]))
        tables = _seg(f32, p[9], p[10] * p[11]).reshape((p[10], p[11]))
        pairs = _seg(f32, p[12], 512).reshape((256, 2)) if p[12] >= 0 else f32[0:0].reshape((0, 2))
        per_row, half = p[13], p[14]
        xs = _seg(arena, src, rows * width).reshape((rows, width))
        outs = _seg(arena, dst, rows * height).reshape((rows, height))
        if rows == 1:
            codes_mod._mv_rows(dense_codes, tables, pairs, per_row, half, xs[0], bias, outs[0], 0, height)
        else:
            codes_mod._mm_rows(dense_codes, tables, per_row, half, xs, bias, outs, 0, height)
        return
    if rows > 1:
        _linear_batch(p, arena, f32, i32, u16, u8, bias)
        return
    for b in range(rows):
        x = _seg(arena, src + b * width, width)
        out = _seg(arena, dst + b * height, height)
        if op == LINEAR_DENSE:
            w = _seg(f32, p[7], height * width)
            for r in range(height):
                acc = codes_mod._dot(w[r * width:(r + 1) * width], x)
                out[r] = acc + bias[r] if bias_at >= 0 else acc
            continue
        nnz, ahead = p[9], p[11]
        indptr = _seg(i32, p[7], height + 1)
        if op == LINEAR_CSR:
            values = _seg(f32, p[10], nnz)
            if p[12]:
                kernels._mv_rows(indptr, _seg(i32, p[8], nnz), values, x, bias, out, 0, height, ahead)
            else:
                kernels._mv_rows(indptr, _seg(u16, p[8], nnz), values, x, bias, out, 0, height, ahead)
        else:
            codes = _seg(u8, p[10], nnz)
            codebook = _seg(f32, p[13], p[14])
            if p[12]:
                kernels._mv_rows_coded(indptr, _seg(i32, p[8], nnz), codes, codebook, x, bias, out, 0, height, ahead)
            else:
                kernels._mv_rows_coded(indptr, _seg(u16, p[8], nnz), codes, codebook, x, bias, out, 0, height, ahead)


@numba.njit(cache=True, nogil=True)
def _linear_batch(p, arena, f32, i32, u16, u8, bias):
    """A dense or CSR Linear op on several rows: dense through BLAS, CSR through the batched kernels on
    the input transposed into scratch (p[15]: (in, rows); p[16]: (out, rows))."""
    op, src, dst, rows, width, height, bias_at = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
    xs = _seg(arena, src, rows * width).reshape((rows, width))
    outs = _seg(arena, dst, rows * height).reshape((rows, height))
    if op == LINEAR_DENSE:
        w = _seg(f32, p[7], height * width).reshape((height, width))
        np.dot(xs, w.T, outs)
    else:
        xt = _seg(arena, p[15], width * rows).reshape((width, rows))
        ot = _seg(arena, p[16], height * rows).reshape((height, rows))
        for b in range(rows):
            for j in range(width):
                xt[j, b] = xs[b, j]
        _csr_mm(op != LINEAR_CSR, p[12], _seg(i32, p[7], height + 1), p[8], p[10], p[13], p[14], p[9], xt, ot,
                f32, i32, u16, u8)
        for b in range(rows):
            for r in range(height):
                outs[b, r] = ot[r, b]
    if bias_at >= 0:
        for b in range(rows):
            for r in range(height):
                outs[b, r] += bias[r]


@numba.njit(cache=True, nogil=True)
def _csr_mm(coded, wide, indptr, cols_at, values_at, codebook_at, k, nnz, x, out, f32, i32, u16, u8):
    """out = W x for a CSR weight in the arena (the Linear and the lowered Conv ops share it): fp32 values or
    uint8 codes into a ``k``-entry codebook, int32 (``wide``) or uint16 columns."""
    rows = len(indptr) - 1
    if coded:
        codes, codebook = _seg(u8, values_at, nnz), _seg(f32, codebook_at, k)
        if wide:
            kernels._mm_rows_coded(indptr, _seg(i32, cols_at, nnz), codes, codebook, x, out, 0, rows, 0)
        else:
            kernels._mm_rows_coded(indptr, _seg(u16, cols_at, nnz), codes, codebook, x, out, 0, rows, 0)
    else:
        values = _seg(f32, values_at, nnz)
        if wide:
            kernels._mm_rows(indptr, _seg(i32, cols_at, nnz), values, x, out, 0, rows, 0)
        else:
            kernels._mm_rows(indptr, _seg(u16, cols_at, nnz), values, x, out, 0, rows, 0)


@numba.njit(cache=True, nogil=True)
def _conv(p, arena, f32, i32, u16, u8):
    """Conv ops. p: op, src, dst, batch, C, H, W, out channels, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
    scratch, bias, then the weight (see `_Builder.conv`)."""
    op, src, dst, batch, channels, height, width, rows = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    kh, kw, sh, sw, ph, pw, dh, dw, ho, wo = p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[16], p[17]
    depth, plane = channels * kh * kw, ho * wo
    cols = _seg(arena, p[18], depth * plane).reshape((depth, plane))
    bias_at = p[19]
    for b in range(batch):
        x = _seg(arena, src + b * channels * height * width, channels * height * width).reshape((channels, height, width))
        out = _seg(arena, dst + b * rows * plane, rows * plane).reshape((rows, plane))
        _im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, cols)
        if op == CONV_DENSE:
            _dense_mm(_seg(f32, p[20], rows * depth).reshape((rows, depth)), cols, out)
        else:
            _csr_mm(op != CONV_CSR, p[24], _seg(i32, p[20], rows + 1), p[21], p[23], p[25], p[26], p[22], cols, out,
                    f32, i32, u16, u8)
        if bias_at >= 0:
            _add_channel_bias(out, _seg(f32, bias_at, rows))


@numba.njit(cache=True, nogil=True)
def run_program(program, arena, x, out, f32, i32, u16, u8):
    """Run every op of ``program`` on input ``x``, the result into ``out`` (fp32, C-contiguous, any shape:
    flattened here, not in Python, where each reshape costs ~0.2 us of a ~10 us call)."""
    flat = x.reshape(-1)
    arena[:len(flat)] = flat
    for t in range(program.shape[0]):
        p = program[t]
        op = p[0]
        if op <= LINEAR_CODES:
            _linear(p, arena, f32, i32, u16, u8)
        elif op <= CONV_DENSE:
            _conv(p, arena, f32, i32, u16, u8)
        elif op == RELU:
            src, dst = _seg(arena, p[1], p[3]), _seg(arena, p[2], p[3])
            for j in range(len(src)):
                v = src[j]
                dst[j] = v if v > 0 or v != v else np.float32(0)
        else:  # MAXPOOL, AVGPOOL
            planes, height, width, ho, wo = p[3], p[4], p[5], p[10], p[11]
            _pool(_seg(arena, p[1], planes * height * width).reshape((planes, height, width)),
                  _seg(arena, p[2], planes * ho * wo).reshape((planes, ho, wo)), p[6], p[7], p[8], p[9], op == AVGPOOL)
    last = program[program.shape[0] - 1, 2] if program.shape[0] > 0 else 0
    result = out.reshape(-1)
    result[:] = arena[last:last + len(result)]


# ---------------------------------------------------------------------------------------------------
# The Python side: trace, check the chain, lay out pools and arena.

class _Pool:
    """Arrays of one dtype laid end to end (each segment 64-byte aligned); offsets into the result."""

    def __init__(self, dtype):
        self.dtype, self.parts, self.size = dtype, [], 0

    def add(self, array: np.ndarray) -> int:
        at = self.size
        flat = np.ascontiguousarray(array, dtype=self.dtype).reshape(-1)
        self.parts.append((at, flat))
        self.size = at + -(-len(flat) // ALIGN) * ALIGN
        return at

    def array(self) -> np.ndarray:
        pool = np.zeros(max(self.size, 1), dtype=self.dtype)
        for at, flat in self.parts:
            pool[at:at + len(flat)] = flat
        return pool


class _Builder:
    """Program rows and pools, built op by op; the arena is handed out in aligned slices."""

    def __init__(self):
        self.rows: list[list[int]] = []
        self.f32, self.i32, self.u16, self.u8 = _Pool(np.float32), _Pool(np.int32), _Pool(np.uint16), _Pool(np.uint8)
        self.arena = 0

    def buffer(self, length: int) -> int:
        at = self.arena
        self.arena += -(-length // ALIGN) * ALIGN
        return at

    def emit(self, *values: int) -> None:
        row = [int(v) for v in values]
        self.rows.append(row + [0] * (WIDTH - len(row)))

    def bias(self, bias: torch.Tensor | None) -> int:
        return -1 if bias is None else self.f32.add(bias.detach().float().numpy())

    def _csr(self, matrix: SparseMatrix) -> tuple[int, int, int]:
        """(indptr, cols, wide): where the row pointers and column indices went."""
        wide = matrix.cols.dtype != np.uint16
        return self.i32.add(matrix.indptr), (self.i32 if wide else self.u16).add(matrix.cols), int(wide)

    def linear(self, module: nn.Module, src: int, rows: int) -> int:
        """A Linear layer of any kind on ``rows`` input rows at ``src``; returns where its output is."""
        if isinstance(module, SparseLinear) and module.matrix.codes is not None and module.matrix.codes.dtype != np.uint8:
            raise Unsupported("a CSR layer with more than 256 shared values (uint16 codes)")
        width, height = module.in_features, module.out_features
        dst = self.buffer(rows * height)
        bias = self.bias(module.bias)
        head = (src, dst, rows, width, height, bias)
        if isinstance(module, SparseLinear):
            m = module.matrix
            indptr, cols, wide = self._csr(m)
            # 15, 16: the batched kernel's transposed input and output (several rows only)
            scratch = (self.buffer(width * rows), self.buffer(height * rows)) if rows > 1 else (-1, -1)
            if m.codes is None:  # 7 indptr, 8 cols, 9 nnz, 10 values, 11 prefetch, 12 wide
                self.emit(LINEAR_CSR, *head, indptr, cols, m.nnz, self.f32.add(m.values), m.prefetch_ahead, wide,
                          0, 0, *scratch)
            else:  # ... 10 codes, 13 codebook, 14 its length
                self.emit(LINEAR_CSR_CODED, *head, indptr, cols, m.nnz, self.u8.add(m.codes), m.prefetch_ahead, wide,
                          self.f32.add(m.codebook), len(m.codebook), *scratch)
        elif isinstance(module, CodedLinear):
            m: CodedMatrix = _row_codes(module.matrix)  # 7 codes, 8 bytes a row, 9 codebook (rows, k) at 10, 11, 12 pairs
            pairs = self.f32.add(m.pairs) if len(m.pairs) else -1  # 13 per_row, 14 half
            self.emit(LINEAR_CODES, *head, self.u8.add(m.codes), m.codes.shape[1], self.f32.add(m.codebook),
                      m.codebook.shape[0], m.codebook.shape[1], pairs, m.per_row, m.half)
        else:  # nn.Linear: 7 weight
            self.emit(LINEAR_DENSE, *head, self.f32.add(module.weight.detach().float().numpy()))
        return dst

    def conv(self, module: nn.Module, src: int, shape_in, shape_out) -> int:
        batch, channels, height, width = shape_in
        _, rows, ho, wo = shape_out
        geometry = _conv_geometry(module)
        kh, kw = geometry["kernel_size"]
        dst = self.buffer(batch * rows * ho * wo)
        scratch = self.buffer(channels * kh * kw * ho * wo)
        head = (src, dst, batch, channels, height, width, rows, kh, kw, *geometry["stride"], *geometry["padding"],
                *geometry["dilation"], ho, wo, scratch, self.bias(module.bias))
        if isinstance(module, SparseConv2d):
            m = module.matrix
            if m.codes is not None and m.codes.dtype != np.uint8:
                raise Unsupported("a CSR layer with more than 256 shared values (uint16 codes)")
            indptr, cols, wide = self._csr(m)
            if m.codes is None:  # 20 indptr, 21 cols, 22 nnz, 23 values, 24 wide
                self.emit(CONV_CSR, *head, indptr, cols, m.nnz, self.f32.add(m.values), wide)
            else:  # ... 23 codes, 25 codebook, 26 its length
                self.emit(CONV_CSR_CODED, *head, indptr, cols, m.nnz, self.u8.add(m.codes), wide,
                          self.f32.add(m.codebook), len(m.codebook))
        else:  # 20 weight (out, C*kh*kw)
            self.emit(CONV_DENSE, *head, self.f32.add(module.weight.detach().float().reshape(rows, -1).numpy()))
        return dst

    def relu(self, src: int, length: int) -> int:
        self.emit(RELU, src, src, length)  # in place: the input has no other reader in a chain
        return src

    def pool(self, kind: int, src: int, shape_in, shape_out, kernel, stride) -> int:
        batch, channels, height, width = shape_in
        ho, wo = shape_out[2], shape_out[3]
        dst = self.buffer(batch * channels * ho * wo)
        self.emit(kind, src, dst, batch * channels, height, width, *kernel, *stride, ho, wo)
        return dst


def _row_codes(matrix) -> CodedMatrix:
    """A coded layer's codes in the row layout the chain's op reads (panels are repacked; the chain keeps
    its own copy of every weight anyway)."""
    if isinstance(matrix, (PanelMatrix, RowTableMatrix)) and matrix.precision != "fp32":
        raise Unsupported(f"a layer run at precision={matrix.precision!r} (the chain multiplies in fp32)")
    if isinstance(matrix, PanelMatrix):
        return CodedMatrix.from_index(torch.from_numpy(matrix.table), torch.from_numpy(matrix.index()))
    if isinstance(matrix, RowTableMatrix):
        if matrix.outliers is not None:
            raise Unsupported("a layer with exact outliers (the chain's codes op reads codes only)")
        tables = matrix.tables if matrix.per_row else matrix.tables[0]
        return CodedMatrix.from_index(torch.from_numpy(tables), torch.from_numpy(matrix.index()))
    return matrix


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _conv_geometry(module: nn.Module) -> dict:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise Unsupported(f"Conv2d with groups={module.groups}, padding={module.padding!r}, padding_mode="
                              f"{module.padding_mode!r} (the chain runs groups=1 with numeric zero padding)")
    elif isinstance(module.padding, str):
        raise Unsupported(f"a SparseConv2d with padding={module.padding!r}")
    return {k: _pair(getattr(module, k)) for k in ("kernel_size", "stride", "padding", "dilation")}


# Leaves of the trace: deepzip's layers run numpy inside and cannot be traced through.
LEAVES = (SparseLinear, CodedLinear, SparseConv2d)
FREE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)
FREE_METHODS = {"flatten", "view", "reshape", "contiguous"}
FREE_FUNCTIONS = {torch.flatten, torch.reshape, F.dropout}
RELU_FUNCTIONS = {F.relu, torch.relu}
POOL_FUNCTIONS = {F.max_pool2d: MAXPOOL, F.avg_pool2d: AVGPOOL}
SUPPORTED = ("Linear, Conv2d (groups=1), ReLU, MaxPool2d / AvgPool2d (no padding, floor mode), flatten / view / "
             "reshape, dropout (eval) and identity")


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


class Trace:
    """A model's graph as a chain: (node, module or None) in order with each node's input and output shapes."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        if example.dtype != torch.float32:
            raise Unsupported(f"the chain runs fp32 inputs, the example is {example.dtype}")
        try:
            graph_module = fx.GraphModule(model, _Tracer().trace(model))
            with torch.no_grad():
                ShapeProp(graph_module).propagate(example)
        except Unsupported:
            raise
        except Exception as error:  # noqa: BLE001 - any trace failure means "not a chain we can run"
            raise Unsupported(f"torch.fx could not trace the model ({type(error).__name__}: {error})") from error
        self.model, self.input_shape = model, tuple(example.shape)
        self.steps = _chain_steps(graph_module)
        self.layers = [n.target for n, _ in self.steps if n.op == "call_module"
                       and isinstance(model.get_submodule(n.target), (nn.Linear, nn.Conv2d, *LEAVES))]
        self.output_shape = tuple(self.steps[-1][0].meta["tensor_meta"].shape) if self.steps else self.input_shape


def _chain_steps(graph_module: fx.GraphModule) -> list[tuple[fx.Node, tuple]]:
    """The compute nodes in order, each with its input shape; Unsupported unless the graph is one chain.
    Shape reads (``x.size(0)``, ``x.shape[1]``) may branch off: the plan is for one input shape."""
    nodes = list(graph_module.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise Unsupported(f"the model takes {len(inputs)} inputs; the chain runs models of one tensor input")
    current, steps = inputs[0], []
    for node in nodes:
        if node.op == "placeholder" or _reads_shape(node):
            continue
        tensors = [a for a in node.all_input_nodes if not _reads_shape(a)]
        readers = [u for u in current.users if not _reads_shape(u)]
        where = f"the graph is not a chain at node {node.name!r} ({node.op} {_describe(node.target)}): "
        if len(readers) != 1:
            raise Unsupported(where + f"{current.name!r} is read by {len(readers)} nodes "
                              f"({', '.join(u.name for u in readers)}), as in a residual or a branch")
        if tensors != [current]:
            raise Unsupported(where + f"it reads {', '.join(a.name for a in tensors)}, not only {current.name!r} before it")
        if node.op == "output":
            break
        meta = node.meta.get("tensor_meta")
        if not isinstance(meta, TensorMetadata) or meta.dtype != torch.float32:
            raise Unsupported(f"node {node.name!r} ({node.op} {_describe(node.target)}) does not give one fp32 tensor")
        steps.append((node, tuple(current.meta["tensor_meta"].shape)))
        current = node
    return steps


def _reads_shape(node: fx.Node) -> bool:
    """A node that reads a tensor's shape (or picks from one): a constant for a planned input shape."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim"):
        return True
    return (node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], fx.Node)
            and _reads_shape(node.args[0]))


def _describe(target) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def _arg(node: fx.Node, position: int, name: str, default):
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(name, default)


def _pool_step(node: fx.Node, module: nn.Module | None) -> tuple[int, tuple, tuple]:
    """(op, kernel, stride) of a pooling node; Unsupported for options the kernel does not have."""
    if module is not None:
        kind = MAXPOOL if isinstance(module, nn.MaxPool2d) else AVGPOOL
        kernel, stride, padding = module.kernel_size, module.stride, module.padding
        ceil, extra = module.ceil_mode, getattr(module, "dilation", 1) not in (1, (1, 1)) or getattr(module, "return_indices", False)
        if kind == AVGPOOL and module.divisor_override is not None:
            extra = True
    else:
        kind = POOL_FUNCTIONS[node.target]
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None) or kernel
        padding = _arg(node, 3, "padding", 0)
        if kind == MAXPOOL:
            ceil = _arg(node, 5, "ceil_mode", False)
            extra = _arg(node, 4, "dilation", 1) not in (1, (1, 1)) or _arg(node, 6, "return_indices", False)
        else:
            ceil = _arg(node, 4, "ceil_mode", False)
            extra = _arg(node, 6, "divisor_override", None) is not None
    if _pair(padding) != (0, 0) or ceil or extra:
        raise Unsupported(f"pooling at node {node.name!r} with padding, ceil_mode, dilation, indices or a divisor "
                          "override (the chain runs plain pooling)")
    return kind, _pair(kernel), _pair(stride or kernel)


def _is_free(node: fx.Node, module: nn.Module | None) -> bool:
    if module is not None:
        return isinstance(module, FREE_MODULES)
    if node.op == "call_method":
        return node.target in FREE_METHODS
    return node.target in FREE_FUNCTIONS


class Chain:
    """A compiled program for one input shape: ``chain(x)`` runs it in one call; `run_program` does the work."""

    def __init__(self, trace: Trace, forms: dict[str, nn.Module] | None = None):
        """``forms``: layer name -> the module to run there instead of the model's own (to try a layer's
        sparse, codes or dense form inside the chain)."""
        forms = forms or {}
        self.input_shape, self.output_shape = trace.input_shape, trace.output_shape
        self.layers = {name: forms.get(name, trace.model.get_submodule(name)) for name in trace.layers}
        b = _Builder()
        at = b.buffer(math.prod(self.input_shape))
        for node, shape_in in trace.steps:
            shape_out = tuple(node.meta["tensor_meta"].shape)
            module = self.layers.get(node.target) if node.op == "call_module" else None
            if node.op == "call_module" and module is None:
                module = trace.model.get_submodule(node.target)
            at = self._step(b, node, module, at, shape_in, shape_out)
        self.program = np.array(b.rows, dtype=np.int64).reshape(-1, WIDTH)
        if not len(self.program):
            raise Unsupported("the model runs no op the chain would compile")
        self.arena = np.zeros(b.arena, dtype=np.float32)
        self.pools = (b.f32.array(), b.i32.array(), b.u16.array(), b.u8.array())
        self.size = math.prod(self.output_shape)

    @staticmethod
    def _step(b: _Builder, node: fx.Node, module, at: int, shape_in, shape_out) -> int:
        what = f"node {node.name!r} ({node.op} {_describe(node.target)})"
        if module is not None and isinstance(module, (nn.Linear, SparseLinear, CodedLinear)):
            return b.linear(module, at, math.prod(shape_in) // shape_in[-1])
        if module is not None and isinstance(module, (nn.Conv2d, SparseConv2d)):
            if len(shape_in) != 4:
                raise Unsupported(f"{what}: a convolution needs a (batch, channels, height, width) input")
            return b.conv(module, at, shape_in, shape_out)
        if isinstance(module, nn.ReLU) or (module is None and (node.target in RELU_FUNCTIONS or node.target == "relu")):
            return b.relu(at, math.prod(shape_in))
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) or (module is None and node.target in POOL_FUNCTIONS):
            if len(shape_in) != 4:
                raise Unsupported(f"{what}: pooling needs a (batch, channels, height, width) input")
            kind, kernel, stride = _pool_step(node, module)
            return b.pool(kind, at, shape_in, shape_out, kernel, stride)
        if _is_free(node, module):
            if math.prod(shape_in) != math.prod(shape_out):
                raise Unsupported(f"{what} changes the number of elements")
            return at
        raise Unsupported(f"{what} is not supported; the chain runs {SUPPORTED}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The output for ``x`` (fp32, contiguous, CPU, of the planned shape; `FusedModel` checks)."""
        return self.run(np.ascontiguousarray(x.detach().numpy(), dtype=np.float32))

    def run(self, x: np.ndarray) -> torch.Tensor:
        out = np.empty(self.output_shape, dtype=np.float32)
        f32, i32, u16, u8 = self.pools
        run_program(self.program, self.arena, x, out, f32, i32, u16, u8)
        return torch.from_numpy(out)

    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.pools)


def compile_chain(model: nn.Module, example: torch.Tensor, forms: dict[str, nn.Module] | None = None) -> Chain:
    """The model as one compiled program for ``example``'s shape; `Unsupported` (a ValueError) says why not."""
    return Chain(Trace(model, example), forms)


class FusedModel(nn.Module):
    """A converted model with its chain: inputs of the planned shape (fp32, contiguous) run in one
    compiled call; anything else runs through ``model``, the per-layer converted model (a submodule)."""

    def __init__(self, model: nn.Module, chain: Chain):
        super().__init__()
        self.model = model
        self.chain = chain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Batch 1 is latency-bound: a handful of cheap checks, then one compiled call.
        chain = self.chain
        if (x.shape == chain.input_shape and x.dtype == torch.float32 and x.is_cpu and not x.requires_grad
                and x.is_contiguous()):
            return chain.run(x.numpy())
        return self.model(x)

    def extra_repr(self) -> str:
        return f"chain of {len(self.chain.program)} ops for input {self.chain.input_shape}, {self.chain.nbytes():,} bytes"
