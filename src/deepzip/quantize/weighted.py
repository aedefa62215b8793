"""Sensitivity-weighted, per-row weight sharing for pretrained models (SqueezeLLM, Kim et al. 2023),
with an optional dense-and-sparse split and GPTQ-style error feedback: the `WeightedKMeans` method.

The data it needs is passed explicitly, per parameter (or module) name: ``sensitivity`` (per-weight
importances: the Fisher diagonal from `fisher_diagonal`, or a Linear's ||X_j||^2 over its input
features, e.g. ``deepzip.calibrate.input_statistics(model, batches)`` whose entries carry
``sq_norm``) and, for error feedback, ``gram`` (the inputs' X^T X, or statistics carrying ``gram``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from ..prune.api import prunable_weights
from ..prune.masks import get_masks
from ..prune.targets import split_name
from .configs import WeightedKMeans
from .feedback import feedback_assign
from .kmeans import kmeans_1d, kmeans_rows


@dataclass(frozen=True)
class LayerData:
    """Per-parameter calibration data, keyed by parameter name: importances [rows, cols] (float64) and Gram matrices."""

    sensitivity: dict[str, torch.Tensor] = field(default_factory=dict)
    gram: dict[str, torch.Tensor] = field(default_factory=dict)


def _tensor(value: Any, attribute: str, what: str) -> torch.Tensor:
    value = getattr(value, attribute, value)  # calibration statistics carry sq_norm / gram
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a tensor (or statistics with .{attribute}), got {type(value).__name__}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{what} has non-finite entries")
    return value.detach().cpu().double()


def _by_parameter(data: Mapping[str, Any] | None, targets: Mapping[str, torch.Tensor], model: nn.Module,
                  what: str) -> dict[str, Any]:
    """``data`` keyed by parameter name: a module name stands for its ``weight``; a name that is not in the
    model is an error, one that is not a target is ignored."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError(f"{what} must be a dict of layer name -> tensor, got {type(data).__name__}")
    known = dict(model.named_parameters())
    modules = dict(model.named_modules())
    out = {}
    for key, value in data.items():
        name = key if key in known or key in targets else f"{key}.weight"
        if name not in known and name not in targets:
            if key not in modules:
                raise ValueError(f"{what}: {key!r} is not a layer or parameter of this model")
            continue
        if name in targets:
            out[name] = value
    return out


def layer_data(model: nn.Module, cfg: WeightedKMeans, targets: Mapping[str, torch.Tensor],
               kinds: Mapping[str, str], sensitivity: Mapping[str, Any] | None,
               gram: Mapping[str, Any] | None) -> LayerData:
    """Check and normalise the data ``cfg`` needs for the ``targets`` (name -> weight)."""
    given = _by_parameter(sensitivity, targets, model, "sensitivity")
    grams = _by_parameter(gram, targets, model, "gram")
    if cfg.importance == "none" and given:
        raise ValueError("sensitivity given, but this WeightedKMeans has importance='none'; "
                         "set importance='calibration' or 'fisher'")
    if not cfg.error_feedback and grams:
        raise ValueError("gram given, but this WeightedKMeans has error_feedback=False")
    out = LayerData()
    for name, weight in targets.items():
        rows = weight.shape[0] if weight.dim() else 1
        cols = weight.numel() // max(rows, 1)
        embedding = kinds.get(name) == "embedding"
        if cfg.importance != "none":
            if name not in given:
                if embedding and cfg.importance == "calibration":
                    continue  # token ids have no ||X_j||: uniform, unless token counts are given
                raise ValueError(f"importance={cfg.importance!r} needs sensitivity for {name}; pass "
                                 f"sensitivity={{name: tensor}} ("
                                 + ("fisher_diagonal(model, batches, loss)" if cfg.importance == "fisher"
                                    else "deepzip.calibrate.input_statistics(model, batches)") + ")")
            out.sensitivity[name] = _importance(_tensor(given[name], "sq_norm", f"sensitivity of {name}"),
                                                weight, rows, cols, embedding, cfg.importance, name)
        if cfg.error_feedback and not embedding:
            if name not in grams:
                raise ValueError(f"error_feedback needs gram (the inputs' X^T X, [{cols}, {cols}]) for {name}; pass "
                                 f"gram={{name: tensor}} (deepzip.calibrate.input_statistics(model, batches, gram=True))")
            matrix = _tensor(grams[name], "gram", f"gram of {name}")
            if matrix.shape != (cols, cols):
                raise ValueError(f"gram of {name} must be [{cols}, {cols}], got {list(matrix.shape)}")
            out.gram[name] = matrix
    return out


def _importance(t: torch.Tensor, weight: torch.Tensor, rows: int, cols: int, embedding: bool, kind: str,
                name: str) -> torch.Tensor:
    if (t < 0).any():
        raise ValueError(f"sensitivity of {name} must be >= 0")
    if t.numel() == weight.numel() and (t.shape == weight.shape or t.dim() == 1 and rows == 1):
        return t.reshape(rows, cols)
    if kind == "fisher":
        raise ValueError(f"importance='fisher' needs a sensitivity of {name}'s shape {list(weight.shape)}, "
                         f"got {list(t.shape)}")
    if t.dim() == 1 and t.numel() == cols and not embedding:  # ||X_j||^2 over the input features
        return t.reshape(1, cols).expand(rows, cols)
    if embedding and t.dim() == 1 and t.numel() == rows:  # how often each token occurs
        return t.reshape(rows, 1).expand(rows, cols)
    raise ValueError(f"sensitivity of {name} must have the weight's shape {list(weight.shape)}"
                     + (f" or its rows' [{rows}] (token counts)" if embedding else f" or its input features' [{cols}]")
                     + f", got {list(t.shape)}")


def outlier_mask(matrix: torch.Tensor, importance: torch.Tensor | None, alive: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``fraction`` of the alive entries with the largest |w| x sqrt(importance) (|w| without importances):
    Wanda's |W| ||X_j|| score, or sqrt of OBS's w^2 F saliency with the Fisher diagonal."""
    count = int(round(fraction * int(alive.sum())))
    out = torch.zeros_like(alive)
    if count == 0:
        return out
    score = matrix.double().abs() * (importance.sqrt() if importance is not None else 1.0)
    score = torch.where(alive, score, torch.full((), -1.0, dtype=torch.float64)).reshape(-1)
    order = torch.argsort(-score, stable=True)[:count]
    out.reshape(-1)[order] = True
    return out


def weighted_share(cfg: WeightedKMeans, model: nn.Module, name: str, bits: int, data: LayerData) -> tuple:
    """(codebook, index, outlier mask, outlier values) for parameter ``name``; the model is not changed."""
    module_name, param = split_name(name)
    module = model.get_submodule(module_name)
    weight = getattr(module, param).detach().cpu().float()
    rows = weight.shape[0] if weight.dim() >= 2 else 1
    matrix = weight.reshape(rows, -1)
    importance = data.sensitivity.get(name)
    mask = get_masks(model).get(name)
    alive = mask.cpu().reshape(rows, -1) if mask is not None else torch.ones(matrix.shape, dtype=torch.bool)
    exact = outlier_mask(matrix, importance, alive, cfg.outliers)
    members = alive & ~exact
    granularity = cfg.embedding_granularity if isinstance(module, nn.Embedding) else cfg.granularity
    k = 2 ** bits
    if granularity == "row" and weight.dim() >= 2:
        codebook, index = kmeans_rows(matrix, k, cfg.init, seed=cfg.seed, weights=importance, alive=members)
    else:
        flat = members.reshape(-1)
        codebook, found = kmeans_1d(matrix.reshape(-1)[flat], k, cfg.init, seed=cfg.seed,
                                    weights=None if importance is None else importance.reshape(-1)[flat])
        codebook = codebook if len(codebook) else torch.zeros(1)
        index = torch.zeros(matrix.numel(), dtype=torch.int64)
        index[flat] = found
        index = index.reshape(matrix.shape)
    values = matrix[exact]
    if name in data.gram:
        index, swept = feedback_assign(matrix, codebook, data.gram[name], alive, exact, cfg.damp)
        values = swept[exact]
    if not exact.any():
        return codebook, index.reshape(weight.shape)
    return codebook, index.reshape(weight.shape), exact.reshape(weight.shape), values


def fisher_diagonal(model: nn.Module, batches: Iterable[Any], loss: Callable[[nn.Module, Any], torch.Tensor],
                    names: Iterable[str] | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """{parameter: sum over ``batches`` of its squared gradient}: the empirical Fisher diagonal SqueezeLLM
    weights k-means with. ``loss(model, batch)`` returns a scalar (a language-modelling or distillation
    loss for a model without labels). ``names``: the parameters (default: every Linear / Conv /
    Embedding weight). The model's parameters are not changed; their ``.grad`` is cleared."""
    weights = dict(model.named_parameters())
    targets = list(names) if names is not None else list(prunable_weights(model)[0])
    unknown = [n for n in targets if n not in weights]
    if unknown:
        raise ValueError(f"fisher_diagonal: no parameter {', '.join(map(repr, unknown[:5]))} in this model")
    sums = {n: torch.zeros_like(weights[n], dtype=torch.float32) for n in targets}
    for batch in tqdm(batches, desc="fisher", disable=None if progress else True, leave=False):
        model.zero_grad(set_to_none=True)
        value = loss(model, batch)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError("loss(model, batch) must return a scalar tensor")
        value.backward()
        for n in targets:
            if weights[n].grad is not None:
                sums[n] += weights[n].grad.detach().float() ** 2
    model.zero_grad(set_to_none=True)
    return sums
