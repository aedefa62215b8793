"""Training: hyperparameters, a deterministic resumable loop, evaluation."""

from .config import TrainConfig
from .presets import BASELINES, baseline
from .loop import TrainHook, TrainResult, evaluate, lr_factor, make_optimizer, train

__all__ = ["BASELINES", "baseline", "TrainConfig", "TrainHook", "TrainResult", "evaluate", "lr_factor", "make_optimizer", "train"]
