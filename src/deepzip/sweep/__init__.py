"""Sparse-training sweeps: a grid of methods x sparsities x seeds, each run a ``deepzip sparse-train`` run,
resumable, on this machine's cores or on a Ray cluster.

    sweep = Sweep("runs/sweep_x", TrainConfig(epochs=20), SweepConfig(methods="set,rigl",
                  sparsities="0.9,0.95", seeds="0,1,2"), data, options={"update_interval": 100})
    sweep.run(jobs=2)              # or executor="ray"; finished runs are skipped
    print(sweep.status())          # the grid's table: test accuracy mean ± std over seeds, FLOPs
"""

from .config import Run, SweepConfig, plan
from .results import load_plan, records, status, table
from .runner import Sweep

__all__ = ["Run", "Sweep", "SweepConfig", "load_plan", "plan", "records", "status", "table"]
