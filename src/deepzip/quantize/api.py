"""The module layer: quantize any ``nn.Module`` by weight sharing, choose bits per layer."""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..prune.api import prunable_weights
from ..prune.masks import get_masks
from ..prune.methods import per_layer
from ..prune.targets import split_name
from ..registry import METHODS
from .configs import FAMILY, PAPER_BITS, KMeans, QuantizeMethod, Uniform, WeightedKMeans, check_bits_value
from .sharing import cluster, codebooks, finalize, install, share, shared_layers
from .weighted import LayerData, layer_data, weighted_share

def resolve_bits(model: nn.Module, bits: int | Mapping[str, int] | None, extra: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> dict[str, int]:
    """Bits for every target layer: an int for all, or a dict by layer name / module name / kind.

    ``None`` means the paper's setting: 8 bits for conv layers, 5 for fully connected ones.
    """
    weights, kinds = prunable_weights(model, extra, exclude)
    if bits is None:
        bits = PAPER_BITS
    if isinstance(bits, Mapping):  # kinds absent from this model are fine to mention
        bits = {k: v for k, v in bits.items() if k not in PAPER_BITS or k in kinds.values()}
    return {n: check_bits_value(b, f"bits of {n}") for n, b in per_layer(bits, weights, kinds, "bits").items()}


def resolve(config: QuantizeMethod | int | Mapping[str, int] | None = None, method: str | None = None,
            **options: Any) -> QuantizeMethod:
    """The quantization config a call names: a config as is, or ``method`` (default kmeans) built from
    options, with a number or dict in place of the config meaning ``bits``."""
    return METHODS.resolve(FAMILY, config, method, shorthand="bits", default="kmeans", **options)


def quantize(model: nn.Module, config: QuantizeMethod | int | Mapping[str, int] | None = None,
             method: str | None = None, *, sensitivity: Mapping[str, Any] | None = None,
             gram: Mapping[str, Any] | None = None, **options: Any) -> nn.Module:
    """Weight-share ``model`` in place and return it: each layer's surviving weights become a 2**bits
    codebook + index.

    ``config``: a quantization config (`KMeans`, `Uniform` in `deepzip.quantize.configs`), or the short
    forms: ``bits`` (int, dict per layer/kind, or None for the paper's 8-bit conv / 5-bit fc) and/or
    ``method`` by name with that config's fields as keyword options, e.g. ``quantize(model, 4,
    init="density")``. Pruned positions stay exactly zero and are not a cluster; biases stay fp32.
    ``sensitivity`` / ``gram``: calibration data of `WeightedKMeans` (per-weight importances and the inputs'
    Gram matrices, by parameter or module name; see `deepzip.quantize.weighted`).
    Every codebook is computed before any layer changes: on error the model is unchanged.
    """
    cfg = resolve(config, method, **options)
    already = set(shared_layers(model))
    resolved = resolve_bits(model, cfg.bits, cfg.extra, cfg.exclude)
    for name in resolved:
        if name in already:
            raise ValueError(f"{name} is already weight-shared; call deepzip.quantize.finalize(model) first")
    if isinstance(cfg, WeightedKMeans):
        weights, kinds = prunable_weights(model, cfg.extra, cfg.exclude)
        data = layer_data(model, cfg, {n: weights[n] for n in resolved}, kinds, sensitivity, gram)
    elif sensitivity is not None or gram is not None:
        raise TypeError(f"sensitivity and gram are data of the weighted method (WeightedKMeans), "
                        f"not of {type(cfg).__name__}")
    else:
        data = LayerData()
    shared = {name: METHODS.handler(cfg)(cfg, model, name, bits, data) for name, bits in resolved.items()}
    for name, state in shared.items():
        module_name, param = split_name(name)
        install(model.get_submodule(module_name), param, *state)
    return model


@METHODS.implements(KMeans)
def _kmeans(cfg: KMeans, model: nn.Module, name: str, bits: int, _data: LayerData) -> tuple[torch.Tensor, torch.Tensor]:
    return cluster(model, name, bits, cfg.init, cfg.seed)


@METHODS.implements(Uniform)
def _uniform(cfg: Uniform, model: nn.Module, name: str, bits: int, _data: LayerData) -> tuple[torch.Tensor, torch.Tensor]:
    return cluster(model, name, bits, "linear", iters=0)


METHODS.implements(WeightedKMeans)(weighted_share)


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Index bits each shared layer needs: ceil(log2(codebook size)), at least 1."""
    return {n: max(1, (cb.shape[-1] - 1).bit_length()) for n, (cb, _) in codebooks(model).items()}


@torch.no_grad()
def bits_sensitivity(model: nn.Module, metric: Callable[[nn.Module], float], candidates: Sequence[int] = range(1, 9),
                     init: str = "linear", exclude: Iterable[str] = (), progress: bool = True) -> dict[str, list]:
    """{layer: [(bits, metric)]}: each layer quantized alone (no fine-tuning); the model is left as it was."""
    weights, _ = prunable_weights(model, exclude=exclude)
    curves: dict[str, list] = {}
    bar = tqdm(total=len(weights) * len(candidates), desc="bit sensitivity", disable=None if progress else True, leave=False)
    for name in weights:
        curves[name] = []
        for b in candidates:
            trial = copy.deepcopy(model)
            share(trial, name, b, init)
            curves[name].append((b, float(metric(trial))))
            bar.update()
    bar.close()
    return curves


def allocate_bits(curves: Mapping[str, Sequence[tuple[int, float]]], base: float, weights: Mapping[str, int],
                  max_drop: float | None = None, budget_bits: float | None = None) -> dict[str, int]:
    """Fewest bits per layer whose measured drop stays within a tolerance.

    Give ``max_drop`` (an accuracy budget: the tolerance itself) or ``budget_bits`` (a size budget: mean
    index bits per stored weight, weighted by ``weights`` = nonzero counts); with a size budget the
    tolerance is the smallest that fits.
    """
    if (max_drop is None) == (budget_bits is None):
        raise ValueError("give exactly one of max_drop (accuracy budget) or budget_bits (size budget)")

    def choose(tol: float) -> dict[str, int]:
        out = {}
        for name, curve in curves.items():
            ok = [b for b, acc in curve if base - acc <= tol + 1e-12]
            out[name] = min(ok) if ok else max(b for b, _ in curve)
        return out

    if max_drop is not None:
        return choose(max_drop)
    total = sum(weights.values())
    for tol in sorted({max(0.0, base - acc) for c in curves.values() for _, acc in c} | {0.0}):
        alloc = choose(tol)
        if sum(alloc[n] * weights[n] for n in alloc) <= budget_bits * total:
            return alloc
    raise ValueError(f"no allocation from these curves fits {budget_bits} bits per weight; "
                     f"measure fewer bits per layer")


def nonzero_counts(model: nn.Module) -> dict[str, int]:
    masks = get_masks(model)
    weights, _ = prunable_weights(model)
    return {n: int(masks[n].sum()) if n in masks else w.numel() for n, w in weights.items()}


__all__ = ["PAPER_BITS", "allocate_bits", "bits_sensitivity", "finalize", "layer_bits", "nonzero_counts",
           "quantize", "resolve_bits"]
