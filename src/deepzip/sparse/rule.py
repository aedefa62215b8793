"""What a sparse-training method does at each point of a step: the base every method module extends.

`SparseTraining` (trainer.py) owns the schedule, the masks and the checkpointed state; a method's
`Rule` (one module per method, registered for its config type in `METHODS`) says how the masks start
and where a drop-and-grow update regrows. The defaults are the shared drop-by-magnitude core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..prune import masks as mask_state
from . import core
from .distribution import layer_sparsities

if TYPE_CHECKING:  # the trainer passes itself; typing only
    from .trainer import SparseTraining


class Rule:
    """A method's behaviour; the base is a static random mask (no update does anything)."""

    def __init__(self, config: Any):
        self.config = config

    # ------------------------------------------------------------------------------- masks at start
    def initial_masks(self, weights: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Random masks at the config's per-layer sparsities (its distribution and dense first/last)."""
        cfg, names = self.config, list(weights)
        dense = ([names[0]] if cfg.dense_first else []) + ([names[-1]] if cfg.dense_last else [])
        sparsities = layer_sparsities({n: tuple(w.shape) for n, w in weights.items()}, cfg.sparsity,
                                      cfg.distribution, dense)
        return {n: core.random_mask(w.shape, w.numel() - int(round(w.numel() * sparsities[n])), generator)
                .to(w.device) for n, w in weights.items()}

    # --------------------------------------------------------------------------------- each step
    def gradients(self, trainer: "SparseTraining") -> dict[str, torch.Tensor]:
        """The dense gradients of this step's backward (captured before masking; see the trainer)."""
        return mask_state.captured_gradients(trainer.model)

    def current_masks(self, trainer: "SparseTraining") -> dict[str, torch.Tensor] | None:
        """The masks, where the method keeps them itself (None: the model's ``weight_mask`` buffers)."""
        return None

    def before_step(self, trainer: "SparseTraining") -> None:
        """Called after the backward, before the optimizer step."""

    def after_step(self, trainer: "SparseTraining") -> None:
        """Called after the optimizer step (and before any mask update)."""

    # ------------------------------------------------------------------------------- at updates
    def grow_scores(self, name: str, weight: torch.Tensor, mask: torch.Tensor, trainer: "SparseTraining") -> torch.Tensor:
        raise NotImplementedError(f"{type(self.config).__name__} does not regrow")

    def grow_counts(self, dropped: dict[str, int], after_drop: dict[str, torch.Tensor],
                    trainer: "SparseTraining") -> dict[str, int]:
        """How many weights each layer regrows: by default what it dropped (per-layer sparsity kept)."""
        return dict(dropped)

    # ------------------------------------------------------------------------------- state
    def export_masks(self, trainer: "SparseTraining") -> dict[str, torch.Tensor] | None:
        """Masks to install when training ends (None: the installed masks are final)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
