"""Compressing a pretrained transformer without labels: calibration-aware pruning, optional distillation
from the original and optional weight sharing (plain or sensitivity-weighted k-means, on every Linear and
Embedding), into a .dz file (``deepzip compress-pretrained``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import atomic_write_text
from ..config import check_choices, option
from ..data.text import read_passages, split_passages
from ..encode import load, save
from ..models.pretrained import embed, load_pretrained, token_batches
from ..prune import prune, sparsity_report
from ..calibrate.statistics import call_model, input_statistics, token_mask
from ..calibrate.sequential import hidden_of
from ..prune.configs import Calibrated, method_names
from ..quantize import KMeans, WeightedKMeans, fisher_diagonal, quantize
from ..quantize.configs import GRANULARITIES, IMPORTANCES
from ..registry import METHODS
from .distillation import distill


@dataclass
class PretrainedConfig:
    """Calibration pruning (+ distillation, + k-means) of a pretrained transformer from unlabeled text."""

    method: str = option("wanda", "calibration pruning method", tuple(method_names(calibration=True)))
    sparsity: float = option(0.5, "fraction of each block Linear's weights removed, in [0, 1)")
    n: int = option(0, "N:M: weights kept per group of m (0: unstructured)")
    m: int = option(0, "N:M: group size along the input dimension")
    compare: str = option("", "row or layer: where the sparsity holds (empty: the method's default)")
    blocks: str = option("", "name of the model's list of blocks (empty: found automatically)")
    inner: str = option("wanda", "owl: the method that prunes each block", ("wanda", "sparsegpt"))
    outlier_threshold: float = option(5.0, "owl: outliers are scores above this times the mean (M)")
    limit: float = option(0.08, "owl: block sparsities lie within target +- limit (lambda)")
    blocksize: int = option(128, "sparsegpt: columns per mask-selection block")
    percdamp: float = option(0.01, "sparsegpt: damping, a fraction of the Hessian's mean diagonal")
    calibration_texts: int = option(128, "passages of the text file used for calibration")
    max_length: int = option(128, "tokens per passage (longer ones are cut)")
    distill_steps: int = option(0, "distillation steps from the original model (0: none)")
    distill_lr: float = option(5e-5, "distillation learning rate (AdamW, cosine-decayed)")
    loss: str = option("cosine", "distillation loss on the last hidden state", ("cosine", "mse"))
    bits: int = option(0, "weight sharing bits of every Linear after pruning (0: no weight sharing)")
    embedding_bits: int = option(0, "weight sharing bits of the Embedding matrices (0: as --bits)")
    quantize: str = option("kmeans", "weight sharing: kmeans (plain, one codebook per layer) or weighted "
                           "(sensitivity-weighted k-means, SqueezeLLM)", ("kmeans", "weighted"))
    granularity: str = option("row", "weighted: a codebook per output row or per layer (Embeddings: per layer)",
                              GRANULARITIES)
    importance: str = option("calibration", "weighted: what weighs each weight's error: calibration (the inputs' "
                             "||X_j||^2), fisher (squared gradients of the outputs), none", IMPORTANCES)
    outliers: float = option(0.0, "weighted: fraction of each layer's weights kept exactly (e.g. 0.005)")
    error_feedback: bool = option(False, "weighted: GPTQ-style error feedback across a Linear's input columns")

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("calibration_texts", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.distill_steps < 0 or not 0 < self.distill_lr < math.inf:
            raise ValueError(f"distill_steps must be >= 0 and distill_lr > 0, got {self.distill_steps}, {self.distill_lr}")
        for name in ("bits", "embedding_bits"):
            if not 0 <= getattr(self, name) <= 16:
                raise ValueError(f"{name} must be in [0, 16] (0: {'no weight sharing' if name == 'bits' else 'as bits'}), "
                                 f"got {getattr(self, name)}")
        self.method_config()
        self.quantize_config()

    @property
    def prunes(self) -> bool:
        """Sparsity 0 without N:M: weight sharing only."""
        return self.sparsity > 0 or self.n > 0

    def quantize_config(self) -> KMeans | WeightedKMeans | None:
        """The weight-sharing config these options name (None without ``bits``); an option changed from its
        default that the chosen method (or no weight sharing) does not take is an error."""
        weighted = ("granularity", "importance", "outliers", "error_feedback")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        takes = ("bits", "embedding_bits", "quantize") + (weighted if self.quantize == "weighted" else ())
        for name in ("embedding_bits", "quantize") + weighted:
            if getattr(self, name) != defaults[name] and (name not in takes or not self.bits):
                where = f"quantize {self.quantize}" if self.bits else "no weight sharing (bits 0)"
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to {where}; its options: "
                                 + (", ".join(takes) if self.bits else "bits"))
        if not self.bits:
            return None
        bits = {"fc": self.bits, "conv": self.bits, "embedding": self.embedding_bits or self.bits,
                "other": self.bits}
        if self.quantize == "kmeans":
            return KMeans(bits=bits)
        return WeightedKMeans(bits=bits, importance=self.importance, granularity=self.granularity,
                              outliers=self.outliers, error_feedback=self.error_feedback)

    def method_config(self) -> Calibrated:
        """The pruning config these options name; an option changed from its default that the method does
        not take is an error."""
        cls = METHODS.config_class("prune", self.method)
        takes = {f.name for f in dataclasses.fields(cls)}
        values = {"sparsity": self.sparsity, "n": self.n, "m": self.m, "compare": self.compare or None,
                  "blocks": self.blocks or None, "inner": self.inner, "outlier_threshold": self.outlier_threshold,
                  "limit": self.limit, "blocksize": self.blocksize, "percdamp": self.percdamp}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        options = {}
        for name, value in values.items():
            if name in takes:
                options[name] = value
            elif getattr(self, name) != defaults[name]:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to method {self.method}; its "
                                 f"options: {', '.join(sorted(takes & set(values)))}")
        return METHODS.build("prune", self.method, **options)


def compress_pretrained(model_source: str | os.PathLike, text_file: str | os.PathLike, cfg: PretrainedConfig,
                        out: str | os.PathLike, progress: bool = True) -> dict[str, Any]:
    """Prune (and distill, and weight-share) a local pretrained model on the calibration part of
    ``text_file``; write ``out`` (.dz) and ``out``.json (the report); return the report. The report's
    fidelity is measured on the text's evaluation part (never used for calibration or distillation)."""
    original, tokenizer = load_pretrained(model_source)
    passages = read_passages(text_file)
    calibration = split_passages(passages, "calibration")
    evaluation = split_passages(passages, "evaluation")[:256]
    if not evaluation:
        raise ValueError(f"{text_file} is too short: no evaluation passages (every tenth chapter / ten lines)")
    batches = token_batches(tokenizer, calibration[: cfg.calibration_texts], 32, cfg.max_length)
    model = copy.deepcopy(original)
    if cfg.prunes:
        prune(model, cfg.method_config(), calibration=batches, progress=progress)
    if cfg.distill_steps:
        distill_batches = token_batches(tokenizer, calibration, 16, cfg.max_length)
        distill(model, original, distill_batches, steps=cfg.distill_steps, lr=cfg.distill_lr, loss=cfg.loss,
                progress=progress)
    sharing = cfg.quantize_config()
    if sharing is not None:
        share_weights(model, sharing, batches, progress=progress)
    save(model, out)
    fresh, _ = load_pretrained(model_source)
    load(out, fresh)
    decoded, kept = fresh.state_dict(), model.state_dict()
    bit_exact = decoded.keys() == kept.keys() and all(torch.equal(decoded[k], kept[k]) for k in kept)
    eval_batches = token_batches(tokenizer, evaluation, 64, cfg.max_length)
    reference, got = embed(original, eval_batches), embed(model, eval_batches)
    fp32 = sum(t.numel() * 4 for t in original.state_dict().values() if t.is_floating_point())
    report = {"model": str(model_source), "text": str(text_file), "config": dataclasses.asdict(cfg),
              "cosine": float((reference * got).sum(1).mean()), "evaluation_passages": len(evaluation),
              "bytes": Path(out).stat().st_size, "ratio_vs_fp32": fp32 / Path(out).stat().st_size,
              "sparsity": sparsity_report(model)["sparsity"], "decoded_bit_exact": bit_exact}
    atomic_write_text(str(out) + ".json", json.dumps(report, indent=2) + "\n")
    return report


def output_fisher_loss(seed: int = 0):
    """A label-free loss for `fisher_diagonal`: the model's output (per real token) dotted with fixed
    Gaussian noise. Its squared gradient, summed over batches, estimates the diagonal of the Fisher
    information of a Gaussian model of the outputs (E[(J^T z)^2], z ~ N(0, I)): how much each weight moves
    the outputs, which is what the distillation and the embeddings' fidelity depend on."""
    generator = torch.Generator().manual_seed(seed)

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        out = hidden_of(call_model(model, batch))
        noise = torch.randn(out.shape, generator=generator).to(out.device, out.dtype)
        mask = token_mask(batch)
        if mask is not None and out.dim() == 3 and tuple(out.shape[:2]) == tuple(mask.shape):
            noise = noise * mask.to(out.device, out.dtype).unsqueeze(-1)
        return (out * noise).sum()
    return loss


def sensitivities(model: nn.Module, cfg: WeightedKMeans, batches: list, progress: bool = True) -> dict[str, Any]:
    """The data ``quantize(model, cfg, ...)`` needs for a `WeightedKMeans`: ``sensitivity`` (the calibration
    statistics of the Linears, or the Fisher diagonal of every weight) and ``gram`` (error feedback).

    Embedding matrices get no calibration sensitivity (uniform weights): their statistics are token counts
    of the few calibration passages, which would give the words they never saw no weight at all."""
    data: dict[str, Any] = {}
    stats = {}
    if cfg.importance == "calibration" or cfg.error_feedback:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        stats = input_statistics(model, batches, names=linears, gram=cfg.error_feedback)
    if cfg.importance == "calibration":
        data["sensitivity"] = stats
    elif cfg.importance == "fisher":
        data["sensitivity"] = fisher_diagonal(model, batches, output_fisher_loss(), progress=progress)
    if cfg.error_feedback:
        data["gram"] = stats
    return data


def share_weights(model: nn.Module, cfg: KMeans | WeightedKMeans, batches: list, progress: bool = True) -> nn.Module:
    """Weight-share ``model`` in place with ``cfg``, gathering what a `WeightedKMeans` needs on ``batches``."""
    if isinstance(cfg, WeightedKMeans):
        return quantize(model, cfg, **sensitivities(model, cfg, batches, progress))
    return quantize(model, cfg)


__all__ = ["PretrainedConfig", "compress_pretrained", "output_fisher_loss", "sensitivities", "share_weights"]
