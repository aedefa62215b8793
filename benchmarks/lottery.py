"""Lottery tickets on Fashion-MNIST (issue 8): IMP vs controls on LeNet-300-100, rewinding on LeNet-5.

    python benchmarks/lottery.py          # long; resumable: rerun after a kill to continue

A. LeNet-300-100, 3 replicates, 15 levels (100% -> 3.5% of weights), layer-wise rates 20% fc / 10%
   output (the paper's), rewind to init; controls at every level: random reinit and random pruning;
   one-shot pruning to each level's sparsity. Shortened training (4 epochs, Adam 1.2e-3, batch 128,
   evaluated every 100 iterations) so the whole study fits a 2-core machine.
B. LeNet-5, 1 replicate, 5 levels, 2 epochs a run: rewinding to init (k=0) vs rewinding to iteration k=500 vs learning-
   rate rewinding (Renda et al. 2020), winning tickets only.
Targets: winning tickets match or beat dense down to ~10% remaining and stop early sooner over part of
that range; random reinit clearly worse at 10% and below.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, RUNS, table, write_results
from deepzip import data
from deepzip.config import hash_configs
from deepzip.report.plots import save_figure
from deepzip.lottery import Experiment, LotteryConfig, aggregate, plot_experiment, steps
from deepzip.train import TrainConfig

LENET300 = TrainConfig(model="lenet300_100", batch_size=128, epochs=4, eval_every=100)
LENET5 = TrainConfig(model="lenet5", batch_size=128, epochs=2, eval_every=100)
STUDY_A = LotteryConfig(levels=15, replicates=3, oneshot=True)
STUDY_B = {"rewind to init (k=0)": LotteryConfig(levels=5, replicates=1, controls=""),
           "rewind to k=500": LotteryConfig(levels=5, replicates=1, controls="", reset="rewind", rewind_iteration=500),
           "lr rewinding (k=0)": LotteryConfig(levels=5, replicates=1, controls="", reset="lr_rewind")}


def run(train_cfg: TrainConfig, cfg: LotteryConfig, splits) -> Experiment:
    exp = Experiment(RUNS / hash_configs("lottery", train=train_cfg, lottery=cfg), train_cfg, cfg, splits)
    exp.run()
    return exp


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def study_a(splits) -> tuple[dict, list[str]]:
    exp = run(LENET300, STUDY_A, splits)
    agg = aggregate(steps(exp.dir))
    figures = plot_experiment(exp.dir, RESULTS / "lottery")
    dense = agg["dense"][0]
    rows, checks = [], {"match_dense_to_10pct": True, "earlier_stop_somewhere": False, "reinit_worse_at_10pct": True}
    for i, imp in enumerate(agg["imp"]):
        line = {v: agg[v][i] for v in ("imp", "reinit", "random", "oneshot") if v in agg}
        rows.append([f"{imp['remaining']:.1f}"] + [
            f"{pct(line[v]['early_stop_test_acc']['mean'])} [{pct(line[v]['early_stop_test_acc']['min'])}, "
            f"{pct(line[v]['early_stop_test_acc']['max'])}]" for v in line] +
            [f"{imp['early_stop_iteration']['mean']:.0f}"])
        if imp["remaining"] >= 9.5 and imp["early_stop_test_acc"]["mean"] < dense["early_stop_test_acc"]["mean"]:
            checks["match_dense_to_10pct"] = False
        if imp["remaining"] >= 9.5 and imp["early_stop_iteration"]["mean"] < dense["early_stop_iteration"]["mean"]:
            checks["earlier_stop_somewhere"] = True
        if imp["remaining"] <= 10.5 and line["reinit"]["early_stop_test_acc"]["mean"] >= imp["early_stop_test_acc"]["mean"] - 0.002:
            checks["reinit_worse_at_10pct"] = False
    md = [f"## A. LeNet-300-100: winning tickets vs controls ({STUDY_A.replicates} replicates)\n",
          f"Dense: test accuracy at early stop {pct(dense['early_stop_test_acc']['mean'])}% "
          f"[{pct(dense['early_stop_test_acc']['min'])}, {pct(dense['early_stop_test_acc']['max'])}], early-stop "
          f"iteration {dense['early_stop_iteration']['mean']:.0f} of {LENET300.epochs * 430}.\n",
          "Test accuracy (%) at the early-stop iteration: mean [min, max] over replicates.\n",
          table(["% remaining", "winning ticket", "random reinit", "random pruning", "one-shot", "ticket early-stop it"], rows),
          "", "Checks against the paper's claims: " + ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in checks.items()),
          "", "Figures: " + ", ".join(f"`lottery/{p.name}`" for p in figures if p.suffix == ".png"), ""]
    return {"aggregate": agg, "checks": checks, "experiment": exp.dir.name}, md


def study_b(splits) -> tuple[dict, list[str]]:
    out, series = {}, {}
    for label, cfg in STUDY_B.items():
        exp = run(LENET5, cfg, splits)
        agg = aggregate(steps(exp.dir))
        series[label] = agg["dense"] + agg["imp"]
        out[label] = {"aggregate": agg, "experiment": exp.dir.name}
    levels = len(next(iter(series.values())))
    rows = [[f"{series[next(iter(series))][i]['remaining']:.1f}"] +
            [pct(series[label][i]["early_stop_test_acc"]["mean"]) for label in series] for i in range(levels)]
    md = ["## B. LeNet-5: rewinding (1 replicate, winning tickets only)\n",
          "Test accuracy (%) at the early-stop iteration.\n", table(["% remaining"] + list(series), rows), ""]
    _plot_b(series)
    md.append("Figure: `lottery/rewinding_lenet5.png`\n")
    return out, md


def _plot_b(series) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, rows in series.items():
        ax.plot([r["remaining"] for r in rows], [100 * r["early_stop_test_acc"]["mean"] for r in rows], marker="o",
                markersize=3, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("percent of weights remaining")
    ax.set_ylabel("test accuracy at early stop (%)")
    ax.set_title("LeNet-5 on Fashion-MNIST: rewinding", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, RESULTS / "lottery" / "rewinding_lenet5.png", extra_formats=("svg",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    (RESULTS / "lottery").mkdir(parents=True, exist_ok=True)
    splits = data.load("fashion-mnist")
    payload, md = {}, ["# Lottery tickets on Fashion-MNIST\n"]
    if "a" in args.parts:
        payload["lenet300_100"], part = study_a(splits)
        md += part
        write_results("lottery", payload, "\n".join(md))
    if "b" in args.parts:
        payload["lenet5_rewinding"], part = study_b(splits)
        md += part
        write_results("lottery", payload, "\n".join(md))


if __name__ == "__main__":
    main()
