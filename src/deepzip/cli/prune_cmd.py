"""``deepzip prune`` (prune a checkpoint with retraining) and ``deepzip sensitivity`` (Figure 5)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .. import data
from ..checkpoint import atomic_write_text, save_model
from ..config import add_arguments as add_config_arguments, from_args, hashname
from ..prune import format_report, sensitivity_curves, sparsity_report
from ..prune.sensitivity import DEFAULT_SPARSITIES
from ..report.plots import sensitivity_plot
from ..train import PruneConfig, evaluate, prune_and_retrain
from . import checks
from .common import add_common_arguments, add_device_arguments, device_of, load_checkpoint

HELP = "prune a trained checkpoint with retraining (one-shot, iterative or gradual)"


def _add_checkpoint_argument(parser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="model.safetensors written by 'deepzip train' (or a previous prune)")


def add_arguments(parser) -> None:
    _add_checkpoint_argument(parser)
    add_config_arguments(parser, PruneConfig)
    add_device_arguments(parser)
    add_common_arguments(parser)


def _checkpoint_and_data(args):
    """Checkpoint, data (the one it was trained on, or --data-dir's) and a match check, before any work."""
    model, description, train_cfg = load_checkpoint(args.checkpoint)
    # where it runs now (--device / --amp), whatever the checkpoint was trained on
    train_cfg = replace(train_cfg, device=device_of(args), amp=getattr(args, "amp", train_cfg.amp))
    model.to(train_cfg.device)
    splits = checks.load_splits(train_cfg.dataset, args.data_dir, train_cfg.val_size)
    checks.model_fits_data(description, splits, f"the model in {args.checkpoint}", "--data-dir")
    return model, description, train_cfg, splits


def run(args) -> int:
    cfg = from_args(PruneConfig, args)
    checks.checkpoint(args.checkpoint)
    checks.writable_dir(args.runs_dir, "--runs-dir")
    model, description, train_cfg, splits = _checkpoint_and_data(args)
    checks.layer_options(model, prune_cfg=cfg)
    dense_acc = evaluate(model, splits.test)[1]
    source = Path(args.checkpoint).resolve().parent.name
    identity = data.data_identity(train_cfg.dataset, args.data_dir)
    run_dir = Path(args.runs_dir) / hashname(cfg, f"prune_{source}", data=identity)
    records = prune_and_retrain(model, splits, cfg, train_cfg, run_dir=run_dir,
                                description={**description, "train_config": train_cfg.__dict__},
                                progress=not args.quiet)
    report = sparsity_report(model)
    save_model(run_dir / "model.safetensors", model, {**description, "train_config": train_cfg.__dict__,
                                                       "prune_config": cfg.__dict__})
    summary = {"checkpoint": str(args.checkpoint), "dense_test_acc": dense_acc, "test_acc": records[-1]["test_acc"],
               "sparsity": report["sparsity"], "steps": records, "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "report.json", json.dumps(summary, indent=2) + "\n")
    print(format_report(report))
    print(f"\ntest accuracy: dense {dense_acc:.2%} -> pruned {records[-1]['test_acc']:.2%}; "
          f"model: {run_dir / 'model.safetensors'}")
    return 0


class Sensitivity:
    HELP = "per-layer accuracy vs sparsity, each layer pruned alone (the paper's Figure 5), as JSON + PNG"

    @staticmethod
    def add_arguments(parser) -> None:
        _add_checkpoint_argument(parser)
        parser.add_argument("--sparsities", type=float, nargs="+", default=list(DEFAULT_SPARSITIES),
                            help="sparsities to measure, each in [0, 1)")
        parser.add_argument("--output", "-o", default="sensitivity.png", help="plot file; the JSON goes beside it")
        add_device_arguments(parser, amp=False)
        add_common_arguments(parser)

    @staticmethod
    def run(args) -> int:
        for s in args.sparsities:
            if not 0 <= s < 1:
                raise checks.option_error("--sparsities", f"{s:g} is out of range; each sparsity must be in [0, 1)")
        checks.checkpoint(args.checkpoint)
        checks.writable_file(args.output, "--output", checks.plot_formats())
        checks.writable_file(Path(args.output).with_suffix(".json"), "--output")
        model, description, train_cfg, splits = _checkpoint_and_data(args)
        curves = sensitivity_curves(model, lambda m: evaluate(m, splits.val)[1], args.sparsities,
                                    progress=not args.quiet)
        output = Path(args.output)
        sensitivity_plot(curves, output, f"{description['model']}: validation accuracy, one layer pruned")
        atomic_write_text(output.with_suffix(".json"), json.dumps(curves, indent=2) + "\n")
        print(f"{'layer':<20}" + "".join(f"{s:>7.0%}" for s in args.sparsities))
        for name, curve in curves.items():
            print(f"{name:<20}" + "".join(f"{acc:>7.2%}" for _, acc in curve))
        print(f"plot: {output}; data: {output.with_suffix('.json')}")
        return 0
