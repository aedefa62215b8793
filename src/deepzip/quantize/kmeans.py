"""1-D k-means for weight sharing (Han et al. 2016, section 3), as pure functions on tensors.

Lloyd's algorithm in one dimension on sorted data: the clusters of sorted centroids are contiguous
ranges of the sorted values, split at the midpoints, so each iteration is a ``searchsorted`` plus
prefix-sum differences: O(k log n) after one O(n log n) sort. ``optimal`` solves the problem exactly
by dynamic programming (Wang & Song 2011) on the distinct values, with divide-and-conquer rows.
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


def _init(values: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    lo, hi = values[0], values[-1]
    if init == "linear":  # evenly spaced over [min, max]: the paper's best (keeps large weights)
        return np.linspace(lo, hi, k)
    if init == "density":  # evenly spaced on the CDF: dense where weights are dense
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    if init == "random":  # Forgy: k weights drawn at random
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(values, size=k, replace=len(values) < k))
    raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")


def _lloyd(values: np.ndarray, centroids: np.ndarray, iters: int) -> np.ndarray:
    """Lloyd iterations on sorted ``values``.

    An empty cluster (e.g. a linear-init centroid stranded in the gap that pruning leaves around zero)
    is re-seeded at the median of the cluster with the largest squared error, so no codebook entry
    is wasted while some cluster could still be split.
    """
    prefix = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    prefix2 = np.concatenate([[0.0], np.cumsum(values * values, dtype=np.float64)])
    for _ in range(iters):
        centroids = np.sort(centroids)
        bounds = np.searchsorted(values, (centroids[1:] + centroids[:-1]) / 2, side="left")
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(values)]])
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            error = (prefix2[ends] - prefix2[starts]) - sums * sums / np.maximum(counts, 1)
            for slot, victim in zip(empty, np.argsort(-error)):
                if counts[victim] < 2 or error[victim] <= 0:
                    break
                updated[slot] = values[(starts[victim] + ends[victim]) // 2]
        elif np.allclose(updated, centroids, rtol=0, atol=1e-12):
            return updated
        centroids = updated
    return centroids


def _optimal(values: np.ndarray, k: int) -> np.ndarray:
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) <= k:
        return distinct
    return optimal_centroids(distinct.astype(np.float64), counts.astype(np.float64), k)


def assign(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry for each weight (ties go to the lower entry)."""
    order = torch.argsort(codebook)
    sorted_cb = codebook[order]
    mids = (sorted_cb[1:] + sorted_cb[:-1]) / 2
    return order[torch.searchsorted(mids.contiguous(), w.contiguous(), right=False)]


def kmeans_1d(w: torch.Tensor, k: int, init: str = "linear", iters: int = MAX_ITERS,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the 1-D tensor ``w`` into at most ``k`` shared values.

    Returns ``(codebook, index)``: ``codebook`` fp32 of at most ``k`` sorted values (every distinct value
    when there are at most ``k``; unused centroids dropped), and ``index`` int64 with ``codebook[index]`` the quantized weights. ``iters=0``
    returns the initial centroids (with ``linear``: plain uniform quantization). An empty ``w`` gives
    an empty codebook. Deterministic for a given seed.
    """
    if not isinstance(w, torch.Tensor) or w.dim() != 1:
        raise TypeError(f"kmeans_1d needs a 1-D tensor, got {getattr(w, 'shape', type(w).__name__)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    if w.numel() == 0:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    values = np.sort(w.detach().double().numpy())
    distinct = np.unique(values)
    if len(distinct) <= k and (iters > 0 or init == "optimal"):  # each value its own centroid: exact
        centroids = distinct
    elif init == "optimal":
        centroids = _optimal(values, k)
    else:
        centroids = _lloyd(values, _init(values, k, init, seed), iters)
    codebook = torch.from_numpy(np.unique(centroids.astype(np.float32)))  # sorted; merges duplicates
    index = assign(w.detach().float(), codebook)
    used = torch.unique(index)  # drop centroids no weight uses
    remap = torch.full((len(codebook),), -1, dtype=torch.int64)
    remap[used] = torch.arange(len(used))
    return codebook[used].contiguous(), remap[index]
