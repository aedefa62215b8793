"""Compression to a size budget on Fashion-MNIST (issue 19): test accuracy vs file bytes.

    python benchmarks/budget.py                       # LeNet-300-100, budgets 40x .. 200x
    python benchmarks/budget.py --models lenet5 --ratios 40 64 100
    python benchmarks/budget.py --variants l0         # the same budgets with learned (L0) sparsity
    python benchmarks/budget.py --quick               # seconds, on the digits data (the tests run it)

Each budget runs `deepzip.pipeline.compress_to_budget` from the model's dense preset (the same dense run
as every other benchmark), with the demo's retraining recipe (4 iterative steps of 5 epochs, lr 1e-3,
L2 5e-4; 2 epochs of centroid fine-tuning): the pipeline measures every layer's bytes and loss at each
candidate (sparsity, bits), chooses per layer under the budget, prunes, retrains, quantizes, fine-tunes,
encodes and decodes; the accuracy is the decoded file's on the test set. The hand-tuned Deep Compression
recipe (benchmarks/compress.py, one sparsity and one bit width per layer kind) is the reference row.
`--jobs N --threads T` runs the budgets after the first side by side (each T threads): the wall times are then
each run's own, with the others beside it. Targets within 0.5 points of dense: LeNet-300-100 >= 64x, LeNet-5 >= 100x; budgeted compression of
LeNet-300-100 under 10 minutes on 2 cores. Runs resume (every round is an ordinary pipeline run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, RUNS, table, write_results
from _plot import finish_panel, panel_row, save_figure
import deepzip
from deepzip import data
from deepzip.encode import encode_model, open_file
from deepzip.distributed import run_in_processes
from deepzip.pipeline import compress_to_budget
from deepzip.train import BASELINES, BudgetConfig, PruneConfig, QuantizeConfig, TrainConfig

TARGETS = {"lenet300_100": 64.0, "lenet5": 100.0}
RATIOS = (40, 64, 100, 150, 200)
# How the chosen per-layer sparsities are reached: iterative magnitude pruning, or L0 gates learned with
# each layer's target (BudgetConfig.budget_prune_method).
VARIANTS = {"fraction": {}, "l0": {"budget_prune_method": "l0"}}
VARIANT_LABELS = {"fraction": "budget", "l0": "budget + L0"}
PRUNE = PruneConfig(steps=4, retrain_epochs=5, retrain_lr=1e-3, weight_decay=5e-4)  # the demo's recipe
QUANT = QuantizeConfig(finetune_epochs=2)


def run_budget(train_cfg: TrainConfig, ratio: float, splits, prune_cfg=PRUNE, quant_cfg=QUANT,
               budget_options: dict | None = None, runs=RUNS) -> dict:
    budget = BudgetConfig(target_ratio=float(ratio), **(budget_options or {}))
    started = time.perf_counter()
    report = compress_to_budget(train_cfg, prune_cfg, quant_cfg, budget, runs, progress=False, splits=splits)
    return {"ratio_target": ratio, "seconds": time.perf_counter() - started, "file_bytes": report["file_bytes"],
            "compression": report["compression"], "accuracy": report["accuracy"], "budget": report["budget"],
            "dz": report["dz"]}


def _budget_dz(runs, name: str, result: dict) -> Path | None:
    """The .dz a finished budget wrote (older results did not record it: found by its report)."""
    if result.get("dz") and Path(result["dz"]).exists():
        return Path(result["dz"])
    for report in [*runs.glob("*/report.json"), *runs.glob("*/*/report.json")]:
        found = json.loads(report.read_text())
        if (found.get("budget", {}).get("budget_bytes") == result["budget"]["budget_bytes"]
                and found.get("file_bytes") == result["file_bytes"] and found.get("model") == name):
            return Path(found["dz"])
    return None


def current_writer_bytes(runs, name: str, result: dict) -> int | None:
    """The same compressed model written by this version's writer (format 1.2 codes the masks and indices
    under adaptive models: the budgets below were chosen with the sizes of the writer of their time)."""
    path = _budget_dz(runs, name, result)
    if path is None or not path.exists():
        return None
    data, _ = encode_model(deepzip.load(path, keep_state=True), metadata=open_file(path)[0]["metadata"])
    return len(data)


def recipe_candidates(name: str) -> list[dict]:
    """Every candidate of the hand-tuned recipe (benchmarks/compress.py): the reference curve."""
    path = RESULTS / "compress.json"
    row = json.loads(path.read_text())["results"].get(name) if path.exists() else None
    return [] if not row else [{"setting": k, **v} for k, v in row["candidates"].items()]


def plot(results: dict, path) -> None:
    """Test accuracy (decoded) vs file bytes: the recipe's candidates and each variant's budgets."""
    fig, axes = panel_row(len(results))
    for ax, (name, result) in zip(axes, results.items()):
        recipe = sorted(recipe_candidates(name), key=lambda c: c["file_bytes"])
        if recipe:
            ax.plot([c["file_bytes"] for c in recipe], [100 * c["test_acc"] for c in recipe], "s--",
                    label="Deep Compression recipe (benchmarks/compress.py)")
        for variant, label in VARIANT_LABELS.items():
            rows = [r for r in result["budgets"] if r.get("variant", "fraction") == variant]
            if rows:
                ax.plot([r["file_bytes"] for r in rows], [100 * r["accuracy"]["decoded"] for r in rows], "o-",
                        label=label)
                for r in rows:
                    ax.annotate(f"{r['ratio_target']:g}x", (r["file_bytes"], 100 * r["accuracy"]["decoded"]),
                                fontsize=7, textcoords="offset points", xytext=(3, 3))
        if result.get("dense_test_acc"):
            dense = 100 * result["dense_test_acc"]
            ax.axhline(dense, color="black", lw=1, ls="--", label="dense")
            ax.axhline(dense - 0.5, color="grey", lw=0.8, ls=":", label="dense - 0.5 points")
        ax.set_xscale("log")
        finish_panel(ax, "file bytes (.dz)", "test accuracy of the decoded file (%)", name, legend_size=7)
    save_figure(fig, path)


def reference(name: str) -> dict | None:
    """The hand-tuned recipe's row, as benchmarks/compress.py last measured it."""
    path = RESULTS / "compress.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["results"].get(name)
    return row and {"compression": row["compression"], "file_bytes": row["file_bytes"],
                    "test_acc": row["decoded_test_acc"], "setting": row["chosen"]}


def markdown(results: dict, quick: bool) -> str:
    md = ["# Compression to a size budget (Fashion-MNIST)" + (" — quick run on digits" if quick else ""), "",
          "Each row: `compress_to_budget` at that target (per-layer sparsity and bits chosen together, "
          "sizes by the real encoder), accuracy of the decoded file on the test set. Wall time includes "
          "the per-layer measurements on the first budget (later budgets reuse them) and every retraining. "
          "File bytes are the writer's of the run's time (the budget was chosen with them); *this version's "
          "writer*: the same decoded model written again now (format 1.2's adaptive mask and index coding, "
          "benchmarks/coding.py), the ratio a user gets today. Accuracy is unchanged by rewriting (lossless).",
          ""]
    for name, result in results.items():
        dense = result["dense_test_acc"]
        rows = []
        ref = result.get("reference")
        if ref:
            rows.append(["Deep Compression recipe (benchmarks/compress.py)", f"{ref['compression']:.1f}x",
                         f"{ref['file_bytes']:,}", f"{ref['test_acc']:.2%}", f"{100 * (ref['test_acc'] - dense):+.2f}",
                         "-", "-", "see coding.md", ref["setting"]])
        for r in result["budgets"]:
            acc = r["accuracy"]["decoded"]
            last = r["budget"]["rounds"][-1]
            now = r.get("current_writer_bytes")
            rows.append([f"{VARIANT_LABELS[r.get('variant', 'fraction')]} {r['ratio_target']:g}x", f"{r['compression']:.1f}x", f"{r['file_bytes']:,}",
                         f"{acc:.2%}", f"{100 * (acc - dense):+.2f}", "met" if r["budget"]["met"] else "**missed**",
                         f"{r['seconds']:.0f}",
                         "-" if now is None else f"{now:,} ({r['file_bytes'] * r['compression'] / now:.1f}x)",
                         f"sparsity {last['layer_sparsity']}; bits {last['bits']}"])
        target = TARGETS.get(name)
        verdicts = []
        for variant in dict.fromkeys(r.get("variant", "fraction") for r in result["budgets"]):
            within = [r["compression"] for r in result["budgets"]
                      if r.get("variant", "fraction") == variant and dense - r["accuracy"]["decoded"] <= 0.005]
            best = max(within, default=None)
            verdict = (f"{VARIANT_LABELS[variant]}: " + ("no budget stayed within 0.5 points" if best is None else
                                                          f"highest ratio within 0.5 points of dense **{best:.1f}x**"))
            if target and not quick:
                verdict += f" (target {target:.0f}x: {'met' if best and best >= target else '**missed**'})"
            verdicts.append(verdict)
        verdict = "; ".join(verdicts)
        md += [f"## {name}", "", f"Dense test accuracy {dense:.2%}; {verdict}.", "",
               table(["run", "compression", "file bytes", "test acc (decoded)", "vs dense (points)", "budget",
                      "wall s", "same model, this version's writer", "chosen per layer"], rows), ""]
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lenet300_100"], choices=list(BASELINES))
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), help="budgets, as compression ratios")
    parser.add_argument("--variants", nargs="+", default=["fraction"], choices=list(VARIANTS),
                        help="fraction: iterative magnitude pruning to the chosen sparsities; l0: learned L0 gates")
    parser.add_argument("--quick", action="store_true", help="seconds on the digits data (the tests run it)")
    parser.add_argument("--jobs", type=int, default=1, help="budgets run side by side after the first (forked workers)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each budget's run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in (["lenet300_100"] if args.quick else args.models):
        if args.quick:
            train_cfg = TrainConfig(dataset="digits", val_size=300, epochs=2, batch_size=32)
            splits = data.load("digits", val_size=300)
            prune_cfg, quant_cfg = PruneConfig(steps=1, retrain_epochs=1), QuantizeConfig(finetune_epochs=1)
            options = {"budget_sparsities": "0.5,0.9", "budget_bits": "3,5", "budget_eval_size": 200}
            ratios, runs = [15, 25], RUNS / "budget_quick"
        else:
            train_cfg = BASELINES[name]
            splits = data.load(train_cfg.dataset, val_size=train_cfg.val_size)
            prune_cfg, quant_cfg, options, ratios, runs = PRUNE, QUANT, {}, args.ratios, RUNS
        for variant in args.variants:
            finished = _finished_dir(runs, name, variant)

            def run_step(ratio, train_cfg=train_cfg, splits=splits, prune_cfg=prune_cfg, quant_cfg=quant_cfg,
                         options={**options, **VARIANTS[variant]}, runs=runs, finished=finished, variant=variant):
                torch.set_num_threads(args.threads)
                result = run_budget(train_cfg, ratio, splits, prune_cfg, quant_cfg, options, runs)
                finished.mkdir(parents=True, exist_ok=True)
                (finished / f"{ratio:g}.json").write_text(json.dumps({**result, "variant": variant}))

            done = lambda r, finished=finished: (finished / f"{r:g}.json").exists()  # noqa: E731
            if args.jobs == 1:
                for ratio in [r for r in ratios if not done(r)]:
                    run_step(ratio)
            else:
                # The first budget trains the dense model and measures the layers; the others then run side by
                # side in forked workers, one thread each (GNU OpenMP hangs in a forked child that starts a
                # thread pool after the parent has used one).
                args.threads = 1
                run_in_processes(ratios, run_step, lambda r: None if r == ratios[0] else ratios[0], done, args.jobs)
        results[name] = collect(runs, name, quick=args.quick, settings={
            "prune": dataclasses.asdict(prune_cfg), "quantize": dataclasses.asdict(quant_cfg)})
    if args.quick:
        print(markdown(results, True))
        return
    # The report holds every finished budget of every model and variant, not only this invocation's.
    for name in BASELINES:
        if name not in results and any(_finished_dir(RUNS, name, v).exists() for v in VARIANTS):
            results[name] = collect(RUNS, name, quick=False, settings={
                "prune": dataclasses.asdict(PRUNE), "quantize": dataclasses.asdict(QUANT)})
    write_results("budget", {"results": results, "jobs": args.jobs, "threads_per_job": args.threads},
                  markdown(results, False))
    plot(results, RESULTS / "budget.png")


def _finished_dir(runs, name: str, variant: str):
    return runs / (f"budget_results_{name}" + ("" if variant == "fraction" else f"_{variant}"))


def collect(runs, name: str, quick: bool, settings: dict) -> dict:
    """Every finished budget of ``name`` (all variants), in variant then ratio order."""
    budgets = []
    for variant in VARIANTS:
        directory = _finished_dir(runs, name, variant)
        rows = [json.loads(p.read_text()) for p in directory.glob("*.json")] if directory.exists() else []
        budgets += sorted(({"variant": variant, **r} for r in rows), key=lambda r: r["ratio_target"])
    for r in budgets:
        r["current_writer_bytes"] = None if quick else current_writer_bytes(runs, name, r)
    return {"budgets": budgets, "reference": None if quick else reference(name), "settings": settings,
            "dense_test_acc": budgets[0]["accuracy"]["dense"] if budgets else None}


if __name__ == "__main__":
    main()
