"""``deepzip train``: train a registry model; ``deepzip demo``: the README's main job."""

from __future__ import annotations

import json

from ..config import add_arguments as add_config_arguments, from_args
from ..models import count_parameters
from ..train import TrainConfig, train
from .checks import build_registry_model, writable_dir
from .common import add_common_arguments, build_model, load_data, run_dir

HELP = "train a registry model on a data set (resumable; the run directory is named by the config hash)"


def add_arguments(parser) -> None:
    add_config_arguments(parser, TrainConfig)
    add_common_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run in its directory")


def train_and_report(cfg: TrainConfig, args) -> dict:
    writable_dir(args.runs_dir, "--runs-dir")
    splits = load_data(cfg, args)
    build_registry_model(cfg, splits)  # e.g. lenet5 on 8x8 digits: before any work
    model, description = build_model(cfg, splits)
    directory = run_dir(args, cfg, "train")
    result = train(model, splits, cfg, run_dir=directory, resume=args.resume,
                   description=description, progress=not args.quiet)
    summary = {"model": cfg.model, "dataset": cfg.dataset, "params": count_parameters(model),
               **result.summary(), "run_dir": str(directory)}
    return summary


def run(args) -> int:
    summary = train_and_report(from_args(TrainConfig, args), args)
    print(json.dumps(summary, indent=2))
    return 0
