"""The module layer: prune any ``nn.Module`` in place, and report its sparsity."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from . import masks as mask_state
from .criteria import check_sparsity
from .methods import METHODS
from .targets import find_targets, layer_kind, split_name


def prunable_weights(model: nn.Module, extra: Iterable[str] = (), exclude: Iterable[str] = ()) -> tuple[dict, dict]:
    """({name: weight}, {name: kind}) for the model's prunable parameters."""
    targets = find_targets(model, extra, exclude)
    weights = {n: getattr(m, split_name(n)[1]) for n, m in targets.items()}  # weight-shared ones included
    return weights, {n: layer_kind(m) for n, m in targets.items()}


def compute_masks(model: nn.Module, sparsity: float | None = None, method: str = "global",
                  extra: Iterable[str] = (), exclude: Iterable[str] | None = None, **options: Any) -> dict[str, torch.Tensor]:
    """The masks ``method`` gives for ``model``, tightened by the masks it already has (pruned stays pruned)."""
    fn = METHODS.get(method)
    if sparsity is not None:
        check_sparsity(sparsity)
    elif method not in ("threshold", "nm", "fraction", "random"):
        raise ValueError(f"method {method!r} needs a target sparsity")
    if exclude is None:
        # Structured pruning cannot remove output units of the last layer: they are the model's outputs.
        exclude = [list(find_targets(model, extra))[-1]] if method == "structured" else []
    weights, kinds = prunable_weights(model, extra, exclude)
    if method == "structured":
        options["biases"] = {n: getattr(model.get_submodule(split_name(n)[0]), "bias", None) for n in weights}
    masks = fn(weights, kinds, sparsity, **options)
    existing = mask_state.get_masks(model)
    return {n: m & existing[n] if n in existing else m for n, m in masks.items()}


def prune(model: nn.Module, sparsity: float | None = 0.9, method: str = "global", **options: Any) -> nn.Module:
    """Prune ``model`` in place and return it.

    ``method``: one of `METHODS` (global, uniform, erk, fraction, threshold, sensitivity, random, nm,
    structured). Options: ``exclude`` (layer names), ``extra`` (other parameter names), ``scales``
    (per-layer rate multipliers), ``quality`` (threshold), ``layer_sparsity`` (fraction), ``n``/``m``
    (nm), ``norm`` (structured), ``round_to`` (kept counts a multiple of this), ``seed`` (random).
    All masks are computed before any is applied: on error the model is unchanged.
    """
    masks = compute_masks(model, sparsity, method, **options)
    mask_state.apply_masks(model, masks)
    return model


def sparsity_report(model: nn.Module, extra: Iterable[str] = ()) -> dict[str, Any]:
    """Per prunable layer: total weights, nonzero, % kept; and the global figure over those layers."""
    weights, kinds = prunable_weights(model, extra)
    layers = []
    for name, w in weights.items():
        nonzero = int(torch.count_nonzero(w).item())
        layers.append({"layer": name, "kind": kinds[name], "shape": list(w.shape), "total": w.numel(),
                       "nonzero": nonzero, "kept": nonzero / max(w.numel(), 1)})
    total = sum(l["total"] for l in layers)
    nonzero = sum(l["nonzero"] for l in layers)
    return {"layers": layers, "total": total, "nonzero": nonzero, "kept": nonzero / max(total, 1),
            "sparsity": 1 - nonzero / max(total, 1)}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{'layer':<28}{'shape':>18}{'weights':>12}{'nonzero':>12}{'kept':>9}"]
    for l in report["layers"]:
        lines.append(f"{l['layer']:<28}{'x'.join(map(str, l['shape'])):>18}{l['total']:>12,}{l['nonzero']:>12,}{l['kept']:>9.2%}")
    lines.append(f"{'total':<28}{'':>18}{report['total']:>12,}{report['nonzero']:>12,}{report['kept']:>9.2%}")
    return "\n".join(lines)
