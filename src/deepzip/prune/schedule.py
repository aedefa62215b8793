"""When to prune: one-shot, iterative (Han et al. 2015) and gradual polynomial (Zhu & Gupta 2017)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn
import torch

from .api import compute_masks
from .configs import GlobalMagnitude, PruneMethod
from .criteria import check_sparsity
from .masks import apply_masks, mask_optimizer_state


def iterative_sparsities(final: float, steps: int) -> list[float]:
    """Geometric steps: each removes the same fraction of what remains, ending at ``final``."""
    check_sparsity(final, "final sparsity")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1 - (1 - final) ** (k / steps) for k in range(1, steps + 1)]


def polynomial_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0, power: int = 3) -> float:
    """Zhu & Gupta: s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t_end - t0))^3, flat outside [t0, t_end]."""
    if end <= begin:
        raise ValueError(f"gradual pruning needs end > begin, got begin={begin}, end={end}")
    progress = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1 - progress) ** power


@dataclass
class GradualPruning:
    """A training hook: re-prune every ``every`` iterations from ``begin`` to ``end`` toward ``final``,
    with ``method`` (a pruning config with a ``sparsity`` target, e.g. `GlobalMagnitude`, `ERK`)."""

    final: float
    begin: int
    end: int
    every: int = 100
    method: PruneMethod = field(default_factory=GlobalMagnitude)
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self):
        check_sparsity(self.final, "final sparsity")
        polynomial_sparsity(0, self.final, self.begin, self.end)
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if not isinstance(self.method, PruneMethod) or self.method.fixes_own_sparsity:
            raise ValueError(f"gradual pruning needs a method with a sparsity target, got {self.method!r}")

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:
        due = self.begin <= iteration <= self.end and (iteration - self.begin) % self.every == 0
        if not due and iteration != self.end:
            return
        target = polynomial_sparsity(iteration, self.final, self.begin, self.end)
        apply_masks(model, compute_masks(model, dataclasses.replace(self.method, sparsity=target)))
        if optimizer is not None:
            mask_optimizer_state(optimizer, model)
        self.history.append((iteration, target))
