"""Lottery tickets on Fashion-MNIST (issue 8): IMP vs controls on LeNet-300-100, rewinding on LeNet-5.

    python benchmarks/lottery.py --jobs 2   # ~1.7 h on 2 cores (~55 s a run here); resumable after a kill
    python benchmarks/lottery.py --quick    # a tiny version of both studies (seconds), for the tests

A. LeNet-300-100, 3 replicates, 15 levels (100% -> 3.5% of weights), layer-wise rates 20% fc / 10%
   output (the paper's), rewind to init; controls at every level: random reinit and random pruning;
   one-shot pruning to each level's sparsity. The paper's optimizer (Adam 1.2e-3, batch 60, constant
   lr) for 15 epochs (13,755 iterations, evaluated every 250): long enough for the dense network to
   overfit, so the early-stop iteration (minimum validation loss) falls inside the run.
B. LeNet-5, 2 replicates, 5 levels, 3 epochs a run (batch 128): rewinding to init (k=0) vs rewinding to
   iteration k=500 vs learning-rate rewinding (Renda et al. 2020), winning tickets only.
Targets: winning tickets match or beat dense down to ~10% remaining and stop early sooner over part of
that range; random reinit clearly worse at 10% and below.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, RUNS, machine, table, write_results
from _plot import finish_panel, save_figure, subplots
from deepzip import data
from deepzip.checkpoint import atomic_write_text
from deepzip.config import hash_configs
from deepzip.lottery import Experiment, LotteryConfig, aggregate, plot_experiment, steps
from deepzip.train import TrainConfig

LENET300 = TrainConfig(model="lenet300_100", batch_size=60, epochs=15, eval_every=250)
LENET5 = TrainConfig(model="lenet5", batch_size=128, epochs=3, eval_every=150)
STUDY_A = LotteryConfig(levels=15, replicates=3, oneshot=True)
STUDY_B = {"rewind to init (k=0)": LotteryConfig(levels=5, replicates=2, controls=""),
           "rewind to k=500": LotteryConfig(levels=5, replicates=2, controls="", reset="rewind", rewind_iteration=500),
           "lr rewinding (k=0)": LotteryConfig(levels=5, replicates=2, controls="", reset="lr_rewind")}
QUICK = {"a": (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=2, eval_every=10),
               LotteryConfig(levels=3, fc_rate=0.5, output_rate=0.25, replicates=2, oneshot=True)),
         "b": (TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32, epochs=2, eval_every=10),
               LotteryConfig(levels=2, replicates=1, controls=""))}
JOBS = 1


def run(train_cfg: TrainConfig, cfg: LotteryConfig, splits) -> Experiment:
    exp = Experiment(RUNS / hash_configs("lottery", train=train_cfg, lottery=cfg), train_cfg, cfg, splits)
    if not all(exp.done(*step) for step in exp.steps()):  # say where the runs were computed
        trained_on = exp.dir / "trained_on.json"
        previous = json.loads(trained_on.read_text()) if trained_on.exists() else []
        atomic_write_text(trained_on, json.dumps(previous + [{**machine(), "jobs": JOBS}], indent=2) + "\n")
    exp.run(jobs=JOBS)
    return exp


def trained_on(exp_dir) -> str:
    path = exp_dir / "trained_on.json"
    if not path.exists():
        return "unknown"
    return "; ".join(f"{m['cpus']} CPUs, torch {m['torch']}, {m['jobs']} worker(s), {m['date']}"
                     for m in json.loads(path.read_text()))


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def span(stat: dict, fmt=pct) -> str:
    return f"{fmt(stat['mean'])} [{fmt(stat['min'])}, {fmt(stat['max'])}]"


def study_a(train_cfg: TrainConfig, cfg: LotteryConfig, splits, figures_dir) -> tuple[dict, list[str]]:
    exp = run(train_cfg, cfg, splits)
    agg = aggregate(steps(exp.dir))
    figures = plot_experiment(exp.dir, figures_dir)
    dense = agg["dense"][0]
    it = lambda x: f"{x:.0f}"  # noqa: E731
    rows, checks = [], {"match_dense_to_10pct": True, "reinit_worse_at_10pct": True}
    earlier, clearly_earlier = [], []
    for i, imp in enumerate(agg["imp"]):
        line = {v: agg[v][i] for v in ("imp", "reinit", "random", "oneshot") if v in agg}
        rows.append([f"{imp['remaining']:.1f}"] + [span(line[v]["early_stop_test_acc"]) for v in line] +
                    [span(imp["early_stop_iteration"], it)])
        if imp["remaining"] >= 9.5 and imp["early_stop_test_acc"]["mean"] < dense["early_stop_test_acc"]["mean"]:
            checks["match_dense_to_10pct"] = False
        if imp["remaining"] >= 9.5 and imp["early_stop_iteration"]["mean"] < dense["early_stop_iteration"]["mean"]:
            earlier.append(round(imp["remaining"], 1))
        if imp["remaining"] >= 9.5 and imp["early_stop_iteration"]["max"] < dense["early_stop_iteration"]["min"]:
            clearly_earlier.append(round(imp["remaining"], 1))
        if "reinit" in line and imp["remaining"] <= 10.5 and \
                line["reinit"]["early_stop_test_acc"]["mean"] >= imp["early_stop_test_acc"]["mean"] - 0.002:
            checks["reinit_worse_at_10pct"] = False
    checks["earlier_stop_somewhere"] = bool(earlier)
    md = [f"## A. LeNet-300-100: winning tickets vs controls ({cfg.replicates} replicates)\n",
          f"Training: {train_cfg.optimizer} lr {train_cfg.lr:g}, batch {train_cfg.batch_size}, {exp.total:,} iterations "
          f"({train_cfg.epochs} epochs), evaluated every {train_cfg.eval_every}. Runs computed on: {trained_on(exp.dir)}.\n",
          f"Dense: test accuracy at early stop {span(dense['early_stop_test_acc'])}%, early-stop iteration "
          f"{span(dense['early_stop_iteration'], it)} of {exp.total:,}.\n",
          "Test accuracy (%) at the early-stop iteration (minimum validation loss), and the winning ticket's "
          "early-stop iteration: mean [min, max] over replicates.\n",
          table(["% remaining", "winning ticket", "random reinit", "random pruning", "one-shot", "ticket early-stop it"], rows),
          "", "Checks against the paper's claims: " + ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in checks.items()),
          "", f"Levels (>= 10% remaining) where winning tickets stop earlier than dense on average: "
              f"{', '.join(map(str, earlier)) or 'none'}; where every replicate's ticket stops before every dense run: "
              f"{', '.join(map(str, clearly_earlier)) or 'none'}.",
          "", "Figures: " + ", ".join(f"`lottery/{p.name}`" for p in figures if p.suffix == ".png"), ""]
    return {"aggregate": agg, "checks": checks, "earlier_stop_levels": earlier, "clearly_earlier_levels": clearly_earlier,
            "experiment": exp.dir.name, "trained_on": trained_on(exp.dir)}, md


def study_b(train_cfg: TrainConfig, configs: dict[str, LotteryConfig], splits, figures_dir) -> tuple[dict, list[str]]:
    out, series = {}, {}
    for label, cfg in configs.items():
        exp = run(train_cfg, cfg, splits)
        agg = aggregate(steps(exp.dir))
        series[label] = agg["dense"] + agg["imp"]
        out[label] = {"aggregate": agg, "experiment": exp.dir.name, "trained_on": trained_on(exp.dir)}
    first = next(iter(configs.values()))
    levels = len(next(iter(series.values())))
    rows = [[f"{series[next(iter(series))][i]['remaining']:.1f}"] +
            [span(series[label][i]["early_stop_test_acc"]) for label in series] for i in range(levels)]
    md = [f"## B. {train_cfg.model}: rewinding ({first.replicates} replicate(s), winning tickets only)\n",
          f"Training: {train_cfg.optimizer} lr {train_cfg.lr:g}, batch {train_cfg.batch_size}, {train_cfg.epochs} epochs. "
          f"Runs computed on: {trained_on(exp.dir)}.\n",
          "Test accuracy (%) at the early-stop iteration: mean [min, max] over replicates.\n",
          table(["% remaining"] + list(series), rows), ""]
    _plot_b(series, figures_dir / "rewinding.png", f"{train_cfg.model} on {train_cfg.dataset}: rewinding")
    md.append("Figure: `lottery/rewinding.png`\n")
    return out, md


def _plot_b(series, path, title) -> None:
    fig, ax = subplots(figsize=(6.4, 4.2))
    for label, rows in series.items():
        x = [r["remaining"] for r in rows]
        mean = [100 * r["early_stop_test_acc"]["mean"] for r in rows]
        err = [[100 * (r["early_stop_test_acc"]["mean"] - r["early_stop_test_acc"]["min"]) for r in rows],
               [100 * (r["early_stop_test_acc"]["max"] - r["early_stop_test_acc"]["mean"]) for r in rows]]
        ax.errorbar(x, mean, yerr=err, marker="o", markersize=3, capsize=2, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    finish_panel(ax, "percent of weights remaining", "test accuracy at early stop (%)", title, which="both")
    save_figure(fig, path, extra_formats=("svg",))


def main() -> None:
    global JOBS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one core each)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings on the bundled 8x8 digits; prints results, writes nothing to benchmarks/results")
    args = parser.parse_args()
    JOBS = args.jobs
    torch.set_num_threads(1)
    if args.quick:
        (a_train, a_cfg), (b_train, b_cfg) = QUICK["a"], QUICK["b"]
        b_cfgs = {"rewind to init (k=0)": b_cfg, "lr rewinding (k=0)": dataclasses.replace(b_cfg, reset="lr_rewind")}
        figures = RUNS / "lottery_quick_figures"
    else:
        a_train, a_cfg, b_train, b_cfgs, figures = LENET300, STUDY_A, LENET5, STUDY_B, RESULTS / "lottery"
    figures.mkdir(parents=True, exist_ok=True)
    payload, md = {}, [f"# Lottery tickets on {a_train.dataset}\n"]
    if "a" in args.parts:
        payload["lenet300_100"], part = study_a(a_train, a_cfg, data.load(a_train.dataset, val_size=a_train.val_size), figures)
        md += part
    if "b" in args.parts:
        payload["rewinding"], part = study_b(b_train, b_cfgs, data.load(b_train.dataset, val_size=b_train.val_size), figures)
        md += part
    if args.quick:
        print("\n".join(md))
    else:
        write_results("lottery", payload, "\n".join(md))


if __name__ == "__main__":
    main()
