"""Exact 1-D k-means by dynamic programming (Wang & Song 2011, Ckmeans.1d.dp), compiled with numba.

D[m][j] = min_i D[m-1][i-1] + SSE(i..j) over sorted, weighted points; the optimal split is monotone
in j, so each row is filled by divide and conquer in O(n log n): O(k n log n) in all.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _sse(s1, s2, sw, i, j):
    w = sw[j + 1] - sw[i]
    if w <= 0:
        return 0.0
    s = s1[j + 1] - s1[i]
    return max(0.0, (s2[j + 1] - s2[i]) - s * s / w)


@numba.njit(cache=True)
def _solve(x, weights, k):
    n = len(x)
    s1 = np.zeros(n + 1)
    s2 = np.zeros(n + 1)
    sw = np.zeros(n + 1)
    for i in range(n):
        sw[i + 1] = sw[i] + weights[i]
        s1[i + 1] = s1[i] + weights[i] * x[i]
        s2[i + 1] = s2[i] + weights[i] * x[i] * x[i]
    cost = np.empty((k, n))
    split = np.zeros((k, n), dtype=np.int32)
    for j in range(n):
        cost[0, j] = _sse(s1, s2, sw, 0, j)
    stack = np.empty((4 * (n + 1) * 2, 4), dtype=np.int64)
    for m in range(1, k):
        # fill row m for j in [m, n-1] by divide and conquer on the monotone optimal split
        top = 0
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = m, n - 1, m, n - 1
        top = 1
        for j in range(m):
            cost[m, j] = 0.0
            split[m, j] = j
        while top > 0:
            top -= 1
            lo, hi, optlo, opthi = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            if lo > hi:
                continue
            mid = (lo + hi) // 2
            best, best_i = np.inf, optlo
            for i in range(optlo, min(mid, opthi) + 1):
                c = cost[m - 1, i - 1] + _sse(s1, s2, sw, i, mid)
                if c < best:
                    best, best_i = c, i
            cost[m, mid] = best
            split[m, mid] = best_i
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = lo, mid - 1, optlo, best_i
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mid + 1, hi, best_i, opthi
            top += 1
    centroids = np.empty(k)
    j = n - 1
    for m in range(k - 1, -1, -1):
        i = split[m, j] if m > 0 else 0
        w = sw[j + 1] - sw[i]
        centroids[m] = (s1[j + 1] - s1[i]) / w
        j = i - 1
    return centroids


def optimal_centroids(distinct: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """The k centroids minimising the weighted SSE of ``distinct`` values (sorted) with ``counts``."""
    if len(distinct) * k > 200_000_000:
        raise ValueError(f"optimal k-means on {len(distinct)} distinct values with k={k} needs too much "
                         f"memory; use init='linear' or fewer bits")
    return _solve(distinct, counts, k)
