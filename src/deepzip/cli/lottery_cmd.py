"""``deepzip lottery run | status | plot``: lottery-ticket experiments, resumable, with the paper's figures."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .. import data
from ..config import add_arguments as add_config_arguments, from_args, from_dict, hash_configs
from ..lottery import Experiment, LotteryConfig, plot_experiment, status
from ..train import TrainConfig
from . import checks
from .common import (add_common_arguments, add_device_arguments, add_executor_arguments, check_executor_arguments,
                     executor_options)
from .compress_cmd import _train_config

HELP = "lottery tickets: iterative magnitude pruning with rewinding, controls, replicates, plots"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="lottery_command", metavar="ACTION", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) an experiment",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run_parser.add_argument("--model", default="lenet300_100", help="registry model")
    run_parser.add_argument("--dataset", default="fashion-mnist", help="data set")
    add_config_arguments(run_parser, TrainConfig, prefix="train_", skip=("model", "dataset", "device", "amp"))
    add_device_arguments(run_parser)
    add_config_arguments(run_parser, LotteryConfig)
    add_executor_arguments(run_parser, "independent steps (controls, one-shot, replicates, the next level)")
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


def run_experiment(args) -> int:
    worker_device = check_executor_arguments(args)
    train_cfg = _train_config(args, preset=False)
    if worker_device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=worker_device)
    cfg = from_args(LotteryConfig, args)
    checks.writable_dir(args.runs_dir, "--runs-dir")
    splits = checks.load_splits(train_cfg.dataset, args.data_dir, train_cfg.val_size, val_option="--train-val-size")
    checks.build_registry_model(train_cfg, splits)
    identity = data.data_identity(train_cfg.dataset, args.data_dir)
    directory = Path(args.runs_dir) / hash_configs("lottery", identity={"data": identity}, train=train_cfg,
                                                   lottery=cfg)
    print(f"experiment directory: {directory}")
    experiment = Experiment(directory, train_cfg, cfg, splits, progress=not args.quiet)
    experiment.run(**executor_options(args))
    print(status(directory, list(experiment.steps())))
    return 0


def _load_configs(directory: Path) -> tuple[TrainConfig, LotteryConfig]:
    config = directory / "config.json"
    if not directory.is_dir() or not config.is_file():
        raise checks.option_error("DIRECTORY", f"{directory} is not a lottery experiment directory (no config.json); "
                                               f"give the directory 'deepzip lottery run' printed")
    try:
        raw = json.loads(config.read_text())
        return from_dict(TrainConfig, raw["train"]), from_dict(LotteryConfig, raw["lottery"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise checks.option_error("DIRECTORY", f"{config} is not readable JSON ({exc}); it must be the config.json "
                                               f"'deepzip lottery run' wrote") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise checks.option_error("DIRECTORY", f"{config} does not hold valid experiment settings ({exc}); it must "
                                               f"be the config.json 'deepzip lottery run' wrote") from None


def show_status(args) -> int:
    directory = Path(args.directory)
    train_cfg, cfg = _load_configs(directory)
    expected = [(r, level, v) for r in range(cfg.replicates) for level, v in
                [(0, "dense")] + [(level, v) for level in range(1, cfg.levels + 1)
                                  for v in ["imp", *cfg.control_list(), *(["oneshot"] if cfg.oneshot else [])]]]
    print(status(directory, expected))
    return 0


def plot(args) -> int:
    _load_configs(Path(args.directory))
    checks.writable_dir(args.output or Path(args.directory) / "plots", "--output")
    for path in plot_experiment(args.directory, args.output):
        print(path)
    return 0
