"""The baseline: uniform (linear) quantization to the same bits, no clustering.

Levels evenly spaced between the layer's min and max surviving weights, each weight rounded to the
nearest: exactly `kmeans_1d` with ``init='linear'`` and no Lloyd iteration.
"""

from __future__ import annotations

import torch

from .kmeans import kmeans_1d


def uniform_quantize_1d(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    return kmeans_1d(w, 2 ** bits, init="linear", iters=0)
