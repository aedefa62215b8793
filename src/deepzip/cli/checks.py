"""Checks every command runs on its input BEFORE any work starts (loading, training, writing).

Each failure is a `UsageError` whose message names the option, says what was wrong and what is
allowed; `deepzip.cli.main` prints it as one line and exits with status 2. The per-layer options
(``--*-exclude``, ``--quant-bits``, ``--prune-layer-sparsity`` ...) are checked by a dry run of the
pruning and quantization calls on a throw-away copy of the untrained model, so a typo in a layer
name fails in a second, not after the dense training.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch

from matplotlib.figure import Figure

from .. import data, models
from ..config import flag
from ..errors import DataNotFoundError, DeepzipError
from ..prune import L0, GlobalMagnitude, LayerFraction, Sensitivity, prune
from ..quantize import quantize


class UsageError(DeepzipError):
    """Bad command-line input, found before any work started."""


def option_error(option: str, message: str) -> UsageError:
    return UsageError(f"{option}: {message}")


# ---- paths -------------------------------------------------------------------------------------

def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable_dir(path, option: str) -> Path:
    """``path`` is (or can be created as) a directory we can write files in; creates it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise option_error(option, f"{path} is a file, not a directory; give a directory (created if missing)")
    ancestor = _first_existing(path)
    if not ancestor.is_dir():
        raise option_error(option, f"{path} is under {ancestor}, which is a file; give a path whose parents are "
                                   f"directories")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".deepzip-probe-"):
            pass
    except OSError as exc:
        raise option_error(option, f"cannot write in {path} ({exc.strerror or exc}); give a writable "
                                   f"directory") from None
    return path


def writable_file(path, option: str, formats: tuple[str, ...] | None = None) -> Path:
    """``path`` names a file we can create or replace (its directory writable, not a directory itself)."""
    text = str(path)
    path = Path(path)
    if path.is_dir() or text.endswith(os.sep):
        raise option_error(option, f"{text} is a directory; give a file name (e.g. {path / 'out'}"
                                   f"{'.' + formats[0] if formats else ''})")
    if formats is not None:
        suffix = path.suffix[1:].lower()
        if suffix not in formats:
            raise option_error(option, f"{text}: unsupported file type {path.suffix or '(none)'!r}; "
                                       f"allowed: {', '.join('.' + f for f in formats)}")
    try:
        writable_dir(path.parent, option)
    except UsageError as exc:
        raise option_error(option, f"cannot write {text}: {str(exc).split(': ', 1)[1]}") from None
    return path


def plot_formats() -> tuple[str, ...]:
    return tuple(sorted(Figure().canvas.get_supported_filetypes(), key=lambda f: (f != "png", f)))


def existing_file(path, option: str, what: str, hint: str) -> Path:
    path = Path(path)
    if path.is_dir():
        inside = path / "model.safetensors"
        example = f" (e.g. {inside})" if inside.is_file() else ""
        raise option_error(option, f"{path} is a directory; give the {what} file{example}")
    if not path.exists():
        raise option_error(option, f"{path} does not exist; give an existing {what} file ({hint})")
    if not os.access(path, os.R_OK):
        raise option_error(option, f"{path} is not readable; give a readable {what} file")
    return path


def checkpoint(path, option: str = "--checkpoint") -> Path:
    return existing_file(path, option, "model", "written by 'deepzip train', 'prune' or 'quantize'")


# ---- data --------------------------------------------------------------------------------------

def load_splits(dataset: str, data_dir, val_size: int, dataset_option: str = "--dataset",
                val_option: str = "--val-size"):
    """The data set's splits; data errors name --data-dir / --dataset / --val-size."""
    try:
        return data.load(dataset, data_dir=data_dir, val_size=val_size)
    except DataNotFoundError as exc:
        if data_dir is not None:
            raise option_error("--data-dir", str(exc)) from None
        raise
    except ValueError as exc:
        message = str(exc)
        if message.startswith("val_size"):
            raise UsageError(val_option + message[len("val_size"):]) from None
        if "data set" in message:
            raise option_error(dataset_option, message) from None
        raise


def data_identity(dataset: str, data_dir) -> str | None:
    return data.data_identity(dataset, data_dir)


def model_fits_data(description: dict, splits, what: str, dataset_option: str = "--dataset") -> None:
    """The model's recorded input shape and classes agree with the data set's."""
    shape = tuple(description.get("input_shape") or ())
    if shape and shape != tuple(splits.input_shape):
        raise option_error(dataset_option, f"{splits.name} has inputs of shape {tuple(splits.input_shape)} but "
                                           f"{what} takes {shape}; use the data set it was trained on")
    classes = description.get("num_classes")
    if isinstance(classes, int) and splits.num_classes > classes:
        raise option_error(dataset_option, f"{splits.name} has {splits.num_classes} classes but {what} predicts "
                                           f"{classes}; use the data set it was trained on")


# ---- per-layer options -------------------------------------------------------------------------

def _prune_option(message: str, cfg, prefix: str) -> str:
    for key, name in (("exclude", "exclude"), ("scales", "scales"), ("quality", "quality"),
                      ("layer_sparsity", "layer_sparsity"), ("round_to", "round_to")):
        if key in message:
            return flag(name, prefix)
    if "no value for layer" in message:
        return flag({"fraction": "layer_sparsity", "threshold": "quality"}.get(cfg.method, "method"), prefix)
    return f"{flag('method', prefix)} {cfg.method}"


def layer_options(model: torch.nn.Module, prune_cfg=None, quant_cfg=None, prune_prefix: str = "",
                  quant_prefix: str = "") -> None:
    """Dry-run pruning then quantization with the given options on a copy of ``model`` (untouched)."""
    # Ranges and types were checked when the configs were made (PruneConfig / QuantizeConfig build the
    # method configs); the dry run checks what needs the model: layer names and kinds.
    with torch.random.fork_rng():  # the real run's random streams stay exactly as without the check
        trial = copy.deepcopy(model)
        if prune_cfg is not None:
            method = prune_cfg.method_config(curves={}, base_accuracy=0.0)
            if isinstance(method, Sensitivity):  # its curves cost a sweep: check the layer names only
                method = GlobalMagnitude(exclude=method.exclude, extra=method.extra, round_to=method.round_to)
            elif isinstance(method, L0):  # its masks need training: check the layer names (and targets)
                method = (LayerFraction(layer_sparsity=method.layer_sparsity, exclude=method.exclude, extra=method.extra)
                          if method.layer_sparsity is not None else GlobalMagnitude(exclude=method.exclude, extra=method.extra))
            try:
                prune(trial, method)
            except ValueError as exc:
                raise option_error(_prune_option(str(exc), prune_cfg, prune_prefix), str(exc)) from None
        if quant_cfg is not None:
            try:
                quantize(trial, quant_cfg.method_config())
            except ValueError as exc:
                option = ("--checkpoint" if "already weight-shared" in str(exc)
                          else flag("exclude" if "exclude" in str(exc) else "bits", quant_prefix))
                raise option_error(option, str(exc)) from None


def build_registry_model(train_cfg, splits, model_option: str = "--model"):
    """The untrained registry model for ``train_cfg`` on ``splits`` (e.g. lenet5 on 8x8 fails here)."""
    try:
        with torch.random.fork_rng():
            return models.build(train_cfg.model, splits.input_shape, splits.num_classes)
    except ValueError as exc:
        raise option_error(model_option, str(exc)) from None
