"""Error feedback when assigning weights to shared values (GPTQ's column sweep, Frantar et al. 2023).

A Linear's output error on inputs X is ||X (W - Q)^T||^2 = tr((W - Q) H (W - Q)^T) with H = X^T X.
Rounding the columns one at a time, in order, and moving each column's rounding error onto the
columns not yet rounded through the upper Cholesky factor U of H^-1 (the OBS update) makes the later
columns compensate for the earlier ones. Here the rounding is "nearest shared value" (a layer or
per-row codebook fixed beforehand by k-means) instead of GPTQ's uniform grid. Pure functions.
"""

from __future__ import annotations

import torch


def inverse_hessian_factor(gram: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp x mean(diag H) I)^-1 for the Gram matrix ``gram`` (float64).

    A column whose input is always zero (H_jj = 0) gets H_jj = 1: its weight never reaches the output,
    and nothing is propagated through it.
    """
    if gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square matrix, got {tuple(gram.shape)}")
    h = gram.detach().double().cpu().clone()
    if not torch.isfinite(h).all():
        raise ValueError("gram has non-finite entries")
    dead = torch.diagonal(h) <= 0
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    diag = torch.diagonal(h)
    diag += damp * float(diag.mean())
    factor, info = torch.linalg.cholesky_ex(h)
    if int(info):
        raise ValueError("gram is not positive definite even after damping; raise damp")
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)


def _nearest(column: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of each row's nearest entry (first on ties) in its codebook row ([rows, k]) or the layer codebook ([1, k])."""
    return torch.argmin((column[:, None] - codebook).abs(), dim=1)


def feedback_assign(weight: torch.Tensor, codebook: torch.Tensor, gram: torch.Tensor, alive: torch.Tensor | None = None,
                    exact: torch.Tensor | None = None, damp: float = 0.01,
                    block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, swept weights): the codebook index of each entry of ``weight`` ([rows, cols]), chosen column
    by column with the rounding error fed forward, and the weights as the sweep left them.

    ``codebook``: [k] (one per layer) or [rows, k]. ``gram``: [cols, cols], the layer inputs' X^T X.
    ``alive`` (bool): pruned entries (False) are rounded to exactly 0 and index 0. ``exact`` (bool):
    outliers kept exactly; they take the value the sweep gives them (no rounding error) and index 0.
    ``block``: columns whose updates are batched (GPTQ's lazy batch update: the same result up to
    floating-point rounding, in matrix products instead of one rank-1 update per column).
    """
    if weight.dim() != 2 or gram.shape != (weight.shape[1], weight.shape[1]):
        raise ValueError(f"error feedback needs a [rows, cols] weight and a [cols, cols] gram; got "
                         f"{tuple(weight.shape)} and {tuple(gram.shape)}")
    rows, cols = weight.shape
    book = codebook.detach().double().cpu()
    book = book[None, :] if book.dim() == 1 else book
    if book.shape[0] not in (1, rows):
        raise ValueError(f"codebook {tuple(codebook.shape)} is neither one per layer nor one per row of {rows}")
    u = inverse_hessian_factor(gram, damp)
    w = weight.detach().double().cpu().clone()
    alive = torch.ones(rows, cols, dtype=torch.bool) if alive is None else alive.cpu()
    exact = torch.zeros(rows, cols, dtype=torch.bool) if exact is None else exact.cpu()
    index = torch.zeros(rows, cols, dtype=torch.int64)
    rows_range = torch.arange(rows)
    which = rows_range if book.shape[0] == rows else torch.zeros(rows, dtype=torch.int64)
    zero_f, zero_i = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    for start in range(0, cols, block):  # GPTQ's lazy batch update: rank-1 updates inside a block of
        end = min(start + block, cols)     # columns, one matrix product for the columns after it
        errors = torch.zeros(rows, end - start, dtype=torch.float64)
        part = w[:, start:end].T.contiguous()  # [columns, rows]: each column contiguous
        ub = u[start:end, start:end]
        for i in range(end - start):
            j = start + i
            column = part[i]
            nearest = _nearest(column, book)
            rounded = torch.where(alive[:, j], book[which, nearest], zero_f)
            rounded = torch.where(exact[:, j], column, rounded)
            index[:, j] = torch.where(alive[:, j] & ~exact[:, j], nearest, zero_i)
            error = (column - rounded) / ub[i, i]
            part[i + 1:] -= ub[i, i + 1:, None] * error[None, :]
            part[i] = rounded
            errors[:, i] = error
        w[:, start:end] = part.T
        if end < cols:
            w[:, end:] -= errors @ u[start:end, end:]
    return index, w.float()
