"""Train the dense LeNet baselines on Fashion-MNIST (the references every later stage compresses).

    python benchmarks/baselines.py            # resumable: finished runs are reused from runs/

Targets (issue 3): LeNet-300-100 >= 89%, LeNet-5 >= 90.5% test accuracy.
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sys.path)
import torch

from _common import RUNS, table, write_results
from deepzip import data, models
from deepzip.config import hashname
from deepzip.train import BASELINES, train

TARGETS = {"lenet300_100": 0.89, "lenet5": 0.905}


def train_baseline(name: str, progress: bool = True):
    """Train (or reuse) the dense baseline of ``name``; returns (model, result, run_dir)."""
    cfg = BASELINES[name]
    splits = data.load(cfg.dataset, val_size=cfg.val_size)
    model = models.build(name, splits.input_shape, splits.num_classes, seed=cfg.seed)
    run_dir = RUNS / hashname(cfg, "train")
    description = {"model": name, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}
    result = train(model, splits, cfg, run_dir=run_dir, resume=True, description=description, progress=progress)
    return model, result, run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, payload = [], {}
    for name in args.models:
        started = time.perf_counter()
        model, result, run_dir = train_baseline(name)
        wall = result.final["elapsed_s"]
        s = result.summary()
        payload[name] = {**s, "params": models.count_parameters(model), "train_wall_s": wall,
                         "target_test_acc": TARGETS[name], "meets_target": s["test_acc"] >= TARGETS[name],
                         "run_dir": run_dir.name, "config": BASELINES[name].__dict__}
        rows.append([name, f"{models.count_parameters(model):,}", f"{s['test_acc']:.2%}", f"{TARGETS[name]:.1%}",
                     "yes" if s["test_acc"] >= TARGETS[name] else "**no**", s["early_stop_iteration"],
                     f"{s['early_stop_test_acc']:.2%}", f"{wall:.0f}"])
        print(f"{name}: done in {time.perf_counter() - started:.0f}s", flush=True)
    md = ("# Dense baselines on Fashion-MNIST\n\nOne seed (0), 1 thread; test accuracy at the end of training "
          "and at the early-stop iteration (lowest validation loss).\n\n"
          + table(["model", "params", "test acc", "target", "met", "early-stop it", "test acc there", "train s"], rows))
    write_results("baselines", {"results": payload}, md)


if __name__ == "__main__":
    main()
