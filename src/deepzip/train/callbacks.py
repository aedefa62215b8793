"""Compression inside any training loop: small callback objects (a plain PyTorch loop, Hugging Face
``Trainer`` via `deepzip.integrations.huggingface`, Lightning, or deepzip's own loop).

    schedule = PruneOnSchedule.gradual(GlobalMagnitude(sparsity=0.9), begin=0, end=800, every=100)
    rewind = Rewind(step=500)                        # lottery-ticket rewinding point
    callbacks = [schedule, rewind]
    for cb in callbacks: cb.on_train_begin(model, optimizer)
    for step, (x, y) in enumerate(loader, start=1):
        optimizer.zero_grad(); loss_fn(model(x), y).backward(); optimizer.step()
        for cb in callbacks: cb.on_step(model, optimizer, step)
    for cb in callbacks: cb.on_train_end(model)
    rewind.reset(model)                              # survivors back to their step-500 values

Masks and codebooks need no callback: they are enforced by the model's own hooks (`deepzip.prune`,
`deepzip.quantize`), so centroid fine-tuning is ordinary training of a quantized model. A callback is
also a deepzip training hook (``callback(model, optimizer, step)``), so ``train(..., hooks=[cb])`` works.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ..prune import GradualPruning, PruneMethod, apply_masks, compute_masks, get_masks, iterative_sparsities
from ..prune.masks import enforce, mask_optimizer_state


class Callback:
    """The hooks a loop calls; each defaults to doing nothing. ``step`` counts optimizer steps from 1."""

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """Before the first step."""

    def on_step(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> None:
        """After ``optimizer.step()``."""

    def on_train_end(self, model: nn.Module) -> None:
        """After the last step."""

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int) -> None:
        self.on_step(model, optimizer, step)  # a deepzip TrainHook


class PruneOnSchedule(Callback):
    """Prune with ``method`` (a pruning config with a sparsity target) at scheduled steps: gradual
    (Zhu & Gupta 2017: cubic ramp, pruning every ``every`` steps) or iterative (Han et al. 2015: equal
    fractions of what remains at given steps). After each pruning event the optimizer's state of the
    newly pruned weights is zeroed, so momentum cannot revive them."""

    def __init__(self, events: Sequence[tuple[int, PruneMethod]] = (), ramp: GradualPruning | None = None):
        self.events = dict(events)
        self.ramp = ramp
        self.history: list[tuple[int, float]] = []

    @classmethod
    def gradual(cls, method: PruneMethod, begin: int, end: int, every: int = 100) -> "PruneOnSchedule":
        return cls(ramp=GradualPruning(_target(method), begin=begin, end=end, every=every, method=method))

    @classmethod
    def iterative(cls, method: PruneMethod, at_steps: Sequence[int]) -> "PruneOnSchedule":
        """Prune at each of ``at_steps`` (e.g. at the start of each retraining round), reaching
        ``method.sparsity`` at the last one; pruned weights stay pruned."""
        steps = list(at_steps)
        if not steps or any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] < 0:
            raise ValueError(f"at_steps must be increasing steps >= 0, got {steps}")
        targets = iterative_sparsities(_target(method), len(steps))
        return cls(events=[(s, dataclasses.replace(method, sparsity=t)) for s, t in zip(steps, targets)])

    def on_train_begin(self, model, optimizer) -> None:
        self._prune_if_due(model, optimizer, 0)

    def on_step(self, model, optimizer, step: int) -> None:
        self._prune_if_due(model, optimizer, step)

    def _prune_if_due(self, model, optimizer, step: int) -> None:
        if self.ramp is not None:
            before = len(self.ramp.history)
            self.ramp(model, optimizer, step)
            self.history.extend(self.ramp.history[before:])
        if step in self.events:
            method = self.events.pop(step)
            apply_masks(model, compute_masks(model, method))
            if optimizer is not None:
                mask_optimizer_state(optimizer, model)
            self.history.append((step, method.sparsity))


def _target(method: PruneMethod) -> float:
    if not isinstance(method, PruneMethod) or method.fixes_own_sparsity:
        raise ValueError(f"a pruning schedule needs a method with a sparsity target, got {method!r}")
    return method.sparsity


class KeepMasks(Callback):
    """For loops that change weights behind autograd's back (a custom or fused optimizer, EMA, weight
    loading): re-zeroes every pruned weight and its optimizer state after each step. Not needed with
    torch's optimizers, where the masks' gradient hooks already keep pruned weights at exactly zero."""

    def on_train_begin(self, model, optimizer) -> None:
        self.on_step(model, optimizer, 0)

    def on_step(self, model, optimizer, step: int) -> None:
        enforce(model)
        if optimizer is not None:
            mask_optimizer_state(optimizer, model)


class Rewind(Callback):
    """Lottery-ticket rewinding (Frankle et al. 2019): remembers the weights at ``step`` (0: before
    training), and `reset(model)` puts every weight back to them, keeping the current masks (pruned
    weights stay zero). Call `reset` after pruning, before training the ticket again."""

    def __init__(self, step: int = 0):
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an integer >= 0, got {step!r}")
        self.step = step
        self.saved: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, model, optimizer) -> None:
        if self.step == 0:
            self._save(model)

    def on_step(self, model, optimizer, step: int) -> None:
        if step == self.step and self.saved is None:
            self._save(model)

    def _save(self, model: nn.Module) -> None:
        self.saved = {n: p.detach().clone() for n, p in model.named_parameters()}

    def reset(self, model: nn.Module) -> nn.Module:
        """The model's parameters back to the rewind point, in place (masks kept); returns the model."""
        if self.saved is None:
            raise ValueError(f"no weights saved yet: training has not reached step {self.step}")
        params = dict(model.named_parameters())
        missing = sorted(set(self.saved) - set(params))
        if missing or any(params[n].shape != w.shape for n, w in self.saved.items() if n in params):
            raise ValueError(f"this model does not match the one rewound from (missing or reshaped: "
                             f"{', '.join(missing) or 'shapes differ'})")
        with torch.no_grad():
            for name, weight in self.saved.items():
                params[name].copy_(weight)
        if get_masks(model):
            enforce(model)
        return model
