"""``deepzip compress`` (the full pipeline) and ``inspect`` / ``evaluate`` / ``decompress`` for .dz files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .. import data
from ..checkpoint import save_model
from ..config import add_arguments as add_config_arguments, from_args
from ..api import load, load_with_header
from ..encode import format_table
from ..pipeline import compress, format_report, inspect
from ..prune import remove
from ..quantize import finalize
from ..train import BASELINES, PruneConfig, QuantizeConfig, TrainConfig, evaluate
from .common import add_common_arguments

HELP = "the whole pipeline from the dense baseline: prune + retrain, quantize + fine-tune, encode, decode, report"


def _storage_arguments(parser) -> None:
    parser.add_argument("--float-dtype", default="f32", choices=("f32", "f16"),
                        help="storage of dense tensors (biases, unpruned layers); f32 is bit-exact")
    parser.add_argument("--codebook-dtype", default="f32", choices=("f32", "f16"), help="storage of codebooks")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="lenet300_100", help="registry model")
    parser.add_argument("--dataset", default="fashion-mnist", help="data set")
    add_config_arguments(parser, TrainConfig, prefix="train_", skip=("model", "dataset"))
    add_config_arguments(parser, PruneConfig, prefix="prune_")
    add_config_arguments(parser, QuantizeConfig, prefix="quant_")
    _storage_arguments(parser)
    add_common_arguments(parser)


def baseline_config(model: str, dataset: str, given: TrainConfig | None = None) -> TrainConfig:
    """The dense baseline's settings: the model's preset unless training flags were given."""
    given = replace(given or TrainConfig(), model=model, dataset=dataset)
    preset = BASELINES.get(model)
    if preset is not None and preset.dataset == dataset and given == TrainConfig(model=model, dataset=dataset):
        return preset
    return given


def run(args) -> int:
    given = from_args(TrainConfig, args, "train_", model=args.model, dataset=args.dataset)
    train_cfg = baseline_config(args.model, args.dataset, given)
    report = compress(train_cfg, from_args(PruneConfig, args, "prune_"),
                      from_args(QuantizeConfig, args, "quant_"), args.runs_dir, args.data_dir, args.float_dtype,
                      args.codebook_dtype, progress=not args.quiet)
    return _print(report)


def _print(report: dict) -> int:
    print(format_report(report))
    print(f"file: {report['dz']}; report: {report['run_dir']}/report.md")
    return 0


# The recipe benchmarks/prune.py chose for both LeNets by validation accuracy: retraining with lr 1e-3
# and Caffe LeNet's L2 5e-4 (-0.20 / -0.18 points test at 92% sparsity; see benchmarks/results/prune.md).
DEMO_PRUNE = PruneConfig(sparsity=0.92, steps=4, retrain_epochs=5, retrain_lr=1e-3, weight_decay=5e-4)


class Demo:
    HELP = "the main job: compress LeNet-300-100 on Fashion-MNIST end to end and print the paper's table"

    @staticmethod
    def add_arguments(parser) -> None:
        add_common_arguments(parser)

    @staticmethod
    def run(args) -> int:
        report = compress(baseline_config("lenet300_100", "fashion-mnist"), DEMO_PRUNE, QuantizeConfig(),
                          args.runs_dir, args.data_dir, progress=not args.quiet)
        return _print(report)


class Inspect:
    HELP = "print a .dz file's per-layer table (no data needed)"

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("file", help="a .dz file")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    @staticmethod
    def run(args) -> int:
        report = inspect(args.file)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"{args.file}: model {report['model']}\n")
            print(format_table(report))
        return 0


class Evaluate:
    HELP = "test accuracy of the model in a .dz file"

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("file", help="a .dz file of a registry model")
        parser.add_argument("--dataset", default=None, help="data set (default: the one it was trained on)")
        parser.add_argument("--data-dir", default=None, help="directory holding the data set's IDX files")

    @staticmethod
    def run(args) -> int:
        model, header = load_with_header(args.file)
        header_meta = header.get("metadata") or {}
        recorded = header_meta.get("train_config")
        dataset = args.dataset or (TrainConfig(**recorded).dataset if isinstance(recorded, dict) else None)
        if dataset is None:
            raise ValueError(f"{args.file} does not record its data set; pass --dataset")
        splits = data.load(dataset, data_dir=args.data_dir, val_size=0)
        loss, acc = evaluate(model, splits.test)
        print(f"{args.file}: test accuracy {acc:.2%} (loss {loss:.4f}) on {dataset}")
        return 0


class Decompress:
    HELP = "write the model in a .dz file as plain dense weights (safetensors)"

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("file", help="a .dz file of a registry model")
        parser.add_argument("--output", "-o", required=True, help="the .safetensors file to write")

    @staticmethod
    def run(args) -> int:
        model = remove(finalize(load(args.file)))
        save_model(Path(args.output), model, getattr(model, "_deepzip_description", {}))
        print(f"{args.output}: {sum(p.numel() for p in model.parameters()):,} dense parameters")
        return 0
