"""Turn structured (whole-unit) pruning into a smaller dense model: remove the units, rewire the consumer.

Producer/consumer pairs are given explicitly or found along the chain of Linear/Conv layers in
registration order (LeNets, Conv-2/4/6, MLPs, VGG-style nets); a Conv followed by a Linear is wired
through the flatten (channel-major). Models with branches or normalization between the pair need
explicit pairs; the outputs of a shrunk model equal the masked model's exactly for plain chains.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from . import masks as mask_state
from .targets import replace_module

_CHAIN = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _units(m: nn.Module, side: str) -> int:
    if isinstance(m, nn.Linear):
        return m.out_features if side == "out" else m.in_features
    return m.out_channels if side == "out" else m.in_channels


def find_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(producer, consumer) module names along the model's chain of Linear / Conv layers."""
    chain = [(n, m) for n, m in model.named_modules() if isinstance(m, _CHAIN)]
    pairs = []
    for (a_name, a), (b_name, b) in zip(chain, chain[1:]):
        out, inp = _units(a, "out"), _units(b, "in")
        if out == inp or (isinstance(b, nn.Linear) and not isinstance(a, nn.Linear) and inp % out == 0):
            pairs.append((a_name, b_name))
    return pairs


def _slice_producer(m: nn.Module, keep: torch.Tensor) -> nn.Module:
    if isinstance(m, nn.Linear):
        new = nn.Linear(m.in_features, len(keep), bias=m.bias is not None)
    else:
        if m.groups != 1:
            raise ValueError("shrink does not support grouped convolutions")
        new = type(m)(m.in_channels, len(keep), m.kernel_size, m.stride, m.padding, m.dilation,
                      bias=m.bias is not None, padding_mode=m.padding_mode)
    new = new.to(device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight[keep])
        if m.bias is not None:
            new.bias.copy_(m.bias[keep])
    return new


def _slice_consumer(m: nn.Module, keep: torch.Tensor, units: int) -> nn.Module:
    per_unit = _units(m, "in") // units  # >1 when a Linear consumes a flattened conv output
    columns = (keep[:, None] * per_unit + torch.arange(per_unit, device=keep.device)).reshape(-1)
    if isinstance(m, nn.Linear):
        new = nn.Linear(len(columns), m.out_features, bias=m.bias is not None)
    else:
        new = type(m)(len(keep), m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                      bias=m.bias is not None, padding_mode=m.padding_mode)
    new = new.to(device=m.weight.device, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight[:, columns])
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new


def shrink(model: nn.Module, pairs: Sequence[tuple[str, str]] | None = None) -> nn.Module:
    """Remove every output unit whose weights are all zero from each producer, and the matching inputs of
    its consumer; returns ``model`` (modified in place), dense and without masks."""
    mask_state.remove(model)
    pairs = list(find_pairs(model) if pairs is None else pairs)
    plans = []
    for a_name, b_name in pairs:
        a = model.get_submodule(a_name)
        model.get_submodule(b_name)  # a bad consumer name fails here, before any layer changes
        rows = a.weight.detach().reshape(a.weight.shape[0], -1)
        alive = rows.any(dim=1)
        if a.bias is not None:
            alive |= a.bias.detach() != 0  # a unit with a bias still outputs something
        keep = torch.nonzero(alive).reshape(-1)
        if len(keep) == 0:
            keep = torch.tensor([0], device=rows.device)  # keep one unit so the layer stays a valid module
        plans.append((a_name, b_name, keep, _units(a, "out")))
    for a_name, b_name, keep, units in plans:
        if len(keep) == units:
            continue
        replace_module(model, b_name, _slice_consumer(model.get_submodule(b_name), keep, units))
        replace_module(model, a_name, _slice_producer(model.get_submodule(a_name), keep))
    return model
