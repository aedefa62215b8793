"""Pruning implementations, one per config type in `configs` (dispatched through `METHODS`).

Each takes the config, the model's prunable ``weights`` ({name: tensor}, model order), their ``kinds``
({name: 'fc' | 'conv' | ...}) and ``biases`` ({weight name: bias or None}), and returns
``{param name: bool keep-mask}`` (structured pruning also masks biases). Pure: nothing is changed.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..registry import METHODS
from . import allocate, criteria
from .configs import (ERK, L0, NM, GlobalMagnitude, LayerFraction, RandomPruning, Sensitivity, StdThreshold,
                      Structured, UniformMagnitude)
from .targets import split_name

Weights = Mapping[str, torch.Tensor]
Masks = dict[str, torch.Tensor]


def per_layer(spec: float | Mapping[str, float] | None, weights: Weights, kinds: Mapping[str, str],
              what: str, default: float | None = None) -> dict[str, float]:
    """Resolve a number, or a dict keyed by parameter name, module name or layer kind, for every layer."""
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        return {name: float(spec) for name in weights}
    allowed = set(weights) | {split_name(n)[0] for n in weights} | set(kinds.values())
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown layer(s) {', '.join(sorted(unknown))}; allowed: layer names "
                         f"{', '.join(weights)} or kinds {', '.join(sorted(set(kinds.values())))}")
    out = {}
    for name in weights:
        for key in (name, split_name(name)[0], kinds[name]):
            if key in spec:
                out[name] = float(spec[key])
                break
        else:
            if default is None:
                raise ValueError(f"{what}: no value for layer {name}; give one by name or kind "
                                 f"(given: {', '.join(spec) or 'none'})")
            out[name] = default
    return out


def masks_from_sparsities(weights: Weights, sparsities: Mapping[str, float], round_to: int = 1) -> Masks:
    return {n: criteria.fraction_mask(w, sparsities[n], round_to) for n, w in weights.items()}


def compute(config: Any, weights: Weights, kinds: Mapping[str, str],
            biases: Mapping[str, torch.Tensor | None]) -> Masks:
    """The masks ``config`` gives for these weights (dispatch by the config's type)."""
    return METHODS.handler(config)(config, weights, kinds, biases)


@METHODS.implements(GlobalMagnitude)
def _global(cfg: GlobalMagnitude, weights: Weights, kinds, biases) -> Masks:
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    keep = criteria.topk_mask(flat, criteria.kept_count(flat.numel(), cfg.sparsity)).split(
        [w.numel() for w in weights.values()])
    masks = {n: k.reshape(w.shape) for (n, w), k in zip(weights.items(), keep)}
    if cfg.round_to > 1:  # re-cut each layer at its global share, rounded to the hardware multiple
        shares = {n: 1 - m.sum().item() / m.numel() for n, m in masks.items()}
        masks = masks_from_sparsities(weights, shares, cfg.round_to)
    return masks


@METHODS.implements(UniformMagnitude)
def _uniform(cfg: UniformMagnitude, weights: Weights, kinds, biases) -> Masks:
    scale = per_layer(cfg.scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.uniform({n: w.numel() for n, w in weights.items()}, cfg.sparsity, scale)
    return masks_from_sparsities(weights, alloc, cfg.round_to)


@METHODS.implements(ERK)
def _erk(cfg: ERK, weights: Weights, kinds, biases) -> Masks:
    scale = per_layer(cfg.scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.erk({n: tuple(w.shape) for n, w in weights.items()}, cfg.sparsity, scale)
    return masks_from_sparsities(weights, alloc, cfg.round_to)


@METHODS.implements(LayerFraction)
def _fraction(cfg: LayerFraction, weights: Weights, kinds, biases) -> Masks:
    alloc = per_layer(cfg.layer_sparsity, weights, kinds, "layer_sparsity")
    return masks_from_sparsities(weights, alloc, cfg.round_to)


@METHODS.implements(StdThreshold)
def _threshold(cfg: StdThreshold, weights: Weights, kinds, biases) -> Masks:
    quality = per_layer(cfg.quality, weights, kinds, "quality")
    return {n: criteria.std_threshold_mask(w, quality[n]) for n, w in weights.items()}


@METHODS.implements(Sensitivity)
def _sensitivity(cfg: Sensitivity, weights: Weights, kinds, biases) -> Masks:
    missing = [n for n in weights if n not in cfg.curves]
    if missing:
        raise ValueError(f"sensitivity: no curve for {', '.join(missing)}; measure it with sensitivity_curves")
    alloc = allocate.sensitivity({n: w.numel() for n, w in weights.items()}, cfg.curves, cfg.sparsity,
                                 cfg.base_accuracy)
    return masks_from_sparsities(weights, alloc, cfg.round_to)


_ALLOCATIONS = {"uniform": UniformMagnitude, "erk": ERK, "global": GlobalMagnitude}


@METHODS.implements(RandomPruning)
def _random(cfg: RandomPruning, weights: Weights, kinds, biases) -> Masks:
    if cfg.layer_sparsity is not None:
        alloc = per_layer(cfg.layer_sparsity, weights, kinds, "layer_sparsity")
    else:
        reference_cfg = _ALLOCATIONS[cfg.allocation](sparsity=cfg.sparsity)
        if cfg.scales is not None:
            if cfg.allocation == "global":
                raise ValueError("random pruning: scales apply to allocation uniform or erk, not global")
            reference_cfg = _ALLOCATIONS[cfg.allocation](sparsity=cfg.sparsity, scales=cfg.scales)
        reference = compute(reference_cfg, weights, kinds, biases)
        alloc = {n: 1 - m.sum().item() / m.numel() for n, m in reference.items()}
    generator = torch.Generator().manual_seed(cfg.seed)
    return {n: criteria.random_mask(w.shape, alloc[n], generator) for n, w in weights.items()}


@METHODS.implements(NM)
def _n_of_m(cfg: NM, weights: Weights, kinds, biases) -> Masks:
    return {name: criteria.nm_mask(w, cfg.n, cfg.m) for name, w in weights.items()}


@METHODS.implements(Structured)
def _structured(cfg: Structured, weights: Weights, kinds, biases) -> Masks:
    bad = [n for n in weights if kinds[n] not in ("fc", "conv")]
    if bad:
        raise ValueError(f"structured pruning works on Linear and Conv layers; exclude {', '.join(bad)}")
    scale = per_layer(cfg.scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.uniform({n: w.shape[0] for n, w in weights.items()}, cfg.sparsity, scale)
    masks: Masks = {}
    for name, w in weights.items():
        units = criteria.structured_mask(w, alloc[name], cfg.norm, cfg.round_to)
        masks[name] = units.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
        if biases.get(name) is not None:
            module = split_name(name)[0]
            masks[f"{module}.bias" if module else "bias"] = units.clone()
    return masks


@METHODS.implements(L0)
def _l0(cfg: L0, weights: Weights, kinds, biases) -> Masks:
    # The masks of L0 are learned by training with data; refusing loudly beats a silent magnitude cut.
    raise ValueError("method 'l0' learns its masks while training, so it needs data: use "
                     "deepzip.train.prune_and_retrain(model, data, PruneConfig(method='l0', ...), train_cfg), "
                     "'deepzip prune --method l0' or 'deepzip compress --prune-method l0'; gates trained by "
                     "hand become masks with deepzip.prune.l0.finish(model, sparsity)")
