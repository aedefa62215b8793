"""The shared mask-update core of dynamic sparse training: pure functions on tensors.

An update of one layer drops ``k`` active weights (smallest magnitude) and grows ``k`` inactive ones
(highest score: random for SET, |dense gradient| for RigL, |momentum| for SNFS), so the layer's count of
active weights is unchanged. Candidates for growth are the positions inactive *after* the drop, so a
just-dropped weight can come back; as in RigL's reference code (``reinit_when_same=False``) it then keeps
its value, and only connections that were inactive before the update start at zero.
Ties are broken by position (stable sort), so every update is deterministic given its scores.
"""

from __future__ import annotations

import math

import torch


def drop_fraction(alpha: float, step: int, end: int, schedule: str) -> float:
    """alpha_t: ``alpha`` (constant) or ``alpha / 2 * (1 + cos(pi * step / end))`` (cosine), 0 from ``end`` on."""
    if step >= end:
        return 0.0
    if schedule == "constant":
        return alpha
    if schedule == "cosine":
        return alpha / 2 * (1 + math.cos(math.pi * step / end))
    raise ValueError(f"drop schedule {schedule!r} is not allowed; choose from constant, cosine")


def _top(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` highest ``scores`` among ``candidates`` (bool), earlier position on ties."""
    flat = scores.detach().reshape(-1).float().masked_fill(~candidates.reshape(-1), -math.inf)
    return torch.sort(flat, descending=True, stable=True).indices[:k]


def drop(weight: torch.Tensor, mask: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` without its ``k`` smallest-magnitude active weights (a new tensor)."""
    active = int(mask.sum())
    if not 0 <= k <= active:
        raise ValueError(f"cannot drop {k} of {active} active weights")
    flat = mask.reshape(-1).clone()
    flat[_top(-weight.detach().abs(), mask, k)] = False
    return flat.reshape(mask.shape)


def grow(mask: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """``mask`` with the ``k`` inactive positions of highest ``scores`` switched on (a new tensor)."""
    inactive = mask.numel() - int(mask.sum())
    if not 0 <= k <= inactive:
        raise ValueError(f"cannot grow {k} weights: only {inactive} positions are inactive")
    flat = mask.reshape(-1).clone()
    flat[_top(scores, ~mask, k)] = True
    return flat.reshape(mask.shape)


def drop_count(mask: torch.Tensor, fraction: float) -> int:
    """How many of a layer's active weights an update at drop fraction ``fraction`` replaces."""
    return int(round(fraction * int(mask.sum())))


def random_scores(shape: torch.Size | tuple, generator: torch.Generator) -> torch.Tensor:
    """SET's growth scores: uniform noise from the training's own generator (reproducible under a seed)."""
    return torch.rand(math.prod(shape), generator=generator).reshape(shape)


def random_mask(shape: torch.Size | tuple, keep: int, generator: torch.Generator) -> torch.Tensor:
    """``keep`` positions at random: the initial mask of every method but SR-STE."""
    return grow(torch.zeros(shape, dtype=torch.bool), random_scores(shape, generator), keep)


def redistribute(dropped: dict[str, int], momentum: dict[str, float], capacity: dict[str, int]) -> dict[str, int]:
    """SNFS: share the total ``dropped`` count across layers in proportion to their mean momentum
    magnitude, no layer given more than its ``capacity`` (its inactive positions after the drop); what a
    full layer cannot take goes to the others, again by momentum. Largest remainders round to whole
    weights, so the total regrown equals the total dropped."""
    total = sum(dropped.values())
    grow_counts = {n: 0 for n in dropped}
    open_layers = [n for n in dropped if capacity[n] > 0]
    while total > 0 and open_layers:
        weight = sum(momentum[n] for n in open_layers)
        if weight <= 0:
            shares = {n: total / len(open_layers) for n in open_layers}
        else:
            shares = {n: total * momentum[n] / weight for n in open_layers}
        floors = {n: int(math.floor(shares[n])) for n in open_layers}
        left = total - sum(floors.values())
        for n in sorted(open_layers, key=lambda n: (floors[n] - shares[n], open_layers.index(n)))[:left]:
            floors[n] += 1
        given = 0
        for n in open_layers:
            take = min(floors[n], capacity[n] - grow_counts[n])
            grow_counts[n] += take
            given += take
        total -= given
        open_layers = [n for n in open_layers if grow_counts[n] < capacity[n]]
        if given == 0:
            break
    if total > 0:
        raise ValueError(f"cannot regrow {total} more weights: every layer is full")
    return grow_counts
