"""``deepzip.save`` / ``deepzip.load``: a model (pruned, weight-shared, or plain) to a .dz file and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..checkpoint import atomic_write
from ..errors import FormatError
from ..prune.masks import MASK_SUFFIX
from ..quantize.sharing import CODEBOOK, INDEX
from . import container, records, schema
from .report import build_report

MAX_FILE = 1 << 34  # 16 GiB: refuse to read anything larger


def _records(state: dict[str, torch.Tensor], writer: records.Writer, float_dtype: str,
             codebook_dtype: str) -> list[dict[str, Any]]:
    """One record per tensor, in state_dict order: a shared layer's codebook + index (+ mask) and a
    pruned layer's weight + mask each become a single record."""
    shared = {k[: -len(CODEBOOK)] for k in state if k.endswith(CODEBOOK) and k[: -len(CODEBOOK)] + INDEX in state}
    masked = {k[: -len(MASK_SUFFIX)] for k in state if k.endswith(MASK_SUFFIX) and k[: -len(MASK_SUFFIX)] in state}
    parts = {p + suffix for p in shared for suffix in (INDEX, MASK_SUFFIX)} | {p + MASK_SUFFIX for p in masked}
    out = []
    for key, tensor in state.items():
        base = key[: -len(CODEBOOK)]
        if key.endswith(CODEBOOK) and base in shared:
            out.append(records.shared_record(writer, base, tensor, state[base + INDEX],
                                             state.get(base + MASK_SUFFIX), codebook_dtype))
        elif key in masked:
            out.append(records.sparse_record(writer, key, tensor, state[key + MASK_SUFFIX], float_dtype))
        elif key not in parts:
            out.append(records.dense_record(writer, key, tensor, float_dtype))
    return out


def encode_model(model: nn.Module, float_dtype: str = "f32", codebook_dtype: str = "f32",
                 description: dict | None = None, metadata: dict | None = None) -> tuple[bytes, dict[str, Any]]:
    """(file bytes, report) for ``model``'s state."""
    for name, value in (("float_dtype", float_dtype), ("codebook_dtype", codebook_dtype)):
        if value not in records.FLOAT_STORAGE:
            raise ValueError(f"{name} must be one of {', '.join(records.FLOAT_STORAGE)}, got {value!r}")
    writer = records.Writer()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors = _records(state, writer, float_dtype, codebook_dtype)
    description = description if description is not None else getattr(model, "_deepzip_description", None)
    header = {"writer": f"deepzip {__version__}", "model": description, "metadata": metadata or {}, "tensors": tensors}
    data = container.pack(header, writer.sections)
    return data, build_report(header, writer.sections, len(data))


def save(model: nn.Module, path: str | os.PathLike, float_dtype: str = "f32", codebook_dtype: str = "f32",
         description: dict | None = None, metadata: dict | None = None) -> dict[str, Any]:
    """Encode ``model`` into a .dz file (atomically) and return the per-layer report."""
    data, report = encode_model(model, float_dtype, codebook_dtype, description, metadata)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return report


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state_dict) of a .dz file; every problem is a FormatError."""
    header, sections = read_checked(path)
    return header, decode_records(header, sections, str(path))


def read_checked(path: str | os.PathLike) -> tuple[dict[str, Any], list[bytes]]:
    """(schema-checked header, section payloads) of a .dz file, nothing decoded yet."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise FormatError(f"{path}: {size} bytes is larger than the reader's {MAX_FILE}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from None
    return unpack_bytes(data, str(path))


def unpack_bytes(data: bytes, name: str = "<bytes>") -> tuple[dict[str, Any], list[bytes]]:
    try:
        return container.unpack(data)
    except FormatError as exc:
        raise type(exc)(f"{name}: {exc}") from None


def decode_records(header: dict[str, Any], sections: list[bytes], name: str = "<bytes>") -> dict[str, torch.Tensor]:
    """The state_dict of a checked header's records."""
    state: dict[str, torch.Tensor] = {}
    try:
        for record in header["tensors"]:
            state.update(records.read_record(record, sections))
    except FormatError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    return state


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header, sections = unpack_bytes(data, name)
    return header, decode_records(header, sections, name)


def check_model(header: dict[str, Any], model: nn.Module | None, name: str) -> nn.Module:
    """``model`` if the header's records fit it, else the registry model the header describes (checked)."""
    try:
        if model is not None:
            schema.check_fits(header, model)
            return model
        if not header.get("model"):
            raise schema.ModelFitError("records no registry model; pass model= (a fresh instance of its architecture)")
        from ..models import from_description

        return from_description(header["model"], header)
    except FormatError as exc:
        raise type(exc)(f"{name}: {exc}") from None


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Fill ``model`` (a fresh instance of the saved architecture) from a .dz file, bit-exact.

    Without ``model``, a registry model is rebuilt from the description stored in the file.
    Pruning masks and codebooks come back as explicit state, ready for more training or `finalize`.
    """
    from ..quantize.sharing import load_state_dict

    header, sections = read_checked(path)
    model = check_model(header, model, str(path))  # names, shapes, kinds: before any tensor is decoded
    state = decode_records(header, sections, str(path))
    try:
        load_state_dict(model, state)
    except (RuntimeError, ValueError) as exc:  # a shape / key mismatch between file and model
        raise ValueError(f"{path} does not fit this model: {str(exc).splitlines()[0]}") from None
    return model
