"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
One-Shot"): a pure function of a Linear weight and its inputs' Gram matrix.

The layer's reconstruction error ``||W X^T - W' X^T||^2`` is a quadratic form in each row with Hessian
``H = 2 X^T X``. Columns are swept left to right: each pruned weight's error is spread over the columns
to its right by the Optimal Brain Surgeon update, using the upper Cholesky factor of the damped
inverse Hessian (``H + lambda I``, lambda = ``percdamp`` times the mean diagonal). Masks are chosen
adaptively per block of ``blocksize`` columns by the OBS saliency ``w^2 / [H^-1]_cc^2``, on the weights
as the sweep has updated them; N:M masks are chosen per group as the sweep reaches it.

Unlike the reference code, which thresholds each block at ``sparsity``, each block prunes an exact
count (the cumulative share, rounded), so a layer (``compare='layer'``) or every row (``'row'``) ends
at exactly the sparsity that magnitude pruning would give it.
"""

from __future__ import annotations

import torch

from . import criteria


def damped_inverse_factor(gram: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor U of ``(2 X^T X + lambda I)^-1`` (U^T U = H^-1), computed in float64.

    Inputs that were always zero (a zero diagonal) get a unit diagonal, as in the reference, so the
    matrix stays positive definite. If the factorisation still fails, the damping grows tenfold (up to
    three times) before giving up with a ValueError.
    """
    hessian = 2.0 * gram.detach().double()
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    mean_diag = torch.diagonal(hessian).mean()
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(4):
        damped = hessian + (percdamp * 10 ** attempt) * mean_diag * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError("SparseGPT: the inputs' Hessian is not positive definite even with 1000x damping; "
                     "give more (or more varied) calibration data")


def _pruned_before(cols: int, sparsity: float) -> int:
    """How many of the first ``cols`` columns a row prunes: each block prunes the difference, so the
    counts add up to exactly what `criteria.kept_count` prunes of the whole row."""
    return cols - criteria.kept_count(cols, sparsity)


def sparsegpt(weight: torch.Tensor, gram: torch.Tensor, sparsity: float = 0.5, n: int = 0, m: int = 0,
              compare: str = "layer", blocksize: int = 128, percdamp: float = 0.01,
              pruned: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(updated weight, keep-mask) for a (out, in) ``weight`` whose inputs have Gram matrix ``gram`` (in, in).

    ``n`` > 0: keep ``n`` of every ``m`` consecutive inputs (``blocksize`` must be a multiple of ``m``);
    else prune ``sparsity`` of each block per row (``compare='row'``) or across the rows (``'layer'``).
    ``pruned``: an installed keep-mask; its pruned positions are pruned first (and counted). The
    returned weight is exactly +0.0 where the mask is False and has the weight's dtype.
    """
    if weight.dim() != 2 or gram.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"SparseGPT needs a 2-D weight and an in x in Gram matrix; got weight "
                         f"{tuple(weight.shape)} and Gram {tuple(gram.shape)}")
    if compare not in ("row", "layer"):
        raise ValueError(f"compare={compare!r} is not allowed; choose from row, layer")
    if n and blocksize % m:
        raise ValueError(f"SparseGPT with N:M needs blocksize a multiple of M; got blocksize {blocksize}, M={m}")
    criteria.check_sparsity(sparsity)
    rows, cols = weight.shape
    w = weight.detach().float().clone()
    hinv = damped_inverse_factor(gram.to(w.device), percdamp).float()
    forced = None if pruned is None else ~pruned.to(device=w.device, dtype=torch.bool)
    keep = torch.ones_like(w, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        h1 = hinv[i1:i2, i1:i2]
        d1 = torch.diagonal(h1)
        err1 = torch.zeros_like(w1)
        prune1 = torch.zeros_like(w1, dtype=torch.bool)
        if forced is not None:
            prune1 |= forced[:, i1:i2]
        if not n:
            prune1 |= _block_mask(w1, d1, forced, i1, i2, sparsity, compare)
        for i in range(i2 - i1):
            if n and i % m == 0:
                group = slice(i, min(i + m, i2 - i1))
                saliency = w1[:, group] ** 2 / d1[group].unsqueeze(0) ** 2
                if forced is not None:
                    saliency = saliency.masked_fill(forced[:, i1:i2][:, group], -1.0)
                count = max(0, saliency.shape[1] - n)
                if count:
                    order = torch.sort(saliency, dim=1, stable=True).indices[:, :count]
                    prune1[:, group] |= torch.zeros_like(saliency, dtype=torch.bool).scatter_(1, order, True)
            col = w1[:, i]
            q = col.masked_fill(prune1[:, i], 0.0)
            err = (col - q) / h1[i, i]
            # OBS: spread this column's error over the columns to its right within the block...
            w1[:, i:] -= err.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        keep[:, i1:i2] = ~prune1
        # ...and, once per block, over every column after it.
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    w = w.masked_fill(~keep, 0.0)  # +0.0 exactly
    return w.to(weight.dtype), keep


def _block_mask(w1: torch.Tensor, d1: torch.Tensor, forced: torch.Tensor | None, i1: int, i2: int,
                sparsity: float, compare: str) -> torch.Tensor:
    """The block's prune-mask by OBS saliency, lowest first; already-pruned positions count first."""
    saliency = w1 ** 2 / d1.unsqueeze(0) ** 2
    if forced is not None:
        saliency = saliency.masked_fill(forced[:, i1:i2], -1.0)
    rows, width = saliency.shape
    if compare == "row":
        count = _pruned_before(i2, sparsity) - _pruned_before(i1, sparsity)
        order = torch.sort(saliency, dim=1, stable=True).indices[:, :count]
        return torch.zeros_like(saliency, dtype=torch.bool).scatter_(1, order, True)
    count = _pruned_before(rows * i2, sparsity) - _pruned_before(rows * i1, sparsity)
    flat = torch.zeros(rows * width, dtype=torch.bool, device=w1.device)
    flat[torch.sort(saliency.reshape(-1), stable=True).indices[:count]] = True
    return flat.reshape(rows, width)
