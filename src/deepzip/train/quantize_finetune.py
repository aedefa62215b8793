"""Quantization with centroid fine-tuning (Han et al. 2016: 8-bit conv, 5-bit fc, linear init, fine-tuned)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import check_choices, option, parse_spec
from ..quantize.configs import QuantizeMethod, method_names as quantize_method_names
from ..quantize.kmeans import INITS
from ..registry import METHODS
from .config import TrainConfig


@dataclass(frozen=True)
class QuantizeConfig:
    """Weight sharing by k-means, then centroid fine-tuning."""

    method: str = option("kmeans", "kmeans (weight sharing) or uniform (the baseline)", tuple(quantize_method_names()))
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
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if not 0 < self.finetune_lr < math.inf:
            raise ValueError(f"finetune_lr must be a finite number > 0, got {self.finetune_lr}")
        self.method_config()

    def bits_spec(self) -> dict[str, int]:
        spec = parse_spec(self.bits) or {}
        if not isinstance(spec, dict):
            raise ValueError(f"bits must look like 'fc3=6,conv1=8', got {self.bits!r}")
        return {"conv": self.bits_conv, "fc": self.bits_fc, "embedding": 8, "other": 8, **spec}

    def excluded(self) -> list[str]:
        return [e.strip() for e in self.exclude.split(",") if e.strip()]

    def method_config(self) -> QuantizeMethod:
        """The quantization config these options name (`deepzip.quantize.configs`); an option that differs
        from its default but does not apply to the method is an error."""
        cls = METHODS.config_class("quantize", self.method)
        takes = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {"bits": self.bits_spec(), "exclude": self.excluded(), "init": self.init,
                                  "seed": self.seed}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in ("init", "seed"):
            if name not in takes:
                if getattr(self, name) != defaults[name]:
                    raise ValueError(f"quantize option {name}={getattr(self, name)!r} does not apply to method "
                                     f"{self.method!r}; its options: {', '.join(sorted(takes))}")
                del values[name]
        return METHODS.build("quantize", self.method, **values)

    def finetune_config(self, base: TrainConfig) -> TrainConfig:
        return dataclasses.replace(base, epochs=self.finetune_epochs, lr=self.finetune_lr, weight_decay=0.0,
                                   lr_schedule="cosine")
