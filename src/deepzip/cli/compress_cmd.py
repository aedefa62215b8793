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
from ..pipeline import check_budget_options, compress, compress_to_budget, format_report, inspect
from ..train import BASELINES, BudgetConfig, PruneConfig, QuantizeConfig, TrainConfig, evaluate
from . import checks
from .common import add_common_arguments, add_device_arguments, device_of

HELP = "the whole pipeline from the dense baseline: prune + retrain, quantize + fine-tune, encode, decode, report"


def _storage_arguments(parser) -> None:
    parser.add_argument("--float-dtype", default="f32", choices=("f32", "f16"),
                        help="storage of dense tensors (biases, unpruned layers); f32 is bit-exact")
    parser.add_argument("--codebook-dtype", default="f32", choices=("f32", "f16"), help="storage of codebooks")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="lenet300_100", help="registry model")
    parser.add_argument("--dataset", default="fashion-mnist", help="data set")
    add_config_arguments(parser, TrainConfig, prefix="train_", skip=("model", "dataset", "device", "amp"))
    add_device_arguments(parser)
    add_config_arguments(parser, PruneConfig, prefix="prune_")
    add_config_arguments(parser, QuantizeConfig, prefix="quant_")
    add_config_arguments(parser, BudgetConfig)
    _storage_arguments(parser)
    add_common_arguments(parser)


def baseline_config(model: str, dataset: str, given: TrainConfig | None = None) -> TrainConfig:
    """The dense baseline's settings: the model's preset unless training flags were given."""
    given = replace(given or TrainConfig(), model=model, dataset=dataset)
    preset = BASELINES.get(model)
    where = {"device": given.device, "amp": given.amp}  # where it runs is not a training setting
    if preset is not None and preset.dataset == dataset and given == TrainConfig(model=model, dataset=dataset, **where):
        return replace(preset, **where)
    return given


def _train_config(args, preset: bool = True) -> TrainConfig:
    try:
        given = from_args(TrainConfig, args, "train_", model=args.model, dataset=args.dataset, device=device_of(args),
                          amp=args.amp)
    except ValueError as exc:  # model / dataset are this command's own flags, not --train-*
        message = str(exc).replace("--train-model", "--model").replace("--train-dataset", "--dataset")
        for name in ("model", "dataset"):
            if message.startswith(f"TrainConfig options: {name}="):
                message = f"--{name}: " + message.removeprefix("TrainConfig options: ")
        raise ValueError(message) from None
    return baseline_config(args.model, args.dataset, given) if preset else given


def _checked(args, train_cfg: TrainConfig, prune_cfg: PruneConfig, quant_cfg: QuantizeConfig):
    """Every input of the pipeline checked before the dense training starts; returns the data."""
    checks.writable_dir(args.runs_dir, "--runs-dir")
    splits = checks.load_splits(train_cfg.dataset, args.data_dir, train_cfg.val_size,
                                val_option="--train-val-size" if hasattr(args, "train_val_size") else "--val-size")
    model = checks.build_registry_model(train_cfg, splits)
    checks.layer_options(model, prune_cfg, quant_cfg, "prune_" if hasattr(args, "prune_method") else "",
                         "quant_" if hasattr(args, "quant_method") else "")
    return splits


def run(args) -> int:
    train_cfg = _train_config(args)
    prune_cfg, quant_cfg = from_args(PruneConfig, args, "prune_"), from_args(QuantizeConfig, args, "quant_")
    budget_cfg = from_args(BudgetConfig, args)
    if budget_cfg.active:
        check_budget_options(prune_cfg, quant_cfg, budget_cfg, {"prune": "prune_", "quantize": "quant_"})
    splits = _checked(args, train_cfg, prune_cfg, quant_cfg)
    if budget_cfg.active:
        report = compress_to_budget(train_cfg, prune_cfg, quant_cfg, budget_cfg, args.runs_dir, args.data_dir,
                                    args.float_dtype, args.codebook_dtype, progress=not args.quiet, splits=splits)
    else:
        report = compress(train_cfg, prune_cfg, quant_cfg, args.runs_dir, args.data_dir, args.float_dtype,
                          args.codebook_dtype, progress=not args.quiet, splits=splits)
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
        add_device_arguments(parser)
        add_common_arguments(parser)

    @staticmethod
    def run(args) -> int:
        train_cfg = baseline_config("lenet300_100", "fashion-mnist",
                                    TrainConfig(device=device_of(args), amp=args.amp))
        splits = _checked(args, train_cfg, DEMO_PRUNE, QuantizeConfig())
        report = compress(train_cfg, DEMO_PRUNE, QuantizeConfig(), args.runs_dir, args.data_dir,
                          progress=not args.quiet, splits=splits)
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
        add_device_arguments(parser, amp=False)

    @staticmethod
    def run(args) -> int:
        device = device_of(args)
        if args.dataset is not None and args.dataset not in data.DATASETS:
            raise checks.option_error("--dataset", f"unknown data set {args.dataset!r}; allowed: "
                                                   f"{', '.join(data.DATASETS)}")
        checks.existing_file(args.file, "FILE", ".dz", "written by 'deepzip compress' or deepzip.save")
        model, header = load_with_header(args.file)
        header_meta = header.get("metadata")
        recorded = header_meta.get("train_config") if isinstance(header_meta, dict) else None
        dataset = args.dataset or (recorded.get("dataset", TrainConfig().dataset) if isinstance(recorded, dict)
                                   else None)
        if not isinstance(dataset, str) or dataset not in data.DATASETS:
            raise checks.option_error("--dataset", f"{args.file} does not record a known data set; pass --dataset "
                                                   f"(one of {', '.join(data.DATASETS)})")
        splits = checks.load_splits(dataset, args.data_dir, 0)
        checks.model_fits_data(getattr(model, "_deepzip_description", {}), splits, f"the model in {args.file}",
                               "--dataset" if args.data_dir is None else "--dataset/--data-dir")
        loss, acc = evaluate(model.to(device), splits.test)
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
        checks.writable_file(args.output, "--output")
        model = load(args.file)  # plain dense Parameters
        save_model(Path(args.output), model, getattr(model, "_deepzip_description", {}))
        print(f"{args.output}: {sum(p.numel() for p in model.parameters()):,} dense parameters")
        return 0
