"""Sparsity distributions at initialization: per-layer sparsities for a global target (pure functions).

- uniform: every sparse layer at the same sparsity;
- er (Erdos-Renyi, Mocanu et al. 2018): density proportional to (n_in + n_out) / (n_in n_out), the
  kernel dimensions ignored;
- erk (Erdos-Renyi-Kernel, Evci et al. 2020): density proportional to sum(shape) / prod(shape).
Layers named in ``dense`` (the papers' dense first / last layer) stay dense and the others absorb their
share, so the global sparsity over all the layers is the target in every case (up to whole weights).
"""

from __future__ import annotations

import math
from typing import Collection, Mapping, Sequence

from ..prune import allocate


def layer_sparsities(shapes: Mapping[str, Sequence[int]], target: float, distribution: str = "erk",
                     dense: Collection[str] = ()) -> dict[str, float]:
    """{layer: sparsity} with the weighted mean ``target``; ``dense`` layers kept at 0."""
    unknown = set(dense) - set(shapes)
    if unknown:
        raise ValueError(f"dense layer(s) {', '.join(sorted(unknown))} are not sparse targets; targets: {', '.join(shapes)}")
    numels = {n: math.prod(s) for n, s in shapes.items()}
    if distribution == "uniform":
        ratio = {n: 1.0 for n in shapes}
    elif distribution == "er":
        ratio = {n: (s[0] + (s[1] if len(s) > 1 else 1)) / (s[0] * (s[1] if len(s) > 1 else 1)) for n, s in shapes.items()}
    elif distribution == "erk":
        ratio = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    else:
        raise ValueError(f"distribution={distribution!r} is not allowed; choose from uniform, er, erk")
    return allocate.proportional(numels, ratio, target, dense)
