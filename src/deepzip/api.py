"""The top-level ``deepzip.load``: a .dz file back into a model, rebuilding deepzip's registry models."""

from __future__ import annotations

import os

from torch import nn

from . import encode, models


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """The model saved in a .dz file, bit-exact, with its masks and codebooks as explicit state.

    ``model``: a fresh instance of the saved architecture (any ``nn.Module``); without it, a deepzip
    registry model is rebuilt from the description stored in the file.
    """
    return encode.load(path, model if model is not None else models.from_description)


def load_with_header(path: str | os.PathLike, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """(`load`'s model, the file's header), the file read once: for callers that also need its metadata."""
    header, sections, _ = encode.open_file(path)
    return encode.load_checked(header, sections, model if model is not None else models.from_description, path), header
