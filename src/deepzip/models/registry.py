"""The model registry and the one entry point that builds a model by name."""

from __future__ import annotations

import torch
from torch import nn

from .. import imports
from ..imports import is_import_path
from ..registry import Registry

MODELS: Registry = Registry("model")


def glorot_init(model: nn.Module) -> nn.Module:
    """Gaussian Glorot weights and zero biases, the Lottery Ticket paper's initialization."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def build(name: str, input_shape=(1, 28, 28), num_classes: int = 10, seed: int | None = None) -> nn.Module:
    """Build a registry model by name, or call a user's ``package.module:function`` (no arguments; its own
    initialization kept), deterministically when ``seed`` is given."""
    if seed is not None:
        torch.manual_seed(seed)
    if is_import_path(name):
        model = imports.call(name, "model")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {name!r} returned {type(model).__name__}, not an nn.Module")
        model._deepzip_description = {"model": name, "input_shape": list(input_shape), "num_classes": num_classes}
        return model
    factory = MODELS.get(name)
    model = glorot_init(factory(input_shape=tuple(input_shape), num_classes=num_classes))
    # Lets deepzip.save record how to rebuild the model, so deepzip.load(path) needs no code.
    model._deepzip_description = {"model": name, "input_shape": list(input_shape), "num_classes": num_classes}
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

