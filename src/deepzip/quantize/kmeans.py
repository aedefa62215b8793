"""1-D k-means for weight sharing (Han et al. 2016, section 3), as pure functions on tensors.

Lloyd's algorithm in one dimension on sorted data: the clusters of sorted centroids are contiguous
ranges of the sorted values, split at the midpoints, so each iteration is a ``searchsorted`` plus
prefix-sum differences: O(k log n) after one O(n log n) sort. ``optimal`` solves the problem exactly
by dynamic programming (Wang & Song 2011) on the distinct values, with divide-and-conquer rows.

Sensitivity-weighted k-means (SqueezeLLM, Kim et al. 2023) minimises sum_i s_i (w_i - c(w_i))^2 for
per-weight importances s_i >= 0 (the Fisher diagonal, or the calibration inputs' ||X_j||^2): the
prefix sums become weighted, each centroid the weighted mean of its cluster; in one dimension the
nearest centroid is still the best one, so assignment is unchanged. `kmeans_rows` runs the same
iterations on every row of a matrix at once (per-row codebooks); `kmeans_1d` is its one-row case.
"""

from __future__ import annotations

import numpy as np
import torch

from ._dp import optimal_centroids

INITS = ("linear", "density", "random", "optimal")
MAX_ITERS = 100


def check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 1..16, got {bits!r}")
    return bits


def _init(values: np.ndarray, weights: np.ndarray | None, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = values[0], values[-1]
    if init == "linear":  # evenly spaced over [min, max]: the paper's best (keeps large weights)
        return np.linspace(lo, hi, k)
    if init == "density":  # evenly spaced on the (importance-weighted) CDF: dense where weights are dense
        if weights is None:
            return np.quantile(values, (np.arange(k) + 0.5) / k)
        cdf = np.cumsum(weights)
        at = np.searchsorted(cdf, (np.arange(k) + 0.5) / k * cdf[-1], side="left")
        return values[np.minimum(at, len(values) - 1)]
    if init == "random":  # Forgy: k weights drawn at random
        return np.sort(rng.choice(values, size=k, replace=len(values) < k))
    raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")


def _gather(table: np.ndarray, at: np.ndarray) -> np.ndarray:
    return np.take_along_axis(table, at, axis=1)


def _lloyd(values: np.ndarray, weights: np.ndarray | None, lengths: np.ndarray, centroids: np.ndarray,
           iters: int) -> np.ndarray:
    """Lloyd iterations on each row of ``values`` (sorted; row r's first ``lengths[r]`` entries take part).

    An empty cluster (e.g. a linear-init centroid stranded in the gap that pruning leaves around zero;
    with importances, a cluster of zero total importance) is re-seeded at the middle of the cluster
    with the largest (weighted) squared error, so no codebook entry is wasted while some cluster could
    still be split. A row stops when its centroids move less than 1e-12.
    """
    rows = len(values)
    full = bool((lengths == values.shape[1]).all())
    tail = None if full else np.arange(values.shape[1])[None, :] >= lengths[:, None]
    clean = values if full else np.where(tail, 0.0, values)
    zero = np.zeros((rows, 1))
    prefix_w = None if weights is None else np.concatenate([zero, np.cumsum(weights, axis=1)], axis=1)
    prefix = np.concatenate([zero, np.cumsum(clean * weights if weights is not None else clean, axis=1)], axis=1)
    squares = clean * clean
    prefix2 = np.concatenate([zero, np.cumsum(squares * weights if weights is not None else squares, axis=1)], axis=1)
    searchable = values if full else np.where(tail, np.inf, values)  # sorted rows for searchsorted
    searchable_t = torch.from_numpy(searchable)
    out = centroids.copy()
    active = np.arange(rows)
    for _ in range(iters):
        if not len(active):
            break
        c = np.sort(out[active], axis=1)
        mids = torch.from_numpy(np.ascontiguousarray((c[:, 1:] + c[:, :-1]) / 2))
        if len(active) == 1:  # numpy's search reads only log(n) entries; torch's checks the whole row
            bounds = np.searchsorted(searchable[active[0]], mids[0].numpy(), side="left")[None, :]
        else:
            rows_searched = searchable_t if len(active) == rows else searchable_t[torch.from_numpy(active)]
            bounds = torch.searchsorted(rows_searched, mids, right=False).numpy()
        starts = np.concatenate([np.zeros((len(active), 1), dtype=np.int64), bounds], axis=1)
        ends = np.concatenate([bounds, lengths[active, None]], axis=1)
        counts = ends - starts
        at = active[:, None]  # fancy indexing reads only the entries needed, never a whole row
        mass = counts.astype(np.float64) if weights is None else prefix_w[at, ends] - prefix_w[at, starts]
        sums = prefix[at, ends] - prefix[at, starts]
        updated = np.where(mass > 0, sums / np.where(mass > 0, mass, 1), c)
        empty = mass <= 0
        has_empty = empty.any(axis=1)
        if has_empty.any():
            error = (prefix2[at, ends] - prefix2[at, starts]) - sums * sums / np.where(mass > 0, mass, 1)
            victims = np.argsort(-error, axis=1)
            # the k-th empty slot (in slot order) takes the k-th worst cluster; stop at the first unsplittable one
            usable = np.logical_and.accumulate((_gather(counts, victims) >= 2) & (_gather(error, victims) > 0), axis=1)
            rank = np.cumsum(empty, axis=1) - 1
            slot_rows, slots = np.nonzero(empty)
            ranks = rank[slot_rows, slots]
            take = usable[slot_rows, ranks]
            victim = victims[slot_rows, ranks]
            middle = (starts[slot_rows, victim] + ends[slot_rows, victim]) // 2
            updated[slot_rows[take], slots[take]] = values[active[slot_rows[take]], middle[take]]
        done = ~has_empty & np.all(np.abs(updated - c) <= 1e-12, axis=1)
        out[active] = updated
        active = active[~done]
    return out


def _optimal(values: np.ndarray, weights: np.ndarray | None, k: int) -> np.ndarray:
    distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    mass = counts.astype(np.float64) if weights is None else np.bincount(inverse, weights=weights, minlength=len(distinct))
    if len(distinct) <= k:
        return distinct
    if weights is not None and not (mass > 0).all():  # zero-importance values: any centroid serves them
        keep = mass > 0
        if keep.sum() <= k:
            return distinct[keep] if keep.any() else distinct[:1]
        distinct, mass = distinct[keep], mass[keep]
    return optimal_centroids(distinct.astype(np.float64), mass, k)


def assign(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry for each weight (ties go to the lower entry)."""
    order = torch.argsort(codebook)
    sorted_cb = codebook[order]
    mids = (sorted_cb[1:] + sorted_cb[:-1]) / 2
    return order[torch.searchsorted(mids.contiguous(), w.contiguous(), right=False)]


def _check_common(k: int, init: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")


def _check_weights(weights: torch.Tensor | None, shape: torch.Size) -> np.ndarray | None:
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor) or weights.shape != shape:
        raise ValueError(f"weights must be a tensor of the values' shape {tuple(shape)}, "
                         f"got {getattr(weights, 'shape', type(weights).__name__)}")
    out = weights.detach().cpu().double().contiguous().numpy()
    if not np.isfinite(out).all() or (out < 0).any():
        raise ValueError("weights (importances) must be finite and >= 0")
    return out


def kmeans_rows(w: torch.Tensor, k: int, init: str = "linear", iters: int = MAX_ITERS, seed: int = 0,
                weights: torch.Tensor | None = None, alive: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each row of the 2-D tensor ``w`` into at most ``k`` shared values of its own.

    ``weights`` (optional, ``w``'s shape, >= 0): per-value importances, minimising the weighted squared
    error (a row whose importances are all zero is clustered unweighted). ``alive`` (optional bool,
    ``w``'s shape): only these values are clustered; the others get index 0.
    Returns ``(codebook, index)``: ``codebook`` fp32 ``[rows, K]``, each row sorted, ``K`` the most
    centroids any row uses (a row using fewer repeats its last value; an empty row is zeros), and
    ``index`` int64 of ``w``'s shape with ``codebook[r, index[r, j]]`` the quantized ``w[r, j]``.
    Every row is clustered exactly as `kmeans_1d` clusters it alone. Deterministic for a given seed.
    """
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise TypeError(f"kmeans_rows needs a 2-D tensor, got {getattr(w, 'shape', type(w).__name__)}")
    _check_common(k, init)
    importance = _check_weights(weights, w.shape)
    if alive is None:
        alive_np = np.ones(tuple(w.shape), dtype=bool)
    elif not isinstance(alive, torch.Tensor) or alive.shape != w.shape or alive.dtype != torch.bool:
        raise ValueError(f"alive must be a bool tensor of shape {tuple(w.shape)}")
    else:
        alive_np = alive.detach().cpu().numpy()
    rows, cols = w.shape
    data = w.detach().cpu().double().numpy()
    # sort each row with its dead entries last (+inf), keeping their importances aligned
    keyed = np.where(alive_np, data, np.inf)
    if importance is None:
        values, sorted_w = np.sort(keyed, axis=1), None
    else:
        order = np.argsort(keyed, axis=1, kind="stable")
        values = _gather(keyed, order)
        sorted_w = np.where(np.isfinite(values), _gather(importance, order), 0.0)
    lengths = alive_np.sum(axis=1)
    if sorted_w is not None:  # an all-zero row: every codebook is optimal; cluster it unweighted
        sorted_w[sorted_w.sum(axis=1) == 0] = np.where(np.isfinite(values[sorted_w.sum(axis=1) == 0]), 1.0, 0.0)
    centroids = np.zeros((rows, k))
    exact = np.zeros(rows, dtype=bool)
    rng = np.random.default_rng(seed)
    for r in range(rows):
        n = lengths[r]
        if n == 0:
            exact[r] = True
            continue
        row, row_w = values[r, :n], None if sorted_w is None else sorted_w[r, :n]
        distinct = row[np.concatenate([[True], row[1:] != row[:-1]])]
        if len(distinct) <= k and (iters > 0 or init == "optimal"):  # each value its own centroid: exact
            centroids[r] = np.concatenate([distinct, np.full(k - len(distinct), distinct[-1])])
            exact[r] = True
        elif init == "optimal":
            found = _optimal(row, row_w, k)
            centroids[r] = np.concatenate([found, np.full(k - len(found), found[-1])])
            exact[r] = True
        else:
            centroids[r] = _init(row, row_w, k, init, rng)
    todo = np.flatnonzero(~exact)
    if len(todo):
        centroids[todo] = _lloyd(values[todo], None if sorted_w is None else sorted_w[todo], lengths[todo],
                                 centroids[todo], iters)
    return _finish(centroids, w.detach().cpu().float(), torch.from_numpy(alive_np), torch.from_numpy(lengths > 0))


def _finish(centroids: np.ndarray, w: torch.Tensor, alive: torch.Tensor, nonempty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 codebooks (duplicates merged, unused centroids dropped, rows padded) and nearest indices."""
    rows, k = centroids.shape
    cb = torch.from_numpy(np.sort(centroids.astype(np.float32), axis=1))
    duplicate = torch.zeros_like(cb, dtype=torch.bool)
    duplicate[:, 1:] = cb[:, 1:] == cb[:, :-1]
    cb = torch.sort(torch.where(duplicate, torch.tensor(np.inf, dtype=torch.float32), cb), dim=1).values
    mids = ((cb[:, 1:] + cb[:, :-1]) / 2).contiguous()
    index = torch.searchsorted(mids, w.contiguous(), right=False)
    index = torch.where(alive, index, torch.zeros((), dtype=torch.int64))
    used = torch.zeros(rows, k, dtype=torch.bool)
    used[torch.arange(rows)[:, None].expand_as(index)[alive], index[alive]] = True
    remap = torch.cumsum(used, dim=1) - 1
    index = torch.where(alive, torch.gather(remap, 1, index), torch.zeros((), dtype=torch.int64))
    width = max(int(used.sum(dim=1).max()) if rows else 0, 1)
    codebook = torch.zeros(rows, width)
    slots = torch.where(used, remap, torch.full_like(remap, width))  # unused -> out of range, dropped
    keep = slots < width
    codebook[torch.arange(rows)[:, None].expand_as(slots)[keep], slots[keep]] = cb[keep]
    counts = used.sum(dim=1)
    last = codebook.gather(1, (counts - 1).clamp(min=0)[:, None])
    pad = torch.arange(width)[None, :] >= counts[:, None]
    codebook = torch.where(pad & nonempty[:, None], last.expand_as(codebook), codebook)
    return codebook, index


def kmeans_1d(w: torch.Tensor, k: int, init: str = "linear", iters: int = MAX_ITERS,
              seed: int = 0, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the 1-D tensor ``w`` into at most ``k`` shared values.

    Returns ``(codebook, index)``: ``codebook`` fp32 of at most ``k`` sorted values (every distinct value
    when there are at most ``k``; unused centroids dropped), and ``index`` int64 with ``codebook[index]`` the quantized weights. ``iters=0``
    returns the initial centroids (with ``linear``: plain uniform quantization). An empty ``w`` gives
    an empty codebook. ``weights`` (optional, ``w``'s shape, >= 0): importances of the values, for
    sensitivity-weighted k-means (SqueezeLLM). Deterministic for a given seed.
    """
    if not isinstance(w, torch.Tensor) or w.dim() != 1:
        raise TypeError(f"kmeans_1d needs a 1-D tensor, got {getattr(w, 'shape', type(w).__name__)}")
    _check_common(k, init)
    if w.numel() == 0:
        _check_weights(weights, w.shape)
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    codebook, index = kmeans_rows(w[None], k, init, iters, seed, None if weights is None else weights[None])
    return codebook[0].contiguous(), index[0]


def weighted_error(w: torch.Tensor, quantized: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """sum_i s_i (w_i - q_i)^2 (s = 1 without ``weights``): what (weighted) k-means minimises."""
    diff = (w.double() - quantized.double()) ** 2
    return float((diff if weights is None else diff * weights.double()).sum())
