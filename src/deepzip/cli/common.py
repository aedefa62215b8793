"""Helpers shared by the subcommands: data and model from a config, run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import data, models
from ..checkpoint import load_model_file
from ..config import flag, from_dict, hashname
from ..distributed import INSTALL_HINT, MAX_RETRIES, ray_available
from ..errors import CheckpointError, DeepzipError
from ..quantize import load_state_dict
from ..train import TrainConfig
from ..train.device import DEVICE_HELP, resolve_device
from .checks import checkpoint, load_splits, option_error


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="directory holding the data set's IDX files (else $DEEPZIP_DATA, then the "
                             "Debian package's directory, then a download)")
    parser.add_argument("--runs-dir", default="runs", help="where run directories are created")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_device_arguments(parser: argparse.ArgumentParser, amp: bool = True) -> None:
    """``--device`` (and ``--amp``) for commands whose training settings come from elsewhere."""
    parser.add_argument("--device", default="auto", help=f"torch device: {DEVICE_HELP}")
    if amp:
        parser.add_argument("--amp", default="off", choices=("off", "bf16"),
                            help="mixed precision while training (bf16 autocast; for GPUs)")


def add_executor_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--jobs``, ``--executor`` and the Ray options of a command made of resumable steps (``what``)."""
    parser.add_argument("--jobs", type=int, default=1,
                        help=f"worker processes: {what} run side by side, one core each (local executor)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: this machine's worker processes (--jobs); ray: one Ray task per step on "
                             "a Ray cluster (the 'ray' extra; the runs directory must be on a file system "
                             "every node mounts)")
    parser.add_argument("--ray-address", default=None,
                        help="the Ray cluster to join (e.g. 10.0.0.1:6379 or 'auto'); default: start a Ray "
                             "instance on this machine for the sweep")
    parser.add_argument("--cpus-per-step", type=float, default=1, help="CPUs each Ray task reserves")
    parser.add_argument("--gpus-per-step", type=float, default=0,
                        help="GPUs each Ray task reserves (1: one GPU per step; pass --device cuda too)")
    parser.add_argument("--max-retries", type=int, default=MAX_RETRIES,
                        help="how often Ray reruns a step whose worker or node was lost (a step that raises "
                             "is not retried)")


RAY_ONLY = ("ray_address", "cpus_per_step", "gpus_per_step", "max_retries")


def check_executor_arguments(args) -> str | None:
    """Check the options of `add_executor_arguments` before any work; returns the device the Ray workers
    train on when they take GPUs (then ``args.device`` becomes 'cpu': the GPU is on the workers, not
    here), else None."""
    if args.jobs < 1:
        raise option_error("--jobs", f"must be >= 1, got {args.jobs}")
    defaults = {"ray_address": None, "cpus_per_step": 1, "gpus_per_step": 0, "max_retries": MAX_RETRIES}
    if args.executor != "ray":
        if any(getattr(args, name) != default for name, default in defaults.items()):
            raise option_error("--executor", "--ray-address, --cpus-per-step, --gpus-per-step and --max-retries "
                                             "need --executor ray")
        return None
    if args.jobs != 1:
        raise option_error("--jobs", "applies to the local executor; with --executor ray the cluster's "
                                     "resources and --cpus-per-step decide how many steps run at once")
    for name in ("cpus_per_step", "gpus_per_step", "max_retries"):
        if getattr(args, name) < 0:
            raise option_error(flag(name), f"must be >= 0, got {getattr(args, name)}")
    if args.gpus_per_step > 0 and not str(args.device).startswith("cuda"):
        raise option_error("--gpus-per-step", "needs --device cuda (or cuda:0): the Ray workers train on "
                                              "the GPU each task is given; 'auto' would be resolved here")
    if not ray_available():
        raise option_error("--executor ray", INSTALL_HINT)
    if args.gpus_per_step > 0:  # the GPU is on the workers: not checked on this driver
        worker_device, args.device = args.device, "cpu"
        return worker_device
    return None


def executor_options(args) -> dict:
    """The keyword arguments of ``Experiment.run`` / ``Sweep.run`` these options give."""
    return {"jobs": args.jobs, "executor": args.executor, "ray_address": args.ray_address,
            "cpus_per_step": args.cpus_per_step, "gpus_per_step": args.gpus_per_step,
            "max_retries": args.max_retries}


def device_of(args) -> str:
    """The device ``--device`` names (checked: it must exist here); a one-line error otherwise."""
    try:
        return str(resolve_device(args.device))
    except (ValueError, TypeError) as exc:
        raise DeepzipError(f"--device: {exc}") from None


def load_data(cfg, args, prefix: str = "") -> data.DataSplits:
    return load_splits(cfg.dataset, args.data_dir, cfg.val_size, val_option=flag("val_size", prefix))


def build_model(cfg, splits: data.DataSplits):
    model = models.build(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    description = {"model": cfg.model, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}
    return model, description


def run_dir(args, cfg, prefix: str) -> Path:
    """The run directory: named by the config's non-default fields and, when given, the data's location."""
    return Path(args.runs_dir) / hashname(cfg, prefix, data=data.data_identity(cfg.dataset, args.data_dir))


def load_checkpoint(path) -> tuple:
    """(model, description, train config) from a deepzip model file of a registry model."""
    checkpoint(path)
    try:
        state, description = load_model_file(path)
    except DeepzipError as exc:
        raise DeepzipError(f"--checkpoint: {exc}; give a model file written by deepzip") from None
    if not isinstance(description, dict) or "model" not in description:
        raise DeepzipError(f"--checkpoint: {path} has no deepzip model description; give a model file written by "
                           f"'deepzip train', 'prune' or 'quantize'")
    try:  # the description checked, and the model compared with the stored tensors before it is built
        model = models.from_description(description, state=state)
    except DeepzipError as exc:
        raise CheckpointError(f"--checkpoint: {path}: {exc}") from None
    try:
        load_state_dict(model, state)
        train_cfg = from_dict(TrainConfig, description.get("train_config", {"model": description["model"]}))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise DeepzipError(f"--checkpoint: {path}: its description or tensors do not make a deepzip model "
                           f"({type(exc).__name__}: {exc}); give a model file written by deepzip") from None
    return model, description, train_cfg
