"""Training FLOPs of sparse training, counted as in Evci et al. 2020 (RigL, Appendix H).

A step of a layer with ``macs`` multiply-adds per example at density ``d`` costs ``d * macs`` for the
forward, ``d * macs`` for the gradient w.r.t. its input and ``d * macs`` for the gradient w.r.t. its
weights, or ``macs`` for the latter when the method needs the dense gradient (RigL at update steps, SNFS
and SR-STE at every step); dense training is ``3 * macs``. A FLOP is 2 per multiply-add. Only the
sparse target layers are counted (biases, activations, pooling and mask updates are left out, as in the
paper; they are well under 1% here).
"""

from __future__ import annotations

import torch
from torch import nn

from ..prune.targets import split_name


def layer_macs(model: nn.Module, names: list[str], example: torch.Tensor | None = None) -> dict[str, int]:
    """Multiply-adds per example of each named weight's layer: for a Linear its weight count; with an
    ``example`` batch, measured by a forward (a Conv's weight count times its output positions)."""
    modules = {n: model.get_submodule(split_name(n)[0]) for n in names}
    macs = {n: getattr(modules[n], split_name(n)[1]).numel() for n in names}
    if example is None:
        return macs
    handles = []
    for name, module in modules.items():
        def record(mod, _inputs, output, name=name):
            if isinstance(output, torch.Tensor) and isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                macs[name] = getattr(mod, split_name(name)[1]).numel() * output[0, 0].numel()
        handles.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(example[:1])
            model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return macs


def step_flops(macs: dict[str, int], densities: dict[str, float], dense_gradient: bool) -> float:
    """FLOPs per example of one training step (forward + backward) of the target layers."""
    return 2.0 * sum(m * (2 * densities[n] + (1.0 if dense_gradient else densities[n])) for n, m in macs.items())


def dense_step_flops(macs: dict[str, int]) -> float:
    return 2.0 * 3 * sum(macs.values())
