"""The module layer: prune any ``nn.Module`` in place, and report its sparsity."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from . import masks as mask_state
from ..registry import METHODS
from .calibrated import prune_calibrated
from .configs import FAMILY, Calibrated, PruneMethod
from .methods import compute
from .targets import find_targets, layer_kind, split_name


def prunable_weights(model: nn.Module, extra: Iterable[str] = (), exclude: Iterable[str] = ()) -> tuple[dict, dict]:
    """({name: weight}, {name: kind}) for the model's prunable parameters."""
    targets = find_targets(model, extra, exclude)
    weights = {n: getattr(m, split_name(n)[1]) for n, m in targets.items()}  # weight-shared ones included
    return weights, {n: layer_kind(m) for n, m in targets.items()}


def resolve(config: PruneMethod | float | None = None, method: str | None = None, **options: Any) -> PruneMethod:
    """The pruning config a call names: a config as is, or ``method`` (default global) built from options,
    with a number in place of the config meaning ``sparsity``."""
    return METHODS.resolve(FAMILY, config, method, shorthand="sparsity", default="global", **options)


def _targets(model: nn.Module, cfg: PruneMethod) -> tuple[dict, dict]:
    exclude = cfg.exclude
    if exclude is None:
        # Structured pruning cannot remove output units of the last layer: they are the model's outputs.
        exclude = [list(find_targets(model, cfg.extra))[-1]]
    return prunable_weights(model, cfg.extra, exclude)


def compute_masks(model: nn.Module, config: PruneMethod | float | None = None, method: str | None = None,
                  **options: Any) -> dict[str, torch.Tensor]:
    """The masks a pruning config gives for ``model``, tightened by the masks it already has (pruned
    stays pruned). Nothing is changed. Arguments as for `prune`."""
    cfg = resolve(config, method, **options)
    if isinstance(cfg, Calibrated):
        raise TypeError(f"{cfg.method} needs calibration data and updates weights as it goes; call "
                        f"prune(model, config, calibration=batches)")
    weights, kinds = _targets(model, cfg)
    biases = {n: getattr(model.get_submodule(split_name(n)[0]), "bias", None) for n in weights}
    masks = compute(cfg, weights, kinds, biases)
    existing = mask_state.get_masks(model)
    return {n: m.to(existing[n].device) & existing[n] if n in existing else m for n, m in masks.items()}


def prune(model: nn.Module, config: PruneMethod | float | None = None, method: str | None = None, *,
          calibration: Iterable[Any] | None = None, checkpoint_dir: str | Path | None = None, progress: bool = True,
          **options: Any) -> nn.Module:
    """Prune ``model`` in place and return it.

    ``config``: a pruning config (`GlobalMagnitude`, `ERK`, `NM`, ... in `deepzip.prune.configs`), or the
    short forms: a target sparsity, and/or ``method`` by name (global by default: one magnitude
    threshold over all layers) with that config's fields as keyword options, e.g.
    ``prune(model, 0.9, "erk", exclude=["conv1"])``. An option the method does not have is a TypeError
    that lists the ones it has. All masks are computed before any is applied: on error the model is
    unchanged.

    The calibration methods (`Wanda`, `SparseGPT`, `OWL`) need ``calibration``: input batches (tensors,
    or dicts of tensors for ``model(**batch)``) that they run block by block (`deepzip.calibrate`);
    ``checkpoint_dir`` makes that resumable per block, ``progress`` shows a bar. The other methods
    look only at the weights, and giving them calibration data is an error.
    """
    cfg = resolve(config, method, **options)
    if isinstance(cfg, Calibrated):
        if calibration is None:
            raise TypeError(f"prune method {cfg.method!r} needs calibration data: prune(model, config, "
                            f"calibration=batches)")
        prune_calibrated(model, cfg, calibration, checkpoint_dir=checkpoint_dir, progress=progress)
        return model
    if calibration is not None or checkpoint_dir is not None:
        needing = ", ".join(n for n in METHODS.names(FAMILY) if getattr(METHODS.config_class(FAMILY, n),
                                                                          "needs_calibration", False))
        raise TypeError(f"prune method {cfg.method!r} uses only the weights; calibration= and checkpoint_dir= "
                        f"apply to {needing}")
    mask_state.apply_masks(model, compute_masks(model, cfg))
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
