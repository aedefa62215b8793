"""Quantization hyperparameters (Han et al. 2016: 8-bit conv, 5-bit fc, linear init, fine-tuned)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import check_choices, option
from ..train import TrainConfig
from .kmeans import INITS


@dataclass(frozen=True)
class QuantizeConfig:
    """Weight sharing by k-means, then centroid fine-tuning."""

    method: str = option("kmeans", "kmeans (weight sharing) or uniform (the baseline)", ("kmeans", "uniform"))
    init: str = option("linear", "k-means centroid initialization", INITS)
    bits_conv: int = option(8, "index bits of conv layers")
    bits_fc: int = option(5, "index bits of fully connected layers")
    bits: str = option("", "per-layer override, e.g. 'fc3=6,conv1=8' (beats bits_conv / bits_fc)")
    exclude: str = option("", "comma-separated layers kept in full precision")
    finetune_epochs: int = option(2, "centroid fine-tuning epochs (0: none)")
    finetune_lr: float = option(1e-4, "fine-tuning learning rate (Adam, cosine-decayed)")
    seed: int = option(0, "seed for random init")

    def __post_init__(self):
        check_choices(self)
        for name in ("bits_conv", "bits_fc"):
            if not 1 <= getattr(self, name) <= 16:
                raise ValueError(f"{name} must be in 1..16, got {getattr(self, name)}")
        if self.finetune_epochs < 0 or self.finetune_lr <= 0:
            raise ValueError("finetune_epochs must be >= 0 and finetune_lr > 0")
        self.bits_spec()

    def bits_spec(self) -> dict[str, int]:
        from ..prune.retrain import parse_spec

        spec = parse_spec(self.bits) or {}
        if not isinstance(spec, dict):
            raise ValueError(f"bits must look like 'fc3=6,conv1=8', got {self.bits!r}")
        return {"conv": self.bits_conv, "fc": self.bits_fc, "embedding": 8, "other": 8,
                **{k: int(v) for k, v in spec.items()}}

    def excluded(self) -> list[str]:
        return [e.strip() for e in self.exclude.split(",") if e.strip()]

    def finetune_config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(base, epochs=self.finetune_epochs, lr=self.finetune_lr, weight_decay=0.0,
                                   lr_schedule="cosine")
