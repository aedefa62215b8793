"""Training hyperparameters (defaults: the Lottery Ticket paper's LeNet setting, Adam 1.2e-3, batch 60)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choices, option
from ..data import DATASETS
from ..imports import is_import_path
from ..models import MODELS
from .device import device_name


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters (Frankle & Carbin 2019 defaults for LeNet)."""

    model: str = option("lenet300_100", f"model: a registry name ({', '.join(MODELS.names())}) or an import path "
                                        f"package.module:function returning an nn.Module")
    dataset: str = option("fashion-mnist", f"data set: {', '.join(DATASETS)}, or an import path "
                                           f"package.module:function returning (train, val, test) Datasets")
    optimizer: str = option("adam", "optimizer", ("adam", "sgd"))
    lr: float = option(1.2e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum (ignored by adam)")
    weight_decay: float = option(0.0, "L2 weight decay (the pruning paper retrains with L2)")
    batch_size: int = option(60, "minibatch size")
    epochs: int = option(20, "passes over the training split")
    lr_schedule: str = option("constant", "learning-rate schedule", ("constant", "step", "cosine"))
    lr_step_epochs: int = option(10, "step schedule: multiply lr by lr_gamma every this many epochs")
    lr_gamma: float = option(0.1, "step schedule: lr factor")
    eval_every: int = option(0, "evaluate and checkpoint every N iterations (0: once per epoch)")
    val_size: int = option(5000, "training images held out for validation / early stopping")
    seed: int = option(0, "seed for initialization and data order")
    device: str = option("cpu", "torch device: auto (CUDA when available), cpu, cuda, cuda:N or mps; part of the "
                                "run's identity, since results differ by device", cli_default="auto")
    amp: str = option("off", "mixed precision while training: off, or bf16 (autocast; for GPUs)", ("off", "bf16"))

    def __post_init__(self):
        check_choices(self)
        for name, known in (("model", MODELS.names()), ("dataset", DATASETS)):
            value = getattr(self, name)
            if value not in known and not is_import_path(value):
                raise ValueError(f"{name}={value!r} is not allowed; choose from {', '.join(known)}, or give an "
                                 f"import path package.module:function")
        object.__setattr__(self, "device", device_name(self.device))  # "auto" -> what this machine has
        for name in ("lr", "batch_size", "epochs", "lr_step_epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "eval_every", "val_size", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
