"""Helpers shared by the subcommands: data and model from a config, run directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import data, models
from ..config import hashname


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="directory holding the data set's IDX files (else $DEEPZIP_DATA, then the "
                             "Debian package's directory, then a download)")
    parser.add_argument("--runs-dir", default="runs", help="where run directories are created")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_data(cfg, args) -> data.DataSplits:
    return data.load(cfg.dataset, data_dir=args.data_dir, val_size=cfg.val_size)


def build_model(cfg, splits: data.DataSplits):
    model = models.build(cfg.model, splits.input_shape, splits.num_classes, seed=cfg.seed)
    description = {"model": cfg.model, "input_shape": list(splits.input_shape), "num_classes": splits.num_classes}
    return model, description


def run_dir(args, cfg, prefix: str) -> Path:
    return Path(args.runs_dir) / hashname(cfg, prefix)


def load_checkpoint(path) -> tuple:
    """(model, description, train config) from a deepzip model file of a registry model."""
    from ..checkpoint import load_model_file
    from ..config import from_dict
    from ..errors import CheckpointError, DeepzipError
    from ..quantize import load_state_dict
    from ..train import TrainConfig

    if not Path(path).is_file():
        raise DeepzipError(f"checkpoint {path} does not exist (train one with 'deepzip train')")
    state, description = load_model_file(path)
    if "model" not in description:
        raise DeepzipError(f"{path} has no deepzip model description; it was not written by deepzip train/prune")
    try:  # the description checked, and the model compared with the stored tensors before it is built
        model = models.from_description(description, state=state)
    except DeepzipError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_state_dict(model, state)
    train_cfg = from_dict(TrainConfig, description.get("train_config", {"model": description["model"]}))
    return model, description, train_cfg
