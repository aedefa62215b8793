"""Learned sparsity (L0 gates, Louizos et al. 2018) vs iterative magnitude pruning, same epochs (issue 19).

    python benchmarks/learned_sparsity.py            # Fashion-MNIST LeNet-300-100 at 95% and 98% (resumable)
    python benchmarks/learned_sparsity.py --quick    # seconds, on the digits data (the tests run it)

From the same dense baseline, each method gets the same number of training epochs after it:
  - magnitude: the existing iterative global magnitude pruning, ``STEPS`` prune/retrain rounds of
    ``EPOCHS`` epochs each;
  - l0: hard-concrete gates trained with the L0 penalty for (STEPS - 1) x EPOCHS epochs, the gates
    turned into exact masks at the target (top by log_alpha over all layers), then EPOCHS epochs of
    retraining with masks kept.
Reports test accuracy (and validation accuracy) at each sparsity, each layer's kept fraction (L0 learns
the allocation), and wall time. No setting is chosen by test accuracy.
"""

from __future__ import annotations

import argparse
import copy
import time

import _common  # noqa: F401  (sys.path)
import torch

from _common import RUNS, table, write_results
from deepzip import data, models
from deepzip.config import hashname
from deepzip.train import BASELINES, PruneConfig, TrainConfig, evaluate, prune_and_retrain, train

STEPS, EPOCHS = 3, 2
RETRAIN = {"retrain_lr": 1e-3, "weight_decay": 5e-4}  # the demo's retraining recipe (benchmarks/prune.py)
L0_PENALTY = 5.0


def configs(sparsity: float, epochs: int) -> dict[str, PruneConfig]:
    return {"magnitude": PruneConfig(sparsity=sparsity, steps=STEPS, retrain_epochs=epochs, **RETRAIN),
            "l0": PruneConfig(method="l0", sparsity=sparsity, steps=STEPS - 1, retrain_epochs=epochs,
                              l0_penalty=L0_PENALTY, **RETRAIN)}


def dense_model(quick: bool, runs):
    if quick:
        cfg = TrainConfig(dataset="digits", batch_size=32, epochs=5, val_size=300)
        splits = data.load("digits", val_size=300)
    else:
        cfg = BASELINES["lenet300_100"]
        splits = data.load(cfg.dataset, val_size=cfg.val_size)
    model = models.build("lenet300_100", splits.input_shape, splits.num_classes, seed=cfg.seed)
    description = {"model": "lenet300_100", "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}
    train(model, splits, cfg, run_dir=runs / hashname(cfg, "train"), resume=True, description=description,
          progress=not quick)
    return model, splits, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="digits, one sparsity, one epoch per phase")
    args = parser.parse_args()
    torch.set_num_threads(1 if args.quick else 2)
    runs = RUNS / "learned_sparsity_quick" if args.quick else RUNS
    dense, splits, base = dense_model(args.quick, runs)
    dense_acc = evaluate(dense, splits.test)[1]
    sparsities = [0.9] if args.quick else [0.95, 0.98]
    epochs = 1 if args.quick else EPOCHS
    rows, results = [], []
    for sparsity in sparsities:
        for method, cfg in configs(sparsity, epochs).items():
            model = copy.deepcopy(dense)
            started = time.perf_counter()
            records = prune_and_retrain(model, splits, cfg, base, run_dir=runs / hashname(cfg, "learned_sparsity"),
                                        progress=not args.quick)
            seconds = time.perf_counter() - started
            last = records[-1]
            kept = {l["layer"].removesuffix(".weight"): l["kept"] for l in last["layers"]}
            results.append({"sparsity": sparsity, "method": method, "test_acc": last["test_acc"],
                            "val_acc": last["val_acc"], "measured_sparsity": last["sparsity"], "kept": kept,
                            "test_acc_before_retrain": last.get("test_acc_before_retrain"),
                            "epochs": STEPS * epochs, "seconds": round(seconds, 1),
                            "gates": records[0].get("gates"), "config": cfg.__dict__})
            rows.append([f"{sparsity:.0%}", method, f"{last['sparsity']:.2%}", f"{last['test_acc']:.2%}",
                         f"{(last['test_acc'] - dense_acc) * 100:+.2f}", f"{last['val_acc']:.2%}",
                         ", ".join(f"{k} {v:.1%}" for k, v in kept.items()), STEPS * epochs, f"{seconds:.0f}"])
    title = "# Learned sparsity (L0 gates) vs iterative magnitude pruning" + (
        " — quick run on digits" if args.quick else ": LeNet-300-100 on Fashion-MNIST")
    md = [title, "",
          f"Dense test accuracy {dense_acc:.2%}. Each method gets {STEPS * epochs} epochs after the dense baseline: "
          f"magnitude = {STEPS} rounds of global magnitude pruning, each followed by {epochs} epoch(s) of retraining; l0 = "
          f"{(STEPS - 1) * epochs} epochs training hard-concrete gates (penalty {L0_PENALTY}, Adam lr 0.05 on "
          f"log_alpha) + exact masks at the target + {epochs} epoch(s) of retraining. Retraining lr 1e-3, L2 5e-4.", "",
          table(["sparsity", "method", "measured", "test acc", "vs dense (pts)", "val acc", "kept per layer",
                 "epochs", "seconds"], rows)]
    best = {}
    for r in results:
        if r["sparsity"] not in best or r["val_acc"] > best[r["sparsity"]]["val_acc"]:
            best[r["sparsity"]] = r
    md += ["", "Higher validation accuracy per sparsity: " +
           ", ".join(f"{s:.0%}: {r['method']}" for s, r in best.items()) + "."]
    if args.quick:  # the quick run checks the script; only the full run writes results
        print("\n".join(md))
    else:
        write_results("learned_sparsity", {"dense_test_acc": dense_acc, "results": results}, "\n".join(md))


if __name__ == "__main__":
    main()
