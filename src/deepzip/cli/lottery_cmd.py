"""``deepzip lottery run | status | plot``: lottery-ticket experiments, resumable, with the paper's figures."""

from __future__ import annotations

import json

import argparse
from pathlib import Path

from .. import data
from ..config import add_arguments as add_config_arguments, from_args, from_dict, hash_configs
from ..lottery import Experiment, LotteryConfig, plot_experiment, status
from ..train import TrainConfig
from .common import add_common_arguments

HELP = "lottery tickets: iterative magnitude pruning with rewinding, controls, replicates, plots"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="lottery_command", metavar="ACTION", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) an experiment",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run_parser.add_argument("--model", default="lenet300_100", help="registry model")
    run_parser.add_argument("--dataset", default="fashion-mnist", help="data set")
    add_config_arguments(run_parser, TrainConfig, prefix="train_", skip=("model", "dataset"))
    add_config_arguments(run_parser, LotteryConfig)
    run_parser.add_argument("--jobs", type=int, default=1,
                            help="worker processes: independent steps (controls, one-shot, replicates, the next "
                                 "level) run side by side, one core each")
    add_common_arguments(run_parser)
    run_parser.set_defaults(lottery_run=run_experiment)
    status_parser = sub.add_parser("status", help="what an experiment directory has finished")
    status_parser.add_argument("directory")
    status_parser.set_defaults(lottery_run=show_status)
    plot_parser = sub.add_parser("plot", help="the paper's figures (PNG + SVG) for an experiment directory")
    plot_parser.add_argument("directory")
    plot_parser.add_argument("--output", "-o", default=None, help="folder for the figures (default: DIR/plots)")
    plot_parser.set_defaults(lottery_run=plot)


def run(args) -> int:
    return args.lottery_run(args)


def _experiment(directory: Path, train_cfg: TrainConfig, cfg: LotteryConfig, data_dir=None, progress=True):
    splits = data.load(train_cfg.dataset, data_dir=data_dir, val_size=train_cfg.val_size)
    return Experiment(directory, train_cfg, cfg, splits, progress=progress)


def run_experiment(args) -> int:
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    train_cfg = from_args(TrainConfig, args, "train_", model=args.model, dataset=args.dataset)
    cfg = from_args(LotteryConfig, args)
    directory = Path(args.runs_dir) / hash_configs("lottery", train=train_cfg, lottery=cfg)
    print(f"experiment directory: {directory}")
    experiment = _experiment(directory, train_cfg, cfg, args.data_dir, progress=not args.quiet)
    experiment.run(jobs=args.jobs)
    print(status(directory, list(experiment.steps())))
    return 0


def _load_configs(directory: Path) -> tuple[TrainConfig, LotteryConfig]:
    config = directory / "config.json"
    if not config.exists():
        raise ValueError(f"{directory} is not a lottery experiment directory (no config.json)")
    raw = json.loads(config.read_text())
    return from_dict(TrainConfig, raw["train"]), from_dict(LotteryConfig, raw["lottery"])


def show_status(args) -> int:
    directory = Path(args.directory)
    train_cfg, cfg = _load_configs(directory)
    expected = [(r, level, v) for r in range(cfg.replicates) for level, v in
                [(0, "dense")] + [(level, v) for level in range(1, cfg.levels + 1)
                                  for v in ["imp", *cfg.control_list(), *(["oneshot"] if cfg.oneshot else [])]]]
    print(status(directory, expected))
    return 0


def plot(args) -> int:
    for path in plot_experiment(args.directory, args.output):
        print(path)
    return 0
