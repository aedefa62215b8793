"""Which parameters of an arbitrary model are prunable, named by their ``state_dict`` key.

By default: the ``weight`` of every Linear, Conv1d/2d/3d and Embedding, wherever it sits (so a
``torch.nn.TransformerEncoder``'s feed-forward and attention output projections are found). Any other
parameter can be added by its full name, e.g. ``layers.0.self_attn.in_proj_weight``.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def layer_kind(module: nn.Module) -> str:
    """'fc', 'conv', 'embedding' or 'other': the layer types that per-type settings refer to."""
    if isinstance(module, nn.Linear):
        return "fc"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return "other"


def split_name(name: str) -> tuple[str, str]:
    """'layers.0.linear1.weight' -> ('layers.0.linear1', 'weight')."""
    module, _, param = name.rpartition(".")
    return module, param


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` ('features.0') is."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def find_targets(model: nn.Module, extra: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """Map each prunable parameter's full name to the module that owns it, in model order.

    ``exclude`` takes parameter names or module names (``conv1`` excludes ``conv1.weight``).
    """
    targets = {f"{name}.weight" if name else "weight": module for name, module in model.named_modules()
               if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), torch.Tensor)}
    params = dict(model.named_parameters())
    for name in extra:
        if name not in params and name not in targets:
            raise ValueError(f"unknown parameter {name!r}; the model's parameters are: {', '.join(params)}")
        targets[name] = model.get_submodule(split_name(name)[0])
    exclude = list(exclude)
    known = set(targets) | {split_name(t)[0] for t in targets}
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise ValueError(f"cannot exclude unknown layer(s) {', '.join(unknown)}; prunable: {', '.join(targets)}")
    targets = {n: m for n, m in targets.items() if n not in exclude and split_name(n)[0] not in exclude}
    if not targets:
        raise ValueError(f"{type(model).__name__} has nothing to prune: no Linear, Conv or Embedding weights "
                         f"(name other parameters with extra=[...])")
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return dict(sorted(targets.items(), key=lambda item: order[split_name(item[0])[0]]))
