"""``deepzip sparse-train``: train a registry model sparse from the start (static, SET, RigL, SNFS, SR-STE)."""

from __future__ import annotations

import json

from ..config import add_arguments as add_config_arguments, from_args, hash_configs
from ..prune import format_report, sparsity_report
from ..train import TrainConfig
from ..train.sparse_train import SparseTrainConfig, sparse_train
from .common import add_common_arguments, build_model, load_data

HELP = "sparse-to-sparse training: a sparse network from the start whose mask evolves (RigL, SET, SNFS, SR-STE N:M)"


def add_arguments(parser) -> None:
    add_config_arguments(parser, SparseTrainConfig)
    add_config_arguments(parser, TrainConfig)
    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run in its directory")


def run(args) -> int:
    sparse_cfg = from_args(SparseTrainConfig, args)
    train_cfg = from_args(TrainConfig, args)
    method = sparse_cfg.method_config(seed=train_cfg.seed)
    splits = load_data(train_cfg, args)
    model, description = build_model(train_cfg, splits)
    directory = args.runs_dir + "/" + hash_configs("sparse", train=train_cfg, sparse=sparse_cfg)
    result, summary = sparse_train(model, splits, train_cfg, method, run_dir=directory, resume=args.resume,
                                   description={**description, "sparse_config": sparse_cfg.__dict__},
                                   progress=not args.quiet)
    if not args.quiet:
        print(format_report(sparsity_report(model)))
    print(json.dumps({**result.summary(), "method": method.method, "sparsity": summary["sparsity"],
                      "flops_ratio": summary["flops_ratio"], "mask_updates": summary["updates"],
                      "run_dir": directory}, indent=2))
    return 0
