"""Pure mask functions on tensors: each takes weights (or scores) and returns a bool keep-mask.

``True`` means kept. Ties are broken by position (stable sort), so every function is deterministic.
"""

from __future__ import annotations

import math

import torch


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1), got {type(sparsity).__name__}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {sparsity}")
    return float(sparsity)


def kept_count(numel: int, sparsity: float, round_to: int = 1) -> int:
    """How many of ``numel`` weights a layer keeps at ``sparsity``, optionally a multiple of ``round_to``."""
    keep = numel - int(round(numel * sparsity))
    if round_to > 1 and keep < numel:
        keep = min(numel, max(round_to, int(round(keep / round_to)) * round_to))
    return keep


def topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Keep the ``keep`` highest scores (ties: the earlier position wins)."""
    flat = scores.detach().reshape(-1)
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"keep must be in [0, {flat.numel()}], got {keep}")
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    order = torch.sort(flat.float(), descending=True, stable=True).indices
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs()


def fraction_mask(weight: torch.Tensor, sparsity: float, round_to: int = 1) -> torch.Tensor:
    """Prune the fraction ``sparsity`` of smallest-magnitude weights."""
    check_sparsity(sparsity)
    return topk_mask(magnitude_scores(weight), kept_count(weight.numel(), sparsity, round_to))


def std_threshold_mask(weight: torch.Tensor, quality: float) -> torch.Tensor:
    """Deep Compression's layer-wise rule: prune ``|w| < quality * std(w)``."""
    if not quality >= 0:
        raise ValueError(f"quality must be >= 0, got {quality}")
    w = weight.detach()
    std = w.float().std() if w.numel() > 1 else torch.tensor(0.0, device=w.device)
    return w.abs() >= quality * std


def random_mask(shape: torch.Size | tuple, sparsity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The control: the same number kept as `fraction_mask`, at random positions."""
    check_sparsity(sparsity)
    numel = math.prod(shape)
    scores = torch.rand(numel, generator=generator)
    return topk_mask(scores, kept_count(numel, sparsity)).reshape(shape)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M sparsity: in every group of ``m`` consecutive weights along the input dimension keep ``n``.

    The input dimension is the flattened reduction dimension (``in`` for Linear, ``in*kh*kw`` for
    Conv). A last, shorter group keeps ``min(n, len)`` weights.
    """
    if not (isinstance(n, int) and isinstance(m, int)) or not 0 < n <= m:
        raise ValueError(f"N:M needs integers with 0 < N <= M, got {n}:{m}")
    if weight.dim() < 2:
        raise ValueError(f"N:M needs a weight with an input dimension, got shape {tuple(weight.shape)}")
    rows = weight.detach().reshape(weight.shape[0], -1).abs().float()
    width = rows.shape[1]
    pad = (-width) % m
    padded = torch.cat([rows, torch.full((rows.shape[0], pad), -1.0, device=rows.device)], dim=1)  # padding never kept
    groups = padded.reshape(rows.shape[0], -1, m)
    order = torch.sort(groups, dim=2, descending=True, stable=True).indices
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, order[..., :n], True)
    keep &= groups >= 0
    return keep.reshape(rows.shape[0], -1)[:, :width].reshape(weight.shape)


def unit_norms(weight: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """The norm of each output unit (row of a Linear, filter of a Conv, row of an Embedding)."""
    rows = weight.detach().reshape(weight.shape[0], -1).float()
    if norm == "l1":
        return rows.abs().sum(1)
    if norm == "l2":
        return rows.pow(2).sum(1).sqrt()
    raise ValueError(f"unknown norm {norm!r}; allowed: l1, l2")


def structured_mask(weight: torch.Tensor, sparsity: float, norm: str = "l1", round_to: int = 1) -> torch.Tensor:
    """Prune whole output units (rows / filters) with the smallest norms; returns a per-unit mask."""
    check_sparsity(sparsity)
    scores = unit_norms(weight, norm)
    return topk_mask(scores, max(1, kept_count(len(scores), sparsity, round_to)))


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the same number of lowest scores in every row (output unit): Wanda's per-output comparison.
    Each row of ``cols`` entries keeps ``kept_count(cols, sparsity)`` (ties: the earlier column wins)."""
    check_sparsity(sparsity)
    rows = scores.detach().reshape(scores.shape[0], -1).float()
    keep = kept_count(rows.shape[1], sparsity)
    order = torch.sort(rows, dim=1, descending=True, stable=True).indices
    mask = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, order[:, :keep], True)
    return mask.reshape(scores.shape)
