"""The full Deep Compression pipeline: dense -> pruned -> quantized -> .dz -> decoded, resumable.

Each stage writes its output into the run directory and is skipped when that output exists, so a
killed run continues at the stage it reached (and inside a stage, at its last training checkpoint).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from . import data as datasets
from .api import load
from .checkpoint import atomic_write_text, load_model_file, save_model
from .config import hash_configs, hashname, non_defaults
from .encode import build_report, decode_records, format_streams, format_table, open_file, save
from .models import build, count_parameters
from .quantize import load_state_dict, quantize
from .train import PruneConfig, QuantizeConfig, TrainConfig, evaluate, prune_and_retrain, train


def _stage(path: Path, model, compute):
    """Load the stage's saved model if present, else compute it and save it atomically."""
    if path.exists():
        state, _ = load_model_file(path)
        load_state_dict(model, state)
        return model
    compute(model)
    save_model(path, model, getattr(model, "_deepzip_description", {}))
    return model


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
    if splits is None:
        splits = datasets.load(train_cfg.dataset, data_dir=data_dir, val_size=train_cfg.val_size)
    identity = datasets.data_identity(train_cfg.dataset, data_dir)
    dense = build(train_cfg.model, splits.input_shape, splits.num_classes, seed=train_cfg.seed)
    train(dense, splits, train_cfg, run_dir=runs_dir / hashname(train_cfg, "train", data=identity), resume=True,
          description=dense._deepzip_description, progress=progress)
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


def format_report(report: dict[str, Any]) -> str:
    acc = report["accuracy"]
    return (f"# {report['model']} on {report['dataset']}: Deep Compression\n\n"
            f"Test accuracy: dense {acc['dense']:.2%}, pruned {acc['pruned']:.2%}, quantized {acc['quantized']:.2%}, "
            f"decoded from the file {acc['decoded']:.2%}.\n\n"
            f"Compression: {report['dense_bytes']:,} bytes of fp32 parameters -> {report['file_bytes']:,} bytes "
            f"on disk = **{report['compression']:.1f}x** (P+Q with fixed-width codes: {report['compression_pq']:.1f}x).\n\n"
            + format_table(report) + "\n\n## Entropy-coded streams\n\n" + format_streams(report) + "\n")


def inspect(path: str | Path) -> dict[str, Any]:
    """The per-layer report of a .dz file, from the file alone (no data, no model code)."""
    header, sections, size = open_file(path)
    decode_records(header, sections, str(path))  # every stream decoded: a damaged file fails here
    return {**build_report(header, sections, size), "model": (header.get("model") or {}).get("model", "?"),
            "metadata": header.get("metadata", {})}
