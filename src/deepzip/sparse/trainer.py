"""`SparseTraining`: the one object of sparse-to-sparse training, used like an optimizer.

    sparse = SparseTraining(model, optimizer, RigL(sparsity=0.95), total_steps=epochs * len(loader))
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        sparse.step()                     # instead of optimizer.step()
    sparse.finish()                       # SR-STE: install its N:M masks; the others: nothing to do

Making it installs the initial masks (deepzip.prune's ``weight_mask`` state, so gradients of inactive
weights are zeroed by `MaskGradients`). ``step()`` runs the optimizer step, then the method's mask
update when one is due (every ``update_interval`` steps before ``end_fraction * total_steps``): each
layer drops ``drop_count`` active weights by magnitude and regrows as many (SNFS: redistributed across
layers) by the method's scores; dropped weights and new connections, and their optimizer state, are
set to +0.0 (a weight dropped and regrown at the same update keeps its value, as in RigL's code). The
optimizer step happens at update steps too (the order of SET's reference optimizer).
Before a backward whose step needs the dense gradient, it switches
`deepzip.prune.capture_dense_gradients` on (and off after). ``state_dict()`` holds the step count,
the RNG state, the method's own state and the FLOP count, so with the model's and optimizer's state
dicts a killed run resumes exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..prune import masks as mask_state
from ..prune.targets import find_targets, split_name
from ..registry import METHODS
from . import core, flops
from .configs import FAMILY, SparseMethod
from .rule import Rule


def resolve(config: SparseMethod | str | None = None, **options: Any) -> SparseMethod:
    """A sparse-training config as is, or built by name (``resolve("rigl", sparsity=0.95)``)."""
    if isinstance(config, str) or config is None:
        return METHODS.build(FAMILY, config or "rigl", **options)
    return METHODS.resolve(FAMILY, config, None, shorthand="sparsity", default="rigl", **options)


class SparseTraining:
    """Sparse-to-sparse training of ``model`` with ``optimizer`` by ``method`` (a config of
    `deepzip.sparse.configs` or its name with options), over ``total_steps`` optimizer steps.
    ``example``: an input batch, to count Conv layers' FLOPs (else a layer's MACs are its weight count)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, method: SparseMethod | str,
                 total_steps: int, example: torch.Tensor | None = None, **options: Any):
        self.config = resolve(method, **options)
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if mask_state.is_pruned(model):
            raise ValueError("the model already has masks; sparse training starts from an unpruned model")
        self.model, self.optimizer, self.total_steps = model, optimizer, total_steps
        self.names = list(find_targets(model, self.config.extra, self.config.exclude))
        self.rule: Rule = METHODS.handler(self.config)(self.config)
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.step_count = 0
        self.train_flops = 0.0  # per example, summed over steps
        self.updates: list[dict[str, Any]] = []
        self.dense_gradients: dict[str, torch.Tensor] = {}
        self.macs = flops.layer_macs(model, self.names, example)
        masks = self.rule.initial_masks(self.weights(), self.generator)
        if masks:
            mask_state.apply_masks(model, masks)
            mask_state.mask_optimizer_state(optimizer, model)
        self._arm()

    # ------------------------------------------------------------------------------------ views
    def weights(self) -> dict[str, nn.Parameter]:
        return {n: getattr(self.model.get_submodule(split_name(n)[0]), split_name(n)[1]) for n in self.names}

    def masks(self) -> dict[str, torch.Tensor]:
        """The current mask of every sparse layer."""
        current = self.rule.current_masks(self)
        if current is not None:
            return current
        installed = mask_state.get_masks(self.model)
        return {n: installed[n] for n in self.names}

    def densities(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks().items()}

    @property
    def end_step(self) -> int:
        """The first step at which no more updates happen."""
        return math.ceil(getattr(self.config, "end_fraction", 0.0) * self.total_steps)

    def is_update_step(self, step: int) -> bool:
        """Whether a mask update follows optimizer step number ``step`` (counted from 1)."""
        if not self.config.dynamic or not hasattr(self.config, "update_interval"):
            return False
        return step % self.config.update_interval == 0 and step < self.end_step

    def drop_fraction(self, step: int) -> float:
        """The fraction of each layer's active weights an update at ``step`` replaces (alpha_t)."""
        cfg = self.config
        return core.drop_fraction(cfg.drop_fraction, step, self.end_step, cfg.drop_schedule)

    def _needs_dense(self, step: int) -> bool:
        mode = self.config.dense_gradient
        return mode == "always" or (mode == "update" and self.is_update_step(step))

    def _arm(self) -> None:
        """Capture the dense gradient in the next backward if the next step needs it."""
        mask_state.capture_dense_gradients(self.model, self._needs_dense(self.step_count + 1))

    # ------------------------------------------------------------------------------------ step
    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:
        """The optimizer step, then the method's bookkeeping and any mask update that is due."""
        step = self.step_count + 1
        dense = self._needs_dense(step)
        captured = self.rule.gradients(self) if dense else {}
        self.dense_gradients = {n: captured[n] for n in self.names if n in captured}
        self.train_flops += flops.step_flops(self.macs, self.densities(), dense)
        self.rule.before_step(self)
        loss = self.optimizer.step(closure)
        self.step_count = step
        self.rule.after_step(self)
        if self.is_update_step(step):
            self.update(step)
        self.dense_gradients = {}
        self._arm()
        return loss

    @torch.no_grad()
    def update(self, step: int) -> dict[str, Any]:
        """Drop and regrow in every layer (all masks computed before any is installed)."""
        fraction = self.drop_fraction(step)
        weights, old = self.weights(), self.masks()
        dropped, after_drop = {}, {}
        for name, mask in old.items():
            dropped[name] = core.drop_count(mask, fraction)
            after_drop[name] = core.drop(weights[name], mask, dropped[name])
        counts = self.rule.grow_counts(dropped, after_drop, self)
        new = {n: core.grow(after_drop[n], self.rule.grow_scores(n, weights[n], after_drop[n], self), counts[n])
               for n in old}
        for name, mask in new.items():
            kept = mask & old[name]  # weights active before and after: the only ones that keep their values
            weights[name].masked_fill_(~kept, 0.0)
            for value in self.optimizer.state.get(weights[name], {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.masked_fill_(~kept, 0.0)
        mask_state.apply_masks(self.model, new)
        record = {"step": step, "drop_fraction": fraction, "dropped": sum(dropped.values()),
                  "grown": sum(counts.values())}
        self.updates.append(record)
        return record

    def finish(self) -> nn.Module:
        """End of training: install the final masks where the method keeps them elsewhere (SR-STE) and stop
        capturing gradients. Returns the model, an ordinary deepzip-pruned model."""
        mask_state.capture_dense_gradients(self.model, False)
        masks = self.rule.export_masks(self)
        if masks:
            mask_state.apply_masks(self.model, masks)
        return self.model

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Step count, RNG state, FLOP count, masks and the method's own state (with the model's and the
        optimizer's state dicts, everything a resumed run needs)."""
        return {"step": self.step_count, "generator": self.generator.get_state(), "train_flops": self.train_flops,
                "masks": {n: m.clone() for n, m in self.masks().items()}, "rule": self.rule.state_dict(),
                "updates": [dict(u) for u in self.updates]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` (after loading the model's and the optimizer's)."""
        self.step_count = int(state["step"])
        self.generator.set_state(state["generator"])
        self.train_flops = float(state["train_flops"])
        self.updates = [dict(u) for u in state.get("updates", [])]
        self.rule.load_state_dict(state["rule"])
        if mask_state.get_masks(self.model):
            mask_state.apply_masks(self.model, state["masks"])
        self._arm()

    def flops_ratio(self) -> float:
        """Training FLOPs so far relative to dense training for the same steps."""
        return self.train_flops / max(1, self.step_count) / flops.dense_step_flops(self.macs)
