"""Learned sparsity as a training workflow: train hard-concrete gates with an L0 penalty, then turn them
into masks and retrain the survivors (Louizos, Welling & Kingma 2018; the pieces are in `deepzip.prune.l0`).

    loss = task loss + penalty x excess,   excess = E[L0] / gated weights                    (no target)
                                           excess = max(0, E[L0] / gated weights - (1 - s))  (global target s)
                                           excess = sum_l n_l / n max(0, E[L0_l] / n_l - (1 - s_l))  (per layer)

With a target the penalty pushes only while the expected density is above it, so the gates settle at
the target and training sorts which weights stay. The gates have their own Adam (``L0.lr``): the
weights keep the retraining optimizer and its cosine schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..data import DataSplits
from ..prune import l0, prunable_weights, sparsity_report
from ..prune.configs import L0
from ..prune.methods import per_layer
from .config import TrainConfig
from .loop import Loss, TrainResult, train

Targets = float | Mapping[str, float] | None


def targets_of(method: L0, model: nn.Module) -> tuple[list[str], Targets]:
    """(the gated parameter names, the target: None, a global sparsity or {name: sparsity})."""
    weights, kinds = prunable_weights(model, method.extra, method.exclude)
    if method.layer_sparsity is not None:
        return list(weights), per_layer(method.layer_sparsity, weights, kinds, "layer_sparsity")
    return list(weights), method.sparsity


def excess_density(model: nn.Module, target: Targets) -> torch.Tensor:
    """The penalised quantity (module docstring): differentiable in the gates' log_alpha."""
    expected = l0.expected_l0(model)
    total = sum(n for _, n in expected.values())
    if total == 0:
        return torch.zeros(())
    if target is None:
        return sum(e for e, _ in expected.values()) / total
    if isinstance(target, Mapping):
        return sum((n / total) * torch.relu(e / max(n, 1) - (1 - target[name])) for name, (e, n) in expected.items())
    return torch.relu(sum(e for e, _ in expected.values()) / total - (1 - target))


class PenalizedLoss:
    """The task loss plus ``penalty`` x `excess_density`, in training mode only (evaluation reports the
    task loss alone, so validation losses compare with other runs)."""

    def __init__(self, loss: Loss, model: nn.Module, penalty: float, target: Targets) -> None:
        self.loss, self.model, self.penalty, self.target = loss, model, penalty, target

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = self.loss(outputs, targets)
        if self.model.training and self.penalty > 0:
            value = value + self.penalty * excess_density(self.model, self.target).to(value.device)
        return value


class GateSteps:
    """``step_with`` for the training loop: Adam on the gates' log_alpha at ``lr``, then the loop's own
    optimizer on everything else (the gates' gradients are cleared first, so it skips them), then the
    reference's clamp of log_alpha. Its Adam state goes into the loop's checkpoints."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr: float) -> None:
        self.model, self.optimizer = model, optimizer
        self.params = l0.log_alphas(model)
        self.gates = torch.optim.Adam(self.params, lr=lr)

    def step(self) -> None:
        self.gates.step()
        for param in self.params:
            param.grad = None
        self.optimizer.step()
        l0.constrain(self.model)

    def state_dict(self) -> dict[str, Any]:
        return self.gates.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gates.load_state_dict(state)


def train_gates(model: nn.Module, data: DataSplits, method: L0, cfg: TrainConfig, run_dir: Path | None = None,
                hooks=(), description: dict | None = None, progress: bool = True, loss=None,
                metric=None) -> tuple[TrainResult, Targets]:
    """Gate ``model``'s target weights (in place) and train weights and gates together for ``cfg.epochs``
    with the L0 penalty; returns (the training result, the target the masks will meet). The model
    keeps its gates: `deepzip.prune.l0.finish` turns them into masks."""
    names, target = targets_of(method, model)
    l0.install_gates(model, names, method.droprate_init, method.temperature, method.seed)
    fit = {k: v for k, v in (("metric", metric),) if v is not None}
    task_loss = loss if loss is not None else torch.nn.functional.cross_entropy
    result = train(model, data, cfg, run_dir=run_dir, resume=True, hooks=hooks, description=description,
                   progress=progress, loss=PenalizedLoss(task_loss, model, method.penalty, target),
                   step_with=lambda optimizer, _total: GateSteps(model, optimizer, method.lr), **fit)
    l0.refresh(model)  # the test-time gated weights (a finished run was loaded, not run forward)
    return result, target


def gate_summary(model: nn.Module) -> dict[str, Any]:
    """Where the gates stand: the test-time open fraction and the expected density, per layer and overall."""
    report = sparsity_report(model)
    expected = {name: (float(e.detach()), n) for name, (e, n) in l0.expected_l0(model).items()}
    total = sum(n for _, n in expected.values())
    return {"open_gates": 1 - report["sparsity"],
            "expected_density": sum(e for e, _ in expected.values()) / max(total, 1),
            "layers": {name: {"open": l["kept"], "expected_density": expected[name][0] / max(expected[name][1], 1)}
                       for name, l in ((l["layer"], l) for l in report["layers"]) if name in expected}}

