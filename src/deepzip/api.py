"""The top-level ``deepzip.load``: a .dz file back into a model, rebuilding deepzip's registry models."""

from __future__ import annotations

import os

from torch import nn

from . import encode, models
from .prune import remove
from .quantize import finalize


def load(path: str | os.PathLike, model: nn.Module | None = None, keep_state: bool = False) -> nn.Module:
    """The model saved in a .dz file, bit-exact, ready to run at the speed of a plain module.

    ``model``: a fresh instance of the saved architecture (any ``nn.Module``); without it, a deepzip
    registry model is rebuilt from the description stored in the file.
    ``keep_state``: by default every weight is materialised once (codebooks and masks made permanent,
    as `deepzip.quantize.finalize` and `deepzip.prune.remove` do): plain Parameters and no hooks, so a
    forward costs what the uncompressed module's does. ``keep_state=True`` keeps the masks and
    codebooks as explicit module state instead, for fine-tuning the shared values, converting with
    `deepzip.runtime.convert`, or saving again with the same compression; its forward rebuilds each
    shared weight from its codebook (several times slower on small models). Both compute the same
    outputs bit for bit.
    """
    _check_keep_state(keep_state)
    return _materialised(encode.load(path, model if model is not None else models.from_description), keep_state)


def load_with_header(path: str | os.PathLike, model: nn.Module | None = None,
                     keep_state: bool = False) -> tuple[nn.Module, dict]:
    """(`load`'s model, the file's header), the file read once: for callers that also need its metadata."""
    _check_keep_state(keep_state)
    header, sections, _ = encode.open_file(path)
    loaded = encode.load_checked(header, sections, model if model is not None else models.from_description, path)
    return _materialised(loaded, keep_state), header


def _check_keep_state(keep_state) -> None:
    if not isinstance(keep_state, bool):
        raise TypeError(f"keep_state must be True or False, got {keep_state!r}")


def _materialised(model: nn.Module, keep_state: bool) -> nn.Module:
    # finalize first: prune.remove refuses weight-shared masks (the codebook forward applies them)
    return model if keep_state else remove(finalize(model))
