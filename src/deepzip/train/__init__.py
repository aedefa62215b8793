"""Training: hyperparameters, a deterministic resumable loop, evaluation."""

from .config import TrainConfig
from .loop import TrainHook, TrainResult, evaluate, lr_factor, make_optimizer, train

__all__ = ["TrainConfig", "TrainHook", "TrainResult", "evaluate", "lr_factor", "make_optimizer", "train"]
