"""Pruning methods: each maps a model's prunable weights to keep-masks. One registry: `METHODS`.

Every method takes ``weights`` ({name: tensor}, model order), ``kinds`` ({name: 'fc' | 'conv' | ...})
and keyword options, and returns ``{param name: bool mask}`` (structured pruning also masks biases).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..registry import Registry
from . import allocate, criteria
from .targets import split_name

METHODS: Registry = Registry("pruning method")
Weights = Mapping[str, torch.Tensor]


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
                raise ValueError(f"{what}: no value for layer {name}; give one by name or kind")
            out[name] = default
    return out


def masks_from_sparsities(weights: Weights, sparsities: Mapping[str, float], round_to: int = 1) -> dict[str, torch.Tensor]:
    return {n: criteria.fraction_mask(w, sparsities[n], round_to) for n, w in weights.items()}


@METHODS.register("global")
def global_magnitude(weights: Weights, kinds, sparsity: float, round_to: int = 1, **_) -> dict[str, torch.Tensor]:
    """One magnitude threshold across all layers: flatten, threshold once, slice back."""
    flat = torch.cat([w.detach().abs().reshape(-1) for w in weights.values()])
    keep = criteria.topk_mask(flat, criteria.kept_count(flat.numel(), sparsity)).split(
        [w.numel() for w in weights.values()])
    masks = {n: k.reshape(w.shape) for (n, w), k in zip(weights.items(), keep)}
    if round_to > 1:  # re-cut each layer at its global share, rounded to the hardware multiple
        shares = {n: 1 - m.sum().item() / m.numel() for n, m in masks.items()}
        masks = masks_from_sparsities(weights, shares, round_to)
    return masks


@METHODS.register("uniform")
def uniform(weights: Weights, kinds, sparsity: float, scales=None, round_to: int = 1, **_):
    """Every layer at the same sparsity (rate scales: 0 excludes a layer, 0.5 prunes it at half rate)."""
    scale = per_layer(scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.uniform({n: w.numel() for n, w in weights.items()}, sparsity, scale)
    return masks_from_sparsities(weights, alloc, round_to)


@METHODS.register("erk")
def erk(weights: Weights, kinds, sparsity: float, scales=None, round_to: int = 1, **_):
    """Erdos-Renyi-Kernel allocation (Evci et al. 2020), magnitude within each layer."""
    scale = per_layer(scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.erk({n: tuple(w.shape) for n, w in weights.items()}, sparsity, scale)
    return masks_from_sparsities(weights, alloc, round_to)


@METHODS.register("fraction")
def fraction(weights: Weights, kinds, sparsity=None, layer_sparsity=None, round_to: int = 1, **_):
    """A fixed fraction per layer or per kind, e.g. {'fc': 0.92, 'conv': 0.66} (Han et al. 2015)."""
    alloc = per_layer(layer_sparsity if layer_sparsity is not None else sparsity, weights, kinds, "layer_sparsity")
    return masks_from_sparsities(weights, {n: criteria.check_sparsity(s, f"sparsity of {n}") for n, s in alloc.items()},
                                 round_to)


@METHODS.register("threshold")
def threshold(weights: Weights, kinds, sparsity=None, quality=1.0, **_):
    """Deep Compression's rule per layer: prune |w| < quality * std(w); quality per layer or kind."""
    q = per_layer(quality, weights, kinds, "quality")
    return {n: criteria.std_threshold_mask(w, q[n]) for n, w in weights.items()}


@METHODS.register("sensitivity")
def sensitivity(weights: Weights, kinds, sparsity: float, curves=None, base_accuracy=None, round_to: int = 1, **_):
    """Per-layer sparsities from measured sensitivity curves (see `deepzip.prune.sensitivity_curves`)."""
    if curves is None or base_accuracy is None:
        raise ValueError("method 'sensitivity' needs curves= and base_accuracy= (from sensitivity_curves)")
    alloc = allocate.sensitivity({n: w.numel() for n, w in weights.items()}, curves, sparsity, base_accuracy)
    return masks_from_sparsities(weights, alloc, round_to)


@METHODS.register("random")
def random(weights: Weights, kinds, sparsity=None, per_layer_sparsity=None, allocation="uniform", seed: int = 0,
           scales=None, **_):
    """The control: random positions, per-layer sparsities from ``per_layer_sparsity`` or ``allocation``."""
    if per_layer_sparsity is None:
        if allocation not in ("uniform", "erk", "global"):
            raise ValueError(f"allocation must be uniform, erk or global, got {allocation!r}")
        reference = METHODS.get(allocation)(weights, kinds, sparsity, scales=scales)
        per_layer_sparsity = {n: 1 - m.sum().item() / m.numel() for n, m in reference.items()}
    alloc = per_layer(per_layer_sparsity, weights, kinds, "per_layer_sparsity")
    generator = torch.Generator().manual_seed(seed)
    return {n: criteria.random_mask(w.shape, alloc[n], generator) for n, w in weights.items()}


@METHODS.register("nm")
def n_of_m(weights: Weights, kinds, sparsity=None, n: int = 2, m: int = 4, **_):
    """N:M along the input dimension (2:4 is what sparse tensor cores run)."""
    return {name: criteria.nm_mask(w, n, m) for name, w in weights.items()}


@METHODS.register("structured")
def structured(weights: Weights, kinds, sparsity: float, norm: str = "l1", scales=None, round_to: int = 1,
               biases: Mapping[str, torch.Tensor | None] | None = None, **_):
    """Whole output units (neurons / filters) by L1 or L2 norm; their biases are masked too, so a pruned
    unit outputs exactly zero and `shrink` can remove it without changing the model's outputs."""
    bad = [n for n in weights if kinds[n] not in ("fc", "conv")]
    if bad:
        raise ValueError(f"structured pruning works on Linear and Conv layers; exclude {', '.join(bad)}")
    scale = per_layer(scales, weights, kinds, "scales", default=1.0)
    alloc = allocate.uniform({n: w.shape[0] for n, w in weights.items()}, sparsity, scale)
    masks: dict[str, Any] = {}
    for name, w in weights.items():
        units = criteria.structured_mask(w, alloc[name], norm, round_to)
        masks[name] = units.reshape(-1, *([1] * (w.dim() - 1))).expand_as(w).clone()
        bias = (biases or {}).get(name)
        if bias is not None:
            masks[split_name(name)[0] + ".bias" if split_name(name)[0] else "bias"] = units.clone()
    return masks
