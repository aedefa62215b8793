"""Sparse-to-sparse training on Fashion-MNIST (issue 18): dense, static, SET, SNFS, RigL, SR-STE 2:4 and
the lottery runner's IMP winning ticket, at the same training budget per run.

    python benchmarks/sparse_training.py --jobs 2   # ~1 h on 2 shared cores; resumable after a kill
    python benchmarks/sparse_training.py --quick    # tiny settings on the 8x8 digits (seconds), for the tests
    python benchmarks/sparse_training.py --models lenet300_100 --epochs 20 --sparsities 0.95 0.98 \
        --methods static set snfs rigl imp   # the longer budget (sparse_training_e20.md), ~75 min on one core

LeNet-300-100 and LeNet-5 at 90%, 95% and 98% sparsity, 3 seeds. Every run trains for the same number
of epochs with the same optimizer (Adam 1e-3, batch 100, cosine learning rate); the budget is a few
epochs (not the papers' hundreds) so that the whole study fits in about an hour on 2 shared cores.
All sparse methods start from the same ERK random mask (Evci et al.'s comparison); SET and RigL update
every 100 steps with drop fraction 0.3 cosine-decayed to 75% of training (RigL's setting for both),
SNFS once an epoch with its 0.5 cosine to the end and momentum redistribution. IMP: the dense run
(which is also the "dense" row), then 2 levels of global magnitude pruning with rewinding to init,
each level the same budget, so IMP costs its dense run plus two sparse runs.
Reported: final test accuracy mean, std and [min, max] over seeds; training FLOPs relative to one dense
training (`deepzip.sparse.flops`: RigL's dense-gradient steps, SNFS's and SR-STE's dense weight
gradients counted); wall time per run. Each run is a directory skipped when finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import shutil
import statistics
import time
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, RUNS, table, write_results
from _plot import finish_panel, panel_row, save_figure
from deepzip import data, models
from deepzip.checkpoint import atomic_write_text, load_model_file
from deepzip.config import hash_configs
from deepzip.lottery import Experiment, LotteryConfig
from deepzip.prune import find_targets
from deepzip.sparse import SET, SNFS, SRSTE, RigL, Static, flops
from deepzip.train import TrainConfig, train
from deepzip.train.sparse_train import sparse_train

SPARSITIES = (0.9, 0.95, 0.98)
SEEDS = (0, 1, 2)
MODELS = {"lenet300_100": TrainConfig(model="lenet300_100", batch_size=100, lr=1e-3, epochs=5, lr_schedule="cosine"),
          "lenet5": TrainConfig(model="lenet5", batch_size=100, lr=1e-3, epochs=1, lr_schedule="cosine")}
QUICK_MODELS = {"lenet300_100": TrainConfig(model="lenet300_100", dataset="digits", val_size=300, batch_size=32,
                                            lr=1e-3, epochs=3, lr_schedule="cosine")}
QUICK_SPARSITIES, QUICK_SEEDS = (0.9,), (0, 1)
SPARSE = ("static", "set", "snfs", "rigl")
ORDER = ("dense", "static", "set", "snfs", "rigl", "imp", "srste")
LABELS = {"dense": "dense", "static": "static", "set": "SET", "snfs": "SNFS", "rigl": "RigL", "imp": "IMP ticket",
          "srste": "SR-STE 2:4"}


def method_config(name: str, sparsity: float, seed: int, per_epoch: int, total: int, interval: int):
    common = dict(sparsity=sparsity, distribution="erk", seed=seed)
    if name == "static":
        return Static(**common)
    if name == "set":
        return SET(**common, update_interval=interval, drop_fraction=0.3, drop_schedule="cosine", end_fraction=0.75)
    if name == "rigl":
        return RigL(**common, update_interval=interval)
    if name == "snfs":  # once an epoch (the paper's), or 4 times in all when training is shorter than 5 epochs
        return SNFS(**common, update_interval=min(per_epoch, total // 5))
    if name == "srste":
        return SRSTE(seed=seed)
    raise ValueError(name)


def imp_config(sparsity: float) -> LotteryConfig:
    rate = 1 - math.sqrt(1 - sparsity)  # two levels of global pruning reach the target exactly
    return LotteryConfig(levels=2, fc_rate=rate, pruning="global", controls="", replicates=len(SEEDS_IN_USE))


SEEDS_IN_USE = SEEDS
INTERVAL = 100
METHODS_IN_USE = ORDER


# ------------------------------------------------------------------------------------------- runs
def _model_root(root: Path, cfg: TrainConfig) -> Path:
    """One directory per model and training budget: a changed budget never reuses other runs."""
    return root / hash_configs(cfg.model, train=cfg)


def _run_dir(root: Path, cfg: TrainConfig, method: str, sparsity: float | None, seed: int) -> Path:
    name = method if sparsity is None else f"{method}_{sparsity:g}"
    return _model_root(root, cfg) / f"{name}_seed{seed}"


def _timed(directory: Path, fn) -> None:
    """Run ``fn`` unless ``directory`` holds a finished result; record its wall time."""
    if (directory / "bench.json").exists():
        return
    started = time.perf_counter()
    fn()
    atomic_write_text(directory / "bench.json", json.dumps({"wall_s": round(time.perf_counter() - started, 2)}) + "\n")


def sparse_task(root: Path, train_cfg: TrainConfig, method: str, sparsity: float | None, seed: int, splits) -> None:
    directory = _run_dir(root, train_cfg, method, sparsity, seed)
    cfg = dataclasses.replace(train_cfg, seed=seed)
    per_epoch = math.ceil(len(splits.train) / cfg.batch_size)

    def go():
        model = models.build(cfg.model, splits.input_shape, splits.num_classes, seed=seed)
        sparse_train(model, splits, cfg, method_config(method, sparsity or 0.5, seed, per_epoch, per_epoch * cfg.epochs,
                                                       INTERVAL),
                     run_dir=directory, resume=True, progress=False)
    _timed(directory, go)


def imp_task(root: Path, train_cfg: TrainConfig, seed: int, splits) -> None:
    """The seed's dense run (level 0, shared by every target) and two IMP levels per target sparsity."""
    experiments = [Experiment(_model_root(root, train_cfg) / f"imp_{s:g}", train_cfg, imp_config(s), splits, progress=False)
                   for s in SPARSITIES_IN_USE]
    first = experiments[0]
    _timed(first.step_dir(seed, 0, "dense"), lambda: first.run_step(seed, 0, "dense"))
    for exp in experiments[1:]:
        target = exp.step_dir(seed, 0, "dense")
        if not (target / "bench.json").exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(first.step_dir(seed, 0, "dense"), target)
    for exp in experiments:
        for level in (1, 2):
            _timed(exp.step_dir(seed, level, "imp"), lambda: exp.run_step(seed, level, "imp"))


SPARSITIES_IN_USE = SPARSITIES


def _work(task) -> str:
    torch.set_num_threads(1)
    kind, root, train_cfg, args = task
    splits = SPLITS[train_cfg.model]
    started = time.perf_counter()
    if kind == "imp":
        imp_task(root, train_cfg, *args, splits)
    else:
        sparse_task(root, train_cfg, *args, splits)
    return f"{train_cfg.model} {kind} {args} {time.perf_counter() - started:.0f}s"


SPLITS: dict = {}


def tasks(root: Path, configs: dict[str, TrainConfig]) -> list:
    out = []
    for model, cfg in configs.items():
        for seed in SEEDS_IN_USE:  # by seed, so that a partial run covers every method for the first seeds
            if "imp" in METHODS_IN_USE or "dense" in METHODS_IN_USE:
                out.append(("imp", root, cfg, (seed,)))
            if "srste" in METHODS_IN_USE:
                out.append(("sparse", root, cfg, ("srste", None, seed)))
            for s in SPARSITIES_IN_USE:
                for method in SPARSE:
                    if method in METHODS_IN_USE:
                        out.append(("sparse", root, cfg, (method, s, seed)))
    return out


# ------------------------------------------------------------------------------------------ results
def _stat(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values), "n": len(values)}


def _imp_flops(exp: Experiment, seed: int, level: int, macs: dict) -> float:
    """One level's training FLOPs relative to one dense training (its masks' per-layer densities)."""
    state, meta = load_model_file(exp.step_dir(seed, level, "imp") / "mask.safetensors")
    masks = {name: state[f"m{i}"] for i, name in enumerate(meta["names"])}
    dens = {n: float(masks[n].float().mean()) if n in masks else 1.0 for n in macs}
    return flops.step_flops(macs, dens, False) / flops.dense_step_flops(macs)


def collect(root: Path, configs: dict[str, TrainConfig]) -> dict:
    out = {}
    for model, cfg in configs.items():
        splits = SPLITS[model]
        net = models.build(model, splits.input_shape, splits.num_classes)
        macs = flops.layer_macs(net, list(find_targets(net)), splits.train.x[:1])
        rows: dict[str, dict] = {}

        def add(method, sparsity, acc, ratio, wall):
            cell = rows.setdefault(method, {}).setdefault("dense" if sparsity is None else f"{sparsity:g}",
                                                          {"acc": [], "flops": [], "wall_s": [], "sparsity": []})
            cell["acc"].append(acc)
            cell["flops"].append(ratio)
            cell["wall_s"].append(wall)

        for seed in SEEDS_IN_USE:
            for method, sparsities in [("srste", [None])] + [(m, SPARSITIES_IN_USE) for m in SPARSE]:
                for s in sparsities:
                    d = _run_dir(root, cfg, method, s, seed)
                    if (d / "bench.json").exists():
                        summary, sparse = (json.loads((d / f).read_text()) for f in ("summary.json", "sparse.json"))
                        add(method if s is not None else "srste", s if s is not None else 0.5, summary["test_acc"],
                            sparse["flops_ratio"], json.loads((d / "bench.json").read_text())["wall_s"])
            for s in SPARSITIES_IN_USE:
                exp = Experiment(_model_root(root, cfg) / f"imp_{s:g}", cfg, imp_config(s), splits, progress=False)
                dense_dir = exp.step_dir(seed, 0, "dense")
                if s == SPARSITIES_IN_USE[0] and (dense_dir / "bench.json").exists():
                    add("dense", None, json.loads((dense_dir / "summary.json").read_text())["test_acc"], 1.0,
                        json.loads((dense_dir / "bench.json").read_text())["wall_s"])
                last = exp.step_dir(seed, 2, "imp")
                if (last / "bench.json").exists():
                    walls = [json.loads((p / "bench.json").read_text())["wall_s"]
                             for p in (dense_dir, exp.step_dir(seed, 1, "imp"), last)]
                    ratio = 1.0 + sum(_imp_flops(exp, seed, level, macs) for level in (1, 2))
                    add("imp", s, json.loads((last / "summary.json").read_text())["test_acc"], ratio, sum(walls))
        out[model] = {m: {k: {"acc": _stat(v["acc"]), "flops_ratio": statistics.mean(v["flops"]),
                              "wall_s": statistics.mean(v["wall_s"]), "seeds": len(v["acc"])}
                          for k, v in cells.items()} for m, cells in rows.items()}
    return out


def _fmt(cell: dict | None) -> str:
    if cell is None:
        return "not run"
    acc = cell["acc"]
    return f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f} ({cell['flops_ratio']:.3f}x, n={cell['seeds']})"


def checks(results: dict) -> dict:
    """The papers' expectations at 95% and above, per model and sparsity: met, missed or not measurable."""
    out = {}
    for model, rows in results.items():
        for s in SPARSITIES_IN_USE:
            key = f"{s:g}"
            if s < 0.95:
                continue
            acc = {m: rows.get(m, {}).get(key, {}).get("acc", {}).get("mean") for m in ("static", "set", "rigl", "imp")}
            fl = {m: rows.get(m, {}).get(key, {}).get("flops_ratio") for m in ("rigl", "imp")}
            if None in acc.values():
                out[f"{model} {key}"] = "incomplete"
                continue
            out[f"{model} {key}"] = {
                "rigl >= set": acc["rigl"] >= acc["set"], "set > static": acc["set"] > acc["static"],
                "rigl within 1 point of imp": acc["rigl"] >= acc["imp"] - 0.01,
                "rigl - imp (points)": round(100 * (acc["rigl"] - acc["imp"]), 2),
                "rigl flops / imp flops": round(fl["rigl"] / fl["imp"], 4)}
    return out


BUDGET_NOTE = ("The budget is a few epochs (sized so that the whole study fits in about an hour on 2 shared cores), "
               "far below the papers'")


def markdown(results: dict, configs: dict[str, TrainConfig], quick: bool) -> str:
    md = ["# Sparse-to-sparse training on " + next(iter(configs.values())).dataset + "\n",
          "Final test accuracy (%) mean ± std over seeds, (training FLOPs relative to one dense training, "
          "seeds). Same budget for every run: " +
          "; ".join(f"{m}: {c.epochs} epochs, Adam {c.lr:g}, batch {c.batch_size}, cosine lr" for m, c in configs.items()) +
          ". IMP = dense run + 2 levels (global magnitude, rewind to init), its FLOPs are the sum. "
          "SR-STE 2:4 runs at its natural 50% only.\n",
          BUDGET_NOTE + " (RigL: hundreds of epochs, and its claims are for long training); IMP gets three such "
          "runs, the sparse-from-scratch methods one. All sparse methods start from the same ERK random mask; "
          "SET and RigL update every 100 steps (drop fraction 0.3, cosine, to 75% of training), SNFS 4 times "
          "(0.5, cosine, momentum redistribution). FLOPs count the prunable layers only (RigL's dense-gradient "
          "steps, SNFS's and SR-STE's dense weight gradients included). Wall time: one run on one thread, while "
          "other jobs shared the 2 cores (a resumed run counts its last segment only).\n"]
    for model, rows in results.items():
        md.append(f"## {model}\n")
        header = ["method"] + [f"{100 * s:g}%" for s in SPARSITIES_IN_USE] + ["wall s / run (mean)"]
        body = []
        for method in ORDER:
            if method not in METHODS_IN_USE:
                continue
            cells = rows.get(method, {})
            if method == "dense":
                line = [LABELS[method], _fmt(cells.get("dense")) + " (any sparsity: 0%)"] + [""] * (len(SPARSITIES_IN_USE) - 1)
            elif method == "srste":
                line = [LABELS[method] + " (50%)", _fmt(cells.get("0.5"))] + [""] * (len(SPARSITIES_IN_USE) - 1)
            else:
                line = [LABELS[method]] + [_fmt(cells.get(f"{s:g}")) for s in SPARSITIES_IN_USE]
            walls = [c["wall_s"] for c in cells.values()]
            body.append(line + [f"{statistics.mean(walls):.0f}" if walls else ""])
        md += [table(header, body), ""]
    md.append("## Expectations from the papers (RigL >= SET > static at 95%+, RigL close to IMP at a fraction of its cost)\n")
    for key, value in checks(results).items():
        md.append(f"- {key}: {value if isinstance(value, str) else ', '.join(f'{k}: {v}' for k, v in value.items())}")
    md.append("")
    return "\n".join(md)


def plot(results: dict, path: Path) -> None:
    fig, axes = panel_row(len(results))
    for ax, (model, rows) in zip(axes, results.items()):
        for method in ORDER:
            cells = rows.get(method, {})
            if not cells:
                continue
            keys = sorted(cells, key=lambda k: 0.0 if k == "dense" else float(k))
            x = [0.0 if k == "dense" else 100 * float(k) for k in keys]
            y = [100 * cells[k]["acc"]["mean"] for k in keys]
            err = [100 * cells[k]["acc"]["std"] for k in keys]
            if method == "dense":
                ax.axhline(y[0], color="black", lw=1, ls="--", label="dense")
                continue
            ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=2, label=LABELS[method])
        finish_panel(ax, "sparsity (%)", "final test accuracy (%)", model)
    save_figure(fig, path)


def main() -> None:
    global SEEDS_IN_USE, SPARSITIES_IN_USE, INTERVAL, METHODS_IN_USE, BUDGET_NOTE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one core each)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every run this many epochs instead of the preset's few (results: sparse_training_e<N>)")
    parser.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES), help="target sparsities")
    parser.add_argument("--methods", nargs="+", default=list(ORDER), choices=list(ORDER),
                        help="methods to run (dense comes with imp: IMP's level 0 is the dense run)")
    parser.add_argument("--report-only", action="store_true", help="write the results from the finished runs, train nothing")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings on the bundled 8x8 digits; prints results, writes nothing to benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        configs, root = QUICK_MODELS, RUNS / "sparse_training_quick"
        SEEDS_IN_USE, SPARSITIES_IN_USE, INTERVAL = QUICK_SEEDS, QUICK_SPARSITIES, 10
    else:
        configs, root = {m: MODELS[m] for m in args.models}, RUNS / "sparse_training"
        SPARSITIES_IN_USE = tuple(args.sparsities)
        METHODS_IN_USE = tuple(args.methods) + (("dense",) if "imp" in args.methods else ())
        if any(not 0 < s < 1 for s in SPARSITIES_IN_USE):
            parser.error(f"--sparsities must lie in (0, 1), got {args.sparsities}")
    name = "sparse_training"
    if args.epochs is not None:
        if args.epochs < 1:
            parser.error(f"--epochs must be >= 1, got {args.epochs}")
        configs = {m: dataclasses.replace(c, epochs=args.epochs) for m, c in configs.items()}
        name = f"sparse_training_e{args.epochs}"
        BUDGET_NOTE = (f"The budget is {args.epochs} epochs per run (a longer budget than the main study's few, "
                       "on the models and sparsities listed; still below the papers'")
    for model, cfg in configs.items():
        SPLITS[model] = data.load(cfg.dataset, val_size=cfg.val_size)
    if not args.report_only:
        todo = tasks(root, configs)
        if args.jobs > 1:
            with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
                for line in pool.imap_unordered(_work, todo):
                    print(line, flush=True)
        else:
            for task in todo:
                print(_work(task), flush=True)
    results = collect(root, configs)
    md = markdown(results, configs, args.quick)
    if args.quick:
        plot(results, root / "sparse_training.png")
        print(md)
    else:
        plot(results, RESULTS / f"{name}.png")
        write_results(name, {"results": results, "checks": checks(results),
                                          "configs": {m: dataclasses.asdict(c) for m, c in configs.items()},
                                          "sparsities": list(SPARSITIES_IN_USE), "seeds": list(SEEDS_IN_USE)}, md,
                      script="sparse_training")


if __name__ == "__main__":
    main()
