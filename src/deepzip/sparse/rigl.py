"""RigL (Evci et al. 2020): drop by magnitude, regrow where the dense gradient is largest.

The dense gradient exists only at update steps: `SparseTraining` switches
`deepzip.prune.capture_dense_gradients` on for the backward before an update step and off after it,
so every other step's backward is the ordinary masked one. Regrown weights start at zero.
"""

from __future__ import annotations

import torch

from ..registry import METHODS
from .configs import RigL
from .rule import Rule


@METHODS.implements(RigL)
class RigLRule(Rule):
    def grow_scores(self, name, weight, mask, trainer) -> torch.Tensor:
        grad = trainer.dense_gradients.get(name)
        if grad is None:
            raise RuntimeError(f"RigL update without the dense gradient of {name}: call step() once per backward")
        return grad.abs()
