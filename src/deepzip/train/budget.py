"""Compression to a size budget: what each layer would cost at each sparsity and bit width, measured.

For every prunable layer and every (sparsity, bits) candidate this measures
  - its bytes in the .dz file, by the real encoder (every layer pruned and quantized to that setting at
    once, one encode per setting, bytes read per tensor from the encoder's report), and
  - its cost: the validation loss added when that layer alone is magnitude-pruned and k-means quantized
    to that setting, without retraining (Han et al. 2015's sensitivity analysis, with bits as a second axis).
`deepzip.budget.choose` then picks one setting per layer (an exact multiple-choice knapsack), and the
pipeline prunes, retrains, quantizes and fine-tunes to those settings, measuring the real file.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..budget import Option
from ..config import check_choices, option
from ..data import DataSplits, Split
from ..encode import encode_model
from ..prune import prunable_weights, prune
from ..prune.targets import split_name
from ..registry import METHODS
from ..quantize import quantize
from .loop import Loss, evaluate


def _numbers(text: str, kind: type, name: str, low: float, high: float) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{name} must list values in [{low}, {high}], got {text!r}")
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class BudgetConfig:
    """Compression to a size budget: each layer's sparsity and bits chosen together (sizes measured)."""

    target_ratio: float = option(0.0, "compress to at least this ratio (fp32 bytes / file bytes); 0: no budget")
    max_bytes: int = option(0, "or: a file of at most this many bytes; 0: no budget")
    budget_sparsities: str = option("0.5,0.7,0.8,0.85,0.9,0.93,0.95,0.97,0.98,0.99",
                                    "candidate sparsities of each layer")
    # No 2 bits by default: the costs are measured without retraining, and pruning recovers in retraining
    # far better than 2-bit weights recover in centroid fine-tuning (measured: at 40x on LeNet-300-100 the
    # choice fell on 2-bit fc1 and lost 1.8 points); 3 bits is the least the quantize benchmark found lossless.
    budget_bits: str = option("3,4,5,6,8", "candidate index bits of each layer")
    budget_rounds: int = option(3, "times the choice is re-made (with the overshoot taken off) while the "
                                   "retrained file is over budget")
    budget_eval_size: int = option(2000, "validation examples that measure each layer's cost")
    budget_prune_method: str = option("fraction", "how the chosen per-layer sparsities are reached: fraction "
                                                  "(iterative magnitude pruning) or l0 (gates learned with "
                                                  "each layer's target)", ("fraction", "l0"))

    def __post_init__(self):
        check_choices(self)
        if not (self.target_ratio == 0 or 1 < self.target_ratio < math.inf):
            raise ValueError(f"target_ratio must be > 1 (or 0: no budget), got {self.target_ratio}")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: no budget), got {self.max_bytes}")
        if self.target_ratio and self.max_bytes:
            raise ValueError("give target_ratio or max_bytes, not both")
        self.sparsities()
        self.bits()
        if self.budget_rounds < 1:
            raise ValueError(f"budget_rounds must be >= 1, got {self.budget_rounds}")
        if self.budget_eval_size < 1:
            raise ValueError(f"budget_eval_size must be >= 1, got {self.budget_eval_size}")

    @property
    def active(self) -> bool:
        return bool(self.target_ratio or self.max_bytes)

    def sparsities(self) -> tuple[float, ...]:
        return _numbers(self.budget_sparsities, float, "budget_sparsities", 0.0, 0.999)

    def bits(self) -> tuple[int, ...]:
        return _numbers(self.budget_bits, int, "budget_bits", 1, 8)

    def budget_bytes(self, dense_bytes: int) -> int:
        """The file size to stay within, for a model of ``dense_bytes`` fp32 parameter bytes."""
        return self.max_bytes if self.max_bytes else int(dense_bytes / self.target_ratio)


def _compressed(model: nn.Module, sparsity: float, bits: int, names: Iterable[str]) -> nn.Module:
    """A copy of ``model`` with the layers ``names`` (parameter names) magnitude-pruned to ``sparsity``
    and k-means quantized to ``bits``; the others as they were."""
    names = list(names)
    trial = copy.deepcopy(model)
    every, _ = prunable_weights(trial)
    others = [n for n in every if n not in names]
    if sparsity > 0:
        prune(trial, METHODS.build("prune", "fraction", layer_sparsity=sparsity, exclude=others))
    quantize(trial, METHODS.build("quantize", "kmeans", bits=bits, exclude=others))
    return trial


def layer_options(model: nn.Module, val: Split, sparsities: Iterable[float], bits: Iterable[int],
                  exclude: Iterable[str] = (), loss: Loss = F.cross_entropy, float_dtype: str = "f32",
                  codebook_dtype: str = "f32", progress: bool = True) -> tuple[dict[str, list[Option]], int]:
    """({layer: [Option(settings={"sparsity", "bits"}, bytes, cost)]}, bytes of everything else in the file).

    Layers are named by module (``fc1``), as per-layer specs name them; ``exclude`` layers stay as they
    are and count as fixed bytes. The model is left as it was.
    """
    weights, _ = prunable_weights(model, exclude=exclude)
    names = list(weights)
    sparsities, bits = sorted(set(sparsities)), sorted(set(bits))
    settings = [(s, b) for s in sparsities for b in bits]
    bar = tqdm(total=len(settings) * (1 + len(names)), desc="budget: measuring layers",
               disable=None if progress else True, leave=False)
    sizes, fixed = {}, None
    for s, b in settings:
        _, report = encode_model(_compressed(model, s, b, names), float_dtype, codebook_dtype)
        by_tensor = {row["layer"]: row["bytes"] for row in report["layers"]}
        for name in names:
            sizes[name, s, b] = by_tensor[name]
        if fixed is None:  # headers, biases, excluded layers: the same in every setting, up to a few bytes
            fixed = report["file_bytes"] - sum(by_tensor[n] for n in names)
        bar.update()
    base = evaluate(model, val, loss=loss)[0]
    options: dict[str, list[Option]] = {}
    for name in names:
        layer = split_name(name)[0]
        options[layer] = []
        for s, b in settings:
            added = evaluate(_compressed(model, s, b, [name]), val, loss=loss)[0] - base
            options[layer].append(Option({"sparsity": s, "bits": b}, sizes[name, s, b], added))
            bar.update()
    bar.close()
    return options, int(fixed)


def validation_subset(data: DataSplits, size: int) -> Split:
    """The first ``size`` validation examples (the validation split is already a fixed random sample)."""
    n = min(size, len(data.val))
    if n == 0:
        raise ValueError("a size budget needs a validation split to measure each layer's cost; set a val_size > 0")
    x, y = data.val.batch(torch.arange(n))
    return Split(x, y)


def settings_specs(chosen: dict[str, Option]) -> tuple[str, str]:
    """('fc1=0.95,fc2=0.9', 'fc1=3,fc2=4'): the per-layer specs of PruneConfig / QuantizeConfig."""
    sparsity = ",".join(f"{name}={option.settings['sparsity']:g}" for name, option in chosen.items())
    bits = ",".join(f"{name}={option.settings['bits']}" for name, option in chosen.items())
    return sparsity, bits


__all__ = ["BudgetConfig", "layer_options", "settings_specs", "validation_subset"]
