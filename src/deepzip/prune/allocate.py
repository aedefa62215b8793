"""Per-layer sparsity allocation for a global target: pure functions of layer sizes (and curves).

Every allocator returns ``{layer: sparsity}`` whose weighted mean over the layers' sizes is the target
(up to rounding to whole weights), or raises ValueError when the target cannot be met.
"""

from __future__ import annotations

import math
from typing import Collection, Mapping, Sequence

MAX_LAYER_SPARSITY = 0.999  # a layer keeps at least 0.1% of its weights


def _water_fill(numels: Mapping[str, int], rates: Mapping[str, float], target: float,
                cap: float = MAX_LAYER_SPARSITY) -> dict[str, float]:
    """Solve s_l = min(cap, c * rates[l]) with sum(s_l * n_l) = target * N for the constant c."""
    total = sum(numels.values())
    capped: set[str] = set()
    while True:
        free = [n for n in numels if n not in capped and rates[n] > 0]
        need = target * total - cap * sum(numels[n] for n in capped)
        weight = sum(rates[n] * numels[n] for n in free)
        if not free or weight <= 0:
            if need > 1e-9 * total:
                raise ValueError(f"cannot reach sparsity {target} with these layers excluded or capped "
                                 f"(each layer keeps at least {1 - cap:.1%})")
            return {n: (cap if n in capped else 0.0) for n in numels}
        c = need / weight
        over = [n for n in free if c * rates[n] > cap]
        if not over:
            return {n: (cap if n in capped else max(0.0, c * rates[n])) for n in numels}
        capped.update(over)


def uniform(numels: Mapping[str, int], target: float, scales: Mapping[str, float] | None = None) -> dict[str, float]:
    """The same sparsity everywhere, except layers with a rate scale (0: excluded, 0.5: half rate)."""
    scales = scales or {}
    return _water_fill(numels, {n: scales.get(n, 1.0) for n in numels}, target)


def erk(shapes: Mapping[str, Sequence[int]], target: float, scales: Mapping[str, float] | None = None) -> dict[str, float]:
    """Erdos-Renyi-Kernel (Evci et al. 2020): density proportional to sum(shape) / prod(shape).

    Solved on densities: d_l = min(1, eps * r_l) with sum(d_l n_l) = (1 - target) N; layers that
    would exceed density 1 are made dense and the rest re-solved. Excluded layers (scale 0) stay dense.
    """
    scales = scales or {}
    numels = {n: math.prod(s) for n, s in shapes.items()}
    ratio = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    return proportional(numels, ratio, target, {n for n in shapes if scales.get(n, 1.0) == 0})


def proportional(numels: Mapping[str, int], ratio: Mapping[str, float], target: float,
                 dense: Collection[str] = ()) -> dict[str, float]:
    """Densities proportional to ``ratio``: d_l = min(1, eps * r_l) with sum(d_l n_l) = (1 - target) N.
    Layers in ``dense`` stay dense; layers that would exceed density 1 are made dense and the rest
    re-solved (ERK, Erdos-Renyi and uniform allocations are this with their own ratios)."""
    total = sum(numels.values())
    dense = set(dense)
    while True:
        sparse = [n for n in numels if n not in dense]
        budget = (1 - target) * total - sum(numels[n] for n in dense)
        if not sparse or budget <= 0:
            raise ValueError(f"cannot reach sparsity {target}: the dense layers ({', '.join(sorted(dense))}) "
                             f"alone hold more than {1 - target:.2%} of the weights")
        eps = budget / sum(ratio[n] * numels[n] for n in sparse)
        over = [n for n in sparse if eps * ratio[n] > 1]
        if not over:
            return {n: 0.0 if n in dense else min(MAX_LAYER_SPARSITY, 1 - eps * ratio[n]) for n in numels}
        dense.update(over)


def _envelope(curve: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sort by sparsity and make accuracy non-increasing (a noisy bump never justifies more pruning)."""
    points, best = [], math.inf
    for sparsity, acc in sorted(curve):
        best = min(best, acc)
        points.append((sparsity, best))
    return points


def _at_tolerance(curve: list[tuple[float, float]], base: float, tolerance: float) -> float:
    """The largest measured sparsity whose accuracy drop is within ``tolerance``."""
    allowed = [s for s, acc in curve if base - acc <= tolerance + 1e-12]
    return max(allowed, default=0.0)


def sensitivity(numels: Mapping[str, int], curves: Mapping[str, Sequence[tuple[float, float]]], target: float,
                base_accuracy: float) -> dict[str, float]:
    """Per-layer sparsities that meet ``target`` with the least worst-layer accuracy drop.

    Each layer is pruned to the largest sparsity whose measured drop (pruning that layer alone, the
    paper's Figure 5) stays within a tolerance; the tolerance is the smallest that meets the target,
    and the last step is interpolated between two tolerances so the target is met exactly.
    """
    missing = set(numels) - set(curves)
    if missing:
        raise ValueError(f"no sensitivity curve for {', '.join(sorted(missing))}")
    env = {n: _envelope(curves[n]) for n in numels}
    total = sum(numels.values())

    def allocation(tol: float) -> dict[str, float]:
        return {n: _at_tolerance(env[n], base_accuracy, tol) for n in numels}

    def overall(alloc: dict[str, float]) -> float:
        return sum(alloc[n] * numels[n] for n in numels) / total

    tolerances = sorted({max(0.0, base_accuracy - acc) for n in numels for _, acc in env[n]} | {0.0})
    previous = allocation(-1.0)
    for tol in tolerances:
        current = allocation(tol)
        if overall(current) >= target:
            lo, hi = overall(previous), overall(current)
            t = 1.0 if hi == lo else (target - lo) / (hi - lo)
            return {n: previous[n] + t * (current[n] - previous[n]) for n in numels}
        previous = current
    raise ValueError(f"sensitivity curves reach at most {overall(previous):.4f} sparsity; measure them to "
                     f"higher sparsities to allocate {target}")


def owl(ratios: Sequence[float], target: float, limit: float = 0.08) -> list[float]:
    """OWL's per-block sparsities (Yin et al. 2023): blocks with more outliers are pruned less.

    The outlier ratios are mapped linearly onto densities spanning ``2 * limit`` (the paper's lambda on
    each side), centred so the mean density is ``1 - target``; sparsity = 1 - density. So the mean
    sparsity is the target and each block is within ``limit`` of it. Equal ratios give the target
    everywhere.
    """
    if not ratios:
        raise ValueError("OWL needs at least one block")
    low, high = min(ratios), max(ratios)
    if high - low <= 0:
        return [float(target)] * len(ratios)
    scaled = [(r - low) / (high - low) * 2 * limit for r in ratios]
    mean = sum(scaled) / len(scaled)
    return [1.0 - (s - mean + (1.0 - target)) for s in scaled]
