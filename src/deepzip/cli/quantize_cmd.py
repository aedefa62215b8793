"""``deepzip quantize``: weight-share a (pruned or dense) checkpoint and fine-tune the centroids."""

from __future__ import annotations

import json
from pathlib import Path

from .. import data
from ..checkpoint import atomic_write_text, save_model
from ..config import add_arguments as add_config_arguments, from_args, hashname
from ..prune import prunable_weights
from ..quantize import codebooks, layer_bits, quantize
from ..report.plots import codebook_histograms
from ..train import QuantizeConfig, evaluate, train
from . import checks
from .common import add_common_arguments, add_device_arguments, load_checkpoint
from .prune_cmd import _checkpoint_and_data

HELP = "quantize a checkpoint by k-means weight sharing, fine-tune the centroids, plot the codebooks"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model.safetensors from 'deepzip train' or 'prune'")
    add_config_arguments(parser, QuantizeConfig)
    add_device_arguments(parser)
    add_common_arguments(parser)


def run(args) -> int:
    cfg = from_args(QuantizeConfig, args)
    checks.checkpoint(args.checkpoint)
    checks.writable_dir(args.runs_dir, "--runs-dir")
    model, description, train_cfg, splits = _checkpoint_and_data(args)
    checks.layer_options(model, quant_cfg=cfg)
    identity = data.data_identity(train_cfg.dataset, args.data_dir)
    run_dir = Path(args.runs_dir) / hashname(cfg, f"quantize_{Path(args.checkpoint).resolve().parent.name}",
                                             data=identity)
    before_acc = evaluate(model, splits.test)[1]
    original = {n: w.detach().clone().numpy() for n, w in prunable_weights(model)[0].items()}
    quantize(model, cfg.method_config())
    before = {n: cb.detach().clone() for n, (cb, _) in codebooks(model).items()}
    quantized_acc = evaluate(model, splits.test)[1]
    final_acc = quantized_acc
    if cfg.finetune_epochs:
        result = train(model, splits, cfg.finetune_config(train_cfg), run_dir=run_dir / "finetune", resume=True,
                       description=description, progress=not args.quiet)
        final_acc = result.final["test_acc"]
    layers = {n: (original[n], before[n].numpy(), cb.detach().numpy() if cfg.finetune_epochs else None)
              for n, (cb, _) in codebooks(model).items()}
    plot = codebook_histograms(layers, run_dir / "codebooks.png", f"{description['model']}: weight sharing")
    save_model(run_dir / "model.safetensors", model, {**description, "train_config": train_cfg.__dict__,
                                                       "quantize_config": cfg.__dict__})
    summary = {"checkpoint": str(args.checkpoint), "test_acc_before": before_acc, "test_acc_quantized": quantized_acc,
               "test_acc_finetuned": final_acc, "bits": layer_bits(model), "run_dir": str(run_dir)}
    atomic_write_text(run_dir / "report.json", json.dumps(summary, indent=2) + "\n")
    print(f"{'layer':<24}{'bits':>6}{'shared values':>15}")
    for name, b in layer_bits(model).items():
        print(f"{name:<24}{b:>6}{len(codebooks(model)[name][0]):>15}")
    print(f"\ntest accuracy: before {before_acc:.2%}, quantized {quantized_acc:.2%}, fine-tuned {final_acc:.2%}")
    print(f"model: {run_dir / 'model.safetensors'}; codebook histograms: {plot}")
    return 0
