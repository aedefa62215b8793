"""Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models") and
OWL's outlier ratios (Yin et al. 2023): pure functions of a weight and its inputs' column norms.

Wanda's score of weight W_ij is ``|W_ij| * ||X_j||_2``, the size of its contribution to output i over
the calibration tokens; scores are compared within each output row (the paper's choice for LLMs), or
across the layer, or within N:M groups along the input dimension. No weight is updated.
"""

from __future__ import annotations

import torch

from . import criteria


def wanda_scores(weight: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2`` for a (out, in) weight and the inputs' squared column norms (in,)."""
    if weight.dim() != 2 or sq_norm.shape != (weight.shape[1],):
        raise ValueError(f"Wanda needs a 2-D weight and one squared norm per input feature; got weight "
                         f"{tuple(weight.shape)} and norms {tuple(sq_norm.shape)}")
    return weight.detach().abs().float() * sq_norm.to(weight.device).sqrt().float().unsqueeze(0)


def scores_mask(scores: torch.Tensor, sparsity: float, n: int = 0, m: int = 0, compare: str = "row") -> torch.Tensor:
    """The keep-mask of the highest ``scores``: N:M groups when ``n`` > 0, else ``sparsity`` per row
    (``compare='row'``) or over the whole layer (``'layer'``)."""
    if n:
        return criteria.nm_mask(scores, n, m)
    if compare == "row":
        return criteria.row_mask(scores, sparsity)
    if compare == "layer":
        return criteria.topk_mask(scores, criteria.kept_count(scores.numel(), sparsity))
    raise ValueError(f"compare={compare!r} is not allowed; choose from row, layer")


def wanda_mask(weight: torch.Tensor, sq_norm: torch.Tensor, sparsity: float, n: int = 0, m: int = 0,
               compare: str = "row", pruned: torch.Tensor | None = None) -> torch.Tensor:
    """Wanda's keep-mask. ``pruned`` (a keep-mask already installed): those positions score lowest, so
    they stay pruned and count towards the sparsity."""
    scores = wanda_scores(weight, sq_norm)
    if pruned is not None:
        scores = scores.masked_fill(~pruned.to(scores.device), -1.0)
    mask = scores_mask(scores, sparsity, n, m, compare)
    return mask if pruned is None else mask & pruned.to(mask.device)


def outlier_ratio(scores: list[torch.Tensor], threshold: float = 5.0) -> float:
    """OWL's layerwise outlier ratio: the fraction of all ``scores`` (the Wanda scores of one block's
    layers, pooled) above ``threshold`` times their mean."""
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    if flat.numel() == 0:
        raise ValueError("outlier_ratio needs at least one score")
    return float((flat > threshold * flat.mean()).sum()) / flat.numel()
