"""The module layer: quantize any ``nn.Module`` by weight sharing, choose bits per layer."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..prune.api import prunable_weights
from ..prune.masks import get_masks
from ..prune.methods import per_layer
from .kmeans import INITS, check_bits
from .sharing import codebooks, finalize, shared_layers, share

PAPER_BITS = {"conv": 8, "fc": 5, "embedding": 8, "other": 8}  # Han et al. 2016: 8-bit conv, 5-bit fc


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
    resolved = per_layer(bits, weights, kinds, "bits")
    for name, b in resolved.items():
        if b != int(b):
            raise ValueError(f"bits must be an integer in 1..16, got {b} for {name}")
        check_bits(int(b))
    return {n: int(b) for n, b in resolved.items()}


def quantize(model: nn.Module, bits: int | Mapping[str, int] | None = None, init: str = "linear",
             extra: Iterable[str] = (), exclude: Iterable[str] = (), seed: int = 0, method: str = "kmeans") -> nn.Module:
    """Weight-share ``model`` in place: each layer's surviving weights become a 2**bits codebook + index.

    ``bits``: int, dict per layer/kind, or None for the paper's 8-bit conv / 5-bit fc. ``init``: linear
    (the paper's best), density, random, or optimal (exact DP). Pruned positions stay exactly zero and
    are not a cluster. Biases stay fp32. ``method='uniform'`` is the baseline: evenly spaced levels
    over [min, max], no clustering. Every argument is checked before any layer changes.
    """
    if method not in ("kmeans", "uniform"):
        raise ValueError(f"unknown method {method!r}; allowed: kmeans, uniform")
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")
    already = set(shared_layers(model))
    resolved = resolve_bits(model, bits, extra, exclude)
    for name, b in resolved.items():
        if name in already:
            raise ValueError(f"{name} is already weight-shared; call deepzip.quantize.finalize(model) first")
    for name, b in resolved.items():
        if method == "uniform":
            share(model, name, b, "linear", seed, iters=0)
        else:
            share(model, name, b, init, seed)
    return model


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Index bits each shared layer needs: ceil(log2(codebook size)), at least 1."""
    return {n: max(1, (len(cb) - 1).bit_length()) for n, (cb, _) in codebooks(model).items()}


@torch.no_grad()
def bits_sensitivity(model: nn.Module, metric: Callable[[nn.Module], float], candidates: Sequence[int] = range(1, 9),
                     init: str = "linear", exclude: Iterable[str] = (), progress: bool = True) -> dict[str, list]:
    """{layer: [(bits, metric)]}: each layer quantized alone (no fine-tuning); the model is left as it was."""
    import copy

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
