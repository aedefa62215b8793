"""Training: hyperparameters, a deterministic resumable loop, evaluation, and the retraining workflows
of compression (prune + retrain, quantize + fine-tune, distillation for models without labels)."""

from .budget import BudgetConfig
from .config import TrainConfig
from .distillation import DistillResult, distill
from .presets import BASELINES, baseline
from .loop import TrainHook, TrainResult, evaluate, lr_factor, make_optimizer, train
from .prune_retrain import L1Regularization, PruneConfig, prune_and_retrain
from .quantize_finetune import QuantizeConfig

__all__ = ["BASELINES", "BudgetConfig", "DistillResult", "L1Regularization", "PruneConfig", "QuantizeConfig",
           "TrainConfig", "TrainHook", "TrainResult", "distill",
           "baseline", "evaluate", "lr_factor", "make_optimizer", "prune_and_retrain", "train"]
