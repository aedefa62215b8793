"""``deepzip sweep run | status``: a grid of sparse-training runs (methods x sparsities x seeds), resumable,
locally (``--jobs``) or on a Ray cluster (``--executor ray``), with the grid's table at the end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from .. import data
from ..config import add_arguments as add_config_arguments, flag, from_args, hash_configs
from ..sweep import Sweep, SweepConfig, plan, status
from ..sweep.config import OPTIONS
from ..train import TrainConfig
from ..train.sparse_train import SparseTrainConfig
from . import checks
from .common import add_common_arguments, add_executor_arguments, check_executor_arguments, executor_options

HELP = "sparse-training sweeps: every method x sparsity x seed, each a sparse-train run, locally or on Ray"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    run_parser = sub.add_parser("run", help="run (or resume) a sweep", description=HELP,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(run_parser, SweepConfig)
    add_config_arguments(run_parser, SparseTrainConfig, skip=("method", "sparsity"))
    add_config_arguments(run_parser, TrainConfig, skip=("seed",))
    add_executor_arguments(run_parser, "independent runs of the grid")
    add_common_arguments(run_parser)
    run_parser.set_defaults(sweep_run=run_sweep)
    status_parser = sub.add_parser("status", help="what a sweep directory has finished, and the grid's table")
    status_parser.add_argument("directory")
    status_parser.set_defaults(sweep_run=show_status)


def run(args) -> int:
    return args.sweep_run(args)


def _options(args) -> dict:
    """The shared method options the user set (those left at their defaults stay out, as in a run's hash)."""
    defaults = {f.name: f.default for f in dataclasses.fields(SparseTrainConfig)}
    return {name: getattr(args, name) for name in OPTIONS if getattr(args, name) != defaults[name]}


def _as_flags(message: str) -> str:
    """A grid error with the options it names spelled as flags (``update_interval=10`` -> ``--update-interval=10``)."""
    names = sorted((*OPTIONS, "methods", "sparsities", "seeds"), key=len, reverse=True)
    pattern = r"(?<![\w.-])(" + "|".join(names) + r")(?==| must\b)"
    return re.sub(pattern, lambda m: flag(m.group(1)), message.replace("SweepConfig.", "--"))


def run_sweep(args) -> int:
    worker_device = check_executor_arguments(args)
    grid = from_args(SweepConfig, args)
    train_cfg = from_args(TrainConfig, args, seed=TrainConfig.seed)
    if worker_device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=worker_device)
    options = _options(args)
    try:  # the grid checked before the data is loaded
        plan(train_cfg, grid, options)
    except ValueError as exc:  # the fields as the flags the user typed
        raise ValueError(_as_flags(str(exc))) from None
    checks.writable_dir(args.runs_dir, "--runs-dir")
    splits = checks.load_splits(train_cfg.dataset, args.data_dir, train_cfg.val_size, val_option="--val-size")
    checks.build_registry_model(train_cfg, splits)
    identity = {"data": data.data_identity(train_cfg.dataset, args.data_dir),
                "options": json.dumps(options, sort_keys=True) if options else None}
    directory = Path(args.runs_dir) / hash_configs("sweep", identity=identity, train=train_cfg, sweep=grid)
    sweep = Sweep(directory, train_cfg, grid, splits, options=options, progress=not args.quiet)
    print(f"sweep directory: {directory}  ({len(sweep.steps())} runs)")
    sweep.run(**executor_options(args))
    print(sweep.status())
    return 0


def show_status(args) -> int:
    directory = Path(args.directory)
    if not (directory / "config.json").is_file():
        raise checks.option_error("DIRECTORY", f"{directory} is not a sweep directory (no config.json); give the "
                                               f"directory 'deepzip sweep run' printed")
    print(status(directory))
    return 0
