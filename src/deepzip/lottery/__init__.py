"""Lottery tickets: iterative magnitude pruning with resetting / rewinding, controls, one-shot, replicates.

    exp = Experiment("runs/lottery_x", TrainConfig(...), LotteryConfig(levels=15), data)
    exp.run()                      # resumable: finished (replicate, level, variant) steps are skipped
    plot_experiment("runs/lottery_x")
"""

from .config import CONTROLS, RESETS, LotteryConfig
from .experiment import Experiment, level_masks, level_sparsities, random_masks
from .plots import plot_experiment
from .results import aggregate, status, steps

__all__ = ["CONTROLS", "Experiment", "LotteryConfig", "RESETS", "aggregate", "level_masks", "level_sparsities",
           "plot_experiment", "random_masks", "status", "steps"]
