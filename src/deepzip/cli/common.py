"""Helpers shared by the subcommands: data and model from a config, run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import data, models
from ..checkpoint import load_model_file
from ..config import flag, from_dict, hashname
from ..errors import CheckpointError, DeepzipError
from ..quantize import load_state_dict
from ..train import TrainConfig
from ..train.device import DEVICE_HELP, resolve_device
from .checks import checkpoint, load_splits


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
