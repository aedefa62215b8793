"""The full Deep Compression pipeline: dense -> pruned -> quantized -> .dz -> decoded, resumable.

Each stage writes its output into the run directory and is skipped when that output exists, so a
killed run continues at the stage it reached (and inside a stage, at its last training checkpoint).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

from . import data as datasets
from .api import load
from .budget import Option, choose, total_bytes
from .checkpoint import atomic_write_text, load_model_file, save_model
from .config import flag, hash_configs, hashname, non_defaults
from .encode import build_report, decode_records, format_streams, format_table, open_file, save
from .models import build, count_parameters
from .quantize import load_state_dict, quantize
from .train import BudgetConfig, PruneConfig, QuantizeConfig, TrainConfig, evaluate, prune_and_retrain, train
from .train.budget import layer_options, settings_specs, validation_subset


def _stage(path: Path, model, compute):
    """Load the stage's saved model if present, else compute it and save it atomically."""
    if path.exists():
        state, _ = load_model_file(path)
        load_state_dict(model, state)
        return model
    compute(model)
    save_model(path, model, getattr(model, "_deepzip_description", {}))
    return model


def _dense(train_cfg: TrainConfig, runs_dir: Path, data_dir, splits, progress: bool):
    """(data, data identity, the trained dense model): trained once, then loaded from its run directory."""
    if splits is None:
        splits = datasets.load(train_cfg.dataset, data_dir=data_dir, val_size=train_cfg.val_size)
    identity = datasets.data_identity(train_cfg.dataset, data_dir)
    dense = build(train_cfg.model, splits.input_shape, splits.num_classes, seed=train_cfg.seed)
    train(dense, splits, train_cfg, run_dir=runs_dir / hashname(train_cfg, "train", data=identity), resume=True,
          description=dense._deepzip_description, progress=progress)
    return splits, identity, dense


def compress(train_cfg: TrainConfig, prune_cfg: PruneConfig, quant_cfg: QuantizeConfig, runs_dir: str | Path = "runs",
             data_dir=None, float_dtype: str = "f32", codebook_dtype: str = "f32", progress: bool = True,
             splits: datasets.DataSplits | None = None) -> dict[str, Any]:
    """Run (or resume) the pipeline for a registry model, or a user's model named by the import path of its
    factory in ``train_cfg.model`` (a name keeps run directories stable); returns the report (also written
    as JSON + Markdown).

    Run directories are named by the configs' non-default fields and, when ``data_dir`` is given, by
    the data's location (so other data is another run; without it the names are as they always were).
    ``splits``: the data already loaded from ``data_dir`` (else loaded here).
    """
    runs_dir = Path(runs_dir)
    splits, identity, dense = _dense(train_cfg, runs_dir, data_dir, splits, progress)
    run_dir = runs_dir / hash_configs("compress", identity={"data": identity}, train=train_cfg, prune=prune_cfg,
                                      quantize=quant_cfg) / f"{float_dtype}_{codebook_dtype}"
    run_dir.mkdir(parents=True, exist_ok=True)

    def do_prune(model):
        prune_and_retrain(model, splits, prune_cfg, train_cfg, run_dir=run_dir / "prune", progress=progress)

    pruned = _stage(run_dir / "pruned.safetensors", copy.deepcopy(dense), do_prune)

    def do_quantize(model):
        quantize(model, quant_cfg.method_config())
        if quant_cfg.finetune_epochs:
            train(model, splits, quant_cfg.finetune_config(train_cfg), run_dir=run_dir / "finetune", resume=True,
                  progress=progress)

    quantized = _stage(run_dir / "quantized.safetensors", copy.deepcopy(pruned), do_quantize)
    # Non-default fields only: the header stays small (it counts against the compression ratio).
    metadata = {"train_config": non_defaults(train_cfg), "prune_config": non_defaults(prune_cfg),
                "quantize_config": non_defaults(quant_cfg)}
    dz_path = run_dir / "model.dz"
    report = save(quantized, dz_path, float_dtype, codebook_dtype, metadata=metadata)
    decoded = load(dz_path)
    accuracy = {name: evaluate(model, splits.test)[1] for name, model in
                (("dense", dense), ("pruned", pruned), ("quantized", quantized), ("decoded", decoded))}
    report.update({"model": train_cfg.model, "dataset": train_cfg.dataset, "params": count_parameters(dense),
                   "accuracy": accuracy, "dz": str(dz_path), "run_dir": str(run_dir)})
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(run_dir / "report.md", format_report(report))
    return report


# What a budget chooses: set by hand alongside --target-ratio / --max-bytes, they would be overridden.
CHOSEN_BY_BUDGET = {"prune": ("method", "sparsity", "layer_sparsity", "quality", "scales", "n", "m", "norm",
                              "round_to"),
                    "quantize": ("bits_conv", "bits_fc", "bits")}


def compress_to_budget(train_cfg: TrainConfig, prune_cfg: PruneConfig, quant_cfg: QuantizeConfig,
                       budget_cfg: BudgetConfig, runs_dir: str | Path = "runs", data_dir=None,
                       float_dtype: str = "f32", codebook_dtype: str = "f32", progress: bool = True,
                       splits: datasets.DataSplits | None = None) -> dict[str, Any]:
    """The pipeline at a size budget: each layer's sparsity and index bits chosen together.

    Each layer's bytes at every candidate (sparsity, bits) are measured by the encoder and its cost as
    the validation loss it adds alone (`train.budget.layer_options`); `budget.choose` picks the settings
    with the least summed cost that fit; the usual pipeline (iterative pruning with retraining to each
    layer's sparsity, or with ``budget_prune_method="l0"`` L0 gates learned with each layer's target; k-means
    with fine-tuning) runs with them, and the real file is measured. While
    the file is over budget, the choice is re-made with the overshoot taken off (``budget_rounds``).
    Every round is an ordinary `compress` run, so reruns resume; the measurements are kept too.
    Returns the last round's report with a ``budget`` section (target, rounds, met or missed).
    """
    check_budget_options(prune_cfg, quant_cfg, budget_cfg)
    runs_dir = Path(runs_dir)
    splits, identity, dense = _dense(train_cfg, runs_dir, data_dir, splits, progress)
    exclude = sorted(set(prune_cfg.method_config(curves={}, base_accuracy=0.0).exclude or ()) |
                     set(quant_cfg.excluded()))
    options, fixed = _measured_options(dense, splits, budget_cfg, exclude, runs_dir, identity, train_cfg,
                                       float_dtype, codebook_dtype, progress)
    budget = budget_cfg.budget_bytes(4 * count_parameters(dense))
    slack, rounds, report = _metadata_bytes(options, budget_cfg.budget_prune_method), [], {}
    for _ in range(budget_cfg.budget_rounds):
        if budget - fixed - slack <= 0:
            raise ValueError(f"no choice of the measured options fits {budget:,} bytes: the file's header, biases "
                             f"and unpruned layers alone take {fixed + slack:,}; give a larger budget")
        try:
            chosen = choose(options, budget - fixed - slack)
        except ValueError as error:
            raise ValueError(f"a budget of {budget:,} bytes leaves {budget - fixed - slack:,} for the weights of "
                             f"the chosen layers after the rest of the file ({fixed + slack:,}): {error}") from None
        layer_sparsity, bits = settings_specs(chosen)
        prune_round = dataclasses.replace(prune_cfg, method=budget_cfg.budget_prune_method, layer_sparsity=layer_sparsity)
        quant_round = dataclasses.replace(quant_cfg, bits=bits)
        report = compress(train_cfg, prune_round, quant_round, runs_dir, data_dir, float_dtype, codebook_dtype,
                          progress, splits)
        rounds.append({"layer_sparsity": layer_sparsity, "bits": bits, "predicted_bytes": fixed + total_bytes(chosen),
                       "file_bytes": report["file_bytes"], "decoded_accuracy": report["accuracy"]["decoded"]})
        if report["file_bytes"] <= budget:
            break
        slack += report["file_bytes"] - budget
    report["budget"] = {"budget_bytes": budget, "target_ratio": budget_cfg.target_ratio or None,
                        "max_bytes": budget_cfg.max_bytes or None, "met": report["file_bytes"] <= budget,
                        "rounds": rounds}
    atomic_write_text(Path(report["run_dir"]) / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(Path(report["run_dir"]) / "report.md", format_report(report))
    return report


def _metadata_bytes(options: dict[str, list[Option]], method: str = "fraction") -> int:
    """An upper bound on what the chosen settings add to the file's header (its metadata names them)."""
    longest = {name: max(opts, key=lambda o: len(f"{o.settings['sparsity']:g}{o.settings['bits']}"))
               for name, opts in options.items()}
    layer_sparsity, bits = settings_specs(longest)
    return len(json.dumps({"prune_config": {"method": method, "layer_sparsity": layer_sparsity},
                           "quantize_config": {"bits": bits}})) + 32


def check_budget_options(prune_cfg: PruneConfig, quant_cfg: QuantizeConfig, budget_cfg: BudgetConfig,
                         prefixes: dict[str, str] | None = None) -> None:
    """A budget chooses the pruning method, sparsities and bits: refuse any of them set by hand.
    ``prefixes`` ({"prune": "prune_", "quantize": "quant_"}) names them as the CLI's flags."""
    if not budget_cfg.active:
        raise ValueError("compress_to_budget needs target_ratio or max_bytes; without a budget use compress")

    def spelled(family: str, name: str) -> str:
        return flag(name, prefixes[family]) if prefixes else f"{family} option {name}"

    given = [spelled(family, name) for family, cfg in (("prune", prune_cfg), ("quantize", quant_cfg))
             for name in CHOSEN_BY_BUDGET[family] if getattr(cfg, name) != _defaults(cfg)[name]]
    if given:
        chosen = [spelled(family, name) for family, names in CHOSEN_BY_BUDGET.items() for name in names]
        how = " (learned L0 gates reach the chosen sparsities with " + (
            flag("budget_prune_method") if prefixes else "budget option budget_prune_method") + " l0)"
        raise ValueError(f"with a size budget each layer's sparsity and bits are chosen for it: leave out "
                         f"{', '.join(given)} (the budget sets {', '.join(chosen)})"
                         f"{how if prune_cfg.method != _defaults(prune_cfg)['method'] else ''}")


def _defaults(cfg) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cfg)}


def _measured_options(dense, splits, budget_cfg: BudgetConfig, exclude, runs_dir: Path, identity, train_cfg,
                      float_dtype: str, codebook_dtype: str, progress: bool):
    """The per-layer options, measured once and kept (JSON) beside the dense run for reruns."""
    # The candidates themselves (not only the fields that differ from their defaults) name the
    # measurement, so a changed default never reuses measurements of other candidates.
    candidates = {"sparsities": list(budget_cfg.sparsities()), "bits": list(budget_cfg.bits()),
                  "eval_size": budget_cfg.budget_eval_size}
    path = runs_dir / hash_configs("budget", identity={"data": identity, "exclude": exclude,
                                                       "storage": [float_dtype, codebook_dtype],
                                                       "candidates": candidates},
                                   train=train_cfg) / "options.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return {n: [Option(**o) for o in opts] for n, opts in saved["options"].items()}, saved["fixed_bytes"]
    options, fixed = layer_options(dense, validation_subset(splits, budget_cfg.budget_eval_size),
                                   budget_cfg.sparsities(), budget_cfg.bits(), exclude, float_dtype=float_dtype,
                                   codebook_dtype=codebook_dtype, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"fixed_bytes": fixed, "options": {n: [dataclasses.asdict(o) for o in opts] for n, opts in options.items()}}
    atomic_write_text(path, json.dumps(saved, indent=1) + "\n")
    return options, fixed


def format_report(report: dict[str, Any]) -> str:
    acc = report["accuracy"]
    return (f"# {report['model']} on {report['dataset']}: Deep Compression\n\n"
            f"Test accuracy: dense {acc['dense']:.2%}, pruned {acc['pruned']:.2%}, quantized {acc['quantized']:.2%}, "
            f"decoded from the file {acc['decoded']:.2%}.\n\n"
            f"Compression: {report['dense_bytes']:,} bytes of fp32 parameters -> {report['file_bytes']:,} bytes "
            f"on disk = **{report['compression']:.1f}x** (P+Q with fixed-width codes: {report['compression_pq']:.1f}x).\n\n"
            + _budget_text(report) + format_table(report) + "\n\n## Entropy-coded streams\n\n"
            + format_streams(report) + "\n")


def _budget_text(report: dict[str, Any]) -> str:
    budget = report.get("budget")
    if not budget:
        return ""
    target = f"{budget['target_ratio']:g}x" if budget["target_ratio"] else f"{budget['max_bytes']:,} bytes"
    lines = [f"Size budget {target}: at most {budget['budget_bytes']:,} bytes, "
             f"**{'met' if budget['met'] else 'missed'}** ({report['file_bytes']:,} bytes) after "
             f"{len(budget['rounds'])} round(s) of choosing each layer's sparsity and bits:", "",
             "| round | layer sparsity | bits | predicted bytes (before metadata) | file bytes | decoded accuracy |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {r['layer_sparsity']} | {r['bits']} | {r['predicted_bytes']:,} | {r['file_bytes']:,} | "
              f"{r['decoded_accuracy']:.2%} |" for i, r in enumerate(budget["rounds"], start=1)]
    return "\n".join(lines) + "\n\n"


def inspect(path: str | Path) -> dict[str, Any]:
    """The per-layer report of a .dz file, from the file alone (no data, no model code)."""
    header, sections, size = open_file(path)
    decode_records(header, sections, str(path))  # every stream decoded: a damaged file fails here
    return {**build_report(header, sections, size), "model": (header.get("model") or {}).get("model", "?"),
            "metadata": header.get("metadata", {})}
