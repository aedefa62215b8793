"""N:M from scratch with SR-STE (Zhou et al. 2021, "Learning N:M fine-grained structured sparse
neural networks from scratch").

The rule keeps the dense weights W; the model's parameter holds the N:M-masked W~ = W * M(W) outside
the optimizer step, so every forward (training and evaluation) is N:M. The backward computes
g = dL/dW~ (no gradient mask: the straight-through estimator passes it to every weight), and the step
applies g + lambda_W (1 - M) * W to W (the sparse-refined term decays the pruned weights), then
recomputes M from the new W by magnitude in every group of M along the input dimension (as
`deepzip.prune.criteria.nm_mask`). When training ends, `SparseTraining.finish` installs M as
ordinary `weight_mask` buffers: the result is an N:M pruned model like `deepzip.prune(model, NM())`.
Pruned weights are not kept at zero in W (that is the method); the model's weights are, at the mask.
"""

from __future__ import annotations

import torch

from ..prune import criteria
from ..registry import METHODS
from .configs import SRSTE
from .rule import Rule


@METHODS.implements(SRSTE)
class SRSTERule(Rule):
    def __init__(self, config: SRSTE):
        super().__init__(config)
        self.dense: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}

    def initial_masks(self, weights, generator) -> dict[str, torch.Tensor]:
        # No weight_mask buffers during training: the mask follows the dense weights every step.
        self.dense = {n: w.detach().clone() for n, w in weights.items()}
        self._remask(weights)
        return {}

    def _remask(self, weights: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in weights.items():
                self.masks[name] = criteria.nm_mask(self.dense[name], self.config.n, self.config.m)
                param.copy_(self.dense[name].masked_fill(~self.masks[name], 0.0))

    def before_step(self, trainer) -> None:
        with torch.no_grad():
            for name, param in trainer.weights().items():
                if param.grad is not None and self.config.decay:
                    param.grad.add_(self.dense[name].masked_fill(self.masks[name], 0.0), alpha=self.config.decay)
                param.copy_(self.dense[name])  # the optimizer updates the dense weights

    def after_step(self, trainer) -> None:
        weights = trainer.weights()
        self.dense = {n: p.detach().clone() for n, p in weights.items()}
        self._remask(weights)

    def gradients(self, trainer) -> dict[str, torch.Tensor]:
        # no gradient masks while training: .grad is dL/dW~ at every position, the dense gradient
        return {n: w.grad for n, w in trainer.weights().items() if w.grad is not None}

    def current_masks(self, trainer) -> dict[str, torch.Tensor]:
        return dict(self.masks)

    def export_masks(self, trainer) -> dict[str, torch.Tensor]:
        return dict(self.masks)

    def state_dict(self) -> dict:
        return {"dense": dict(self.dense)}

    def load_state_dict(self, state: dict) -> None:
        self.dense = {n: t.clone() for n, t in state["dense"].items()}
        self.masks = {n: criteria.nm_mask(w, self.config.n, self.config.m) for n, w in self.dense.items()}
