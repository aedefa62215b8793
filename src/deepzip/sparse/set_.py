"""SET (Mocanu et al. 2018): drop the smallest-magnitude active weights, regrow as many at random."""

from __future__ import annotations

import torch

from ..registry import METHODS
from . import core
from .configs import SET
from .rule import Rule


@METHODS.implements(SET)
class SETRule(Rule):
    def grow_scores(self, name, weight, mask, trainer) -> torch.Tensor:
        # Drawn from the training's generator, which checkpoints hold: a resumed run draws the same.
        return core.random_scores(mask.shape, trainer.generator).to(mask.device)
