"""Compressing a pretrained transformer without labels: calibration-aware pruning, optional distillation
from the original and optional k-means weight sharing, into a .dz file (``deepzip compress-pretrained``).
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


from ..checkpoint import atomic_write_text
from ..config import check_choices, option
from ..data.text import read_passages, split_passages
from ..encode import save
from ..models.pretrained import embed, load_pretrained, token_batches
from ..prune import prune, sparsity_report
from ..prune.configs import Calibrated, method_names
from ..quantize import quantize
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
    bits: int = option(0, "k-means weight sharing bits after pruning (0: none)")

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("calibration_texts", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.distill_steps < 0 or not 0 < self.distill_lr < math.inf:
            raise ValueError(f"distill_steps must be >= 0 and distill_lr > 0, got {self.distill_steps}, {self.distill_lr}")
        if self.bits < 0 or self.bits > 16:
            raise ValueError(f"bits must be in [0, 16] (0: no weight sharing), got {self.bits}")
        self.method_config()

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
    prune(model, cfg.method_config(), calibration=batches, progress=progress)
    if cfg.distill_steps:
        distill_batches = token_batches(tokenizer, calibration, 16, cfg.max_length)
        distill(model, original, distill_batches, steps=cfg.distill_steps, lr=cfg.distill_lr, loss=cfg.loss,
                progress=progress)
    if cfg.bits:
        quantize(model, cfg.bits)
    save(model, out)
    eval_batches = token_batches(tokenizer, evaluation, 64, cfg.max_length)
    reference, got = embed(original, eval_batches), embed(model, eval_batches)
    fp32 = sum(t.numel() * 4 for t in original.state_dict().values() if t.is_floating_point())
    report = {"model": str(model_source), "text": str(text_file), "config": dataclasses.asdict(cfg),
              "cosine": float((reference * got).sum(1).mean()), "evaluation_passages": len(evaluation),
              "bytes": Path(out).stat().st_size, "ratio_vs_fp32": fp32 / Path(out).stat().st_size,
              "sparsity": sparsity_report(model)["sparsity"]}
    atomic_write_text(str(out) + ".json", json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["PretrainedConfig", "compress_pretrained"]
