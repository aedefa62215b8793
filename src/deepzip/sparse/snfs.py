"""Sparse momentum, SNFS (Dettmers & Zettlemoyer 2019): regrow by momentum, redistribute across layers.

The method needs the momentum of the *dense* gradient, including at pruned positions, while deepzip
keeps pruned weights' gradients and optimizer state at zero. So the rule keeps its own exponential
average m = beta m + g of the dense gradient (captured every step through
`deepzip.prune.capture_dense_gradients`), separate from the optimizer's state; it is in the
checkpoints. At an update, each layer drops its fraction by magnitude; the total is regrown across
layers in proportion to each layer's mean |m| over its active weights (capped at a layer's free
positions), and within a layer where |m| is largest.
"""

from __future__ import annotations

import torch

from ..registry import METHODS
from . import core
from .configs import SNFS
from .rule import Rule


@METHODS.implements(SNFS)
class SNFSRule(Rule):
    def __init__(self, config: SNFS):
        super().__init__(config)
        self.momentum: dict[str, torch.Tensor] = {}

    def after_step(self, trainer) -> None:
        beta = self.config.momentum
        for name, grad in trainer.dense_gradients.items():
            if name in self.momentum:
                self.momentum[name].mul_(beta).add_(grad)
            else:
                self.momentum[name] = grad.clone()

    def _momentum(self, name: str, like: torch.Tensor) -> torch.Tensor:
        return self.momentum.get(name, torch.zeros_like(like, dtype=torch.float32))

    def grow_scores(self, name, weight, mask, trainer) -> torch.Tensor:
        return self._momentum(name, weight).abs()

    def grow_counts(self, dropped, after_drop, trainer) -> dict[str, int]:
        if self.config.redistribution == "none":
            return dict(dropped)
        weights = trainer.weights()
        mean = {}
        for name, mask in trainer.masks().items():
            m = self._momentum(name, weights[name]).abs()
            mean[name] = float(m[mask].mean()) if bool(mask.any()) else 0.0
        capacity = {n: m.numel() - int(m.sum()) for n, m in after_drop.items()}
        return core.redistribute(dropped, mean, capacity)

    def state_dict(self) -> dict:
        return {"momentum": dict(self.momentum)}

    def load_state_dict(self, state: dict) -> None:
        self.momentum = {n: t.clone() for n, t in state.get("momentum", {}).items()}
