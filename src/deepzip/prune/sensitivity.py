"""Sensitivity analysis (Han et al. 2015, Figure 5): prune one layer at a time, measure accuracy."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .api import prunable_weights
from .criteria import fraction_mask

DEFAULT_SPARSITIES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)


@torch.no_grad()
def sensitivity_curves(model: nn.Module, metric: Callable[[nn.Module], float],
                       sparsities: Sequence[float] = DEFAULT_SPARSITIES, exclude: Iterable[str] = (),
                       progress: bool = True) -> dict[str, list[tuple[float, float]]]:
    """{layer: [(sparsity, metric)]}: each layer magnitude-pruned alone, without retraining.

    ``metric`` is e.g. validation accuracy (never the test set). The model is left as it was.
    """
    weights, _ = prunable_weights(model, exclude=exclude)
    curves: dict[str, list[tuple[float, float]]] = {}
    bar = tqdm(total=len(weights) * len(sparsities), desc="sensitivity", disable=None if progress else True, leave=False)
    for name, weight in weights.items():
        original = weight.detach().clone()
        curves[name] = []
        for s in sparsities:
            weight.masked_fill_(~fraction_mask(original, s), 0.0)
            curves[name].append((float(s), float(metric(model))))
            weight.copy_(original)
            bar.update()
    bar.close()
    return curves
