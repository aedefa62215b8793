"""Dense baseline settings: the references that pruning, quantization and encoding compress.

The Lottery Ticket paper's LeNet optimizer (Adam, lr 1.2e-3, batch 60) with a cosine decay, which on
Fashion-MNIST adds about half a point over a constant rate in the same 20 epochs (measured by
benchmarks/baselines.py).
"""

from __future__ import annotations

from .config import TrainConfig

BASELINES = {
    "lenet300_100": TrainConfig(model="lenet300_100", dataset="fashion-mnist", epochs=20, lr_schedule="cosine"),
    "lenet5": TrainConfig(model="lenet5", dataset="fashion-mnist", epochs=15, lr_schedule="cosine"),
}


def baseline(model: str) -> TrainConfig:
    try:
        return BASELINES[model]
    except KeyError:
        raise ValueError(f"no baseline preset for {model!r}; presets: {', '.join(BASELINES)}") from None
