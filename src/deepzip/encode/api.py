"""``deepzip.save`` / ``deepzip.load``: a model (pruned, weight-shared, or plain) to a .dz file and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Union

import torch
from torch import nn

from .. import __version__
from ..checkpoint import atomic_write
from ..errors import FormatError
from ..prune.masks import MASK_SUFFIX
from ..quantize.sharing import CODEBOOK, INDEX, OUTLIER_MASK, OUTLIERS, load_state_dict
from . import container, records, schema
from .report import build_report

MAX_FILE = 1 << 34  # 16 GiB: refuse to read anything larger


def _records(state: dict[str, torch.Tensor], writer: records.Writer, float_dtype: str,
             codebook_dtype: str) -> list[dict[str, Any]]:
    """One record per tensor, in state_dict order: a shared layer's codebook + index (+ mask) and a
    pruned layer's weight + mask each become a single record."""
    shared = {k[: -len(CODEBOOK)] for k in state if k.endswith(CODEBOOK) and k[: -len(CODEBOOK)] + INDEX in state}
    masked = {k[: -len(MASK_SUFFIX)] for k in state if k.endswith(MASK_SUFFIX) and k[: -len(MASK_SUFFIX)] in state}
    parts = {p + suffix for p in shared for suffix in (INDEX, MASK_SUFFIX, OUTLIER_MASK, OUTLIERS)} \
        | {p + MASK_SUFFIX for p in masked}
    out = []
    for key, tensor in state.items():
        base = key[: -len(CODEBOOK)]
        if key.endswith(CODEBOOK) and base in shared:
            out.append(records.shared_record(writer, base, tensor, state[base + INDEX], state.get(base + MASK_SUFFIX),
                                             codebook_dtype, state.get(base + OUTLIER_MASK), state.get(base + OUTLIERS)))
        elif key in masked:
            out.append(records.sparse_record(writer, key, tensor, state[key + MASK_SUFFIX], float_dtype))
        elif key not in parts:
            out.append(records.dense_record(writer, key, tensor, float_dtype))
    return out


CODINGS = ("1.2", "1.1")


def encode_model(model: nn.Module, float_dtype: str = "f32", codebook_dtype: str = "f32",
                 description: dict | None = None, metadata: dict | None = None,
                 coding: str = "1.2") -> tuple[bytes, dict[str, Any]]:
    """(file bytes, report) for ``model``'s state. ``coding="1.1"`` keeps to the 1.0 / 1.1 codings (gap
    positions; raw, Huffman, rANS streams), for readers older than 1.2; "1.2" (default) also tries mask
    positions and the adaptive coder, layer by layer, and keeps whatever is smaller."""
    for name, value in (("float_dtype", float_dtype), ("codebook_dtype", codebook_dtype)):
        if value not in records.FLOAT_STORAGE:
            raise ValueError(f"{name} must be one of {', '.join(records.FLOAT_STORAGE)}, got {value!r}")
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {', '.join(CODINGS)}, got {coding!r}")
    writer = records.Writer(coding_1_2=coding == "1.2")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tensors = _records(state, writer, float_dtype, codebook_dtype)
    description = description if description is not None else getattr(model, "_deepzip_description", None)
    header = {"writer": f"deepzip {__version__}", "model": description, "metadata": metadata or {}, "tensors": tensors}
    data = container.pack(header, writer.sections)
    return data, build_report(header, writer.sections, len(data))


def save(model: nn.Module, path: str | os.PathLike, float_dtype: str = "f32", codebook_dtype: str = "f32",
         description: dict | None = None, metadata: dict | None = None, coding: str = "1.2") -> dict[str, Any]:
    """Encode ``model`` into a .dz file (atomically) and return the per-layer report."""
    data, report = encode_model(model, float_dtype, codebook_dtype, description, metadata, coding)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return report


def open_file(path: str | os.PathLike) -> tuple[dict[str, Any], list[bytes], int]:
    """(schema-checked header, section payloads, file size) of a .dz file, nothing decoded yet; every
    problem is a FormatError naming the file. Each operation parses a file once, here."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise FormatError(f"{path}: {size} bytes is larger than the reader's {MAX_FILE}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from None
    header, sections = _named(str(path), container.unpack, data)
    return header, sections, len(data)


def decode_records(header: dict[str, Any], sections: list[bytes], name: str = "<bytes>") -> dict[str, torch.Tensor]:
    """The state_dict of a checked header's records, decoded from ``sections``."""
    def decode() -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for record in header["tensors"]:
            state.update(records.read_record(record, sections))
        return state

    return _named(name, decode)


def _named(name: str, fn, *args):
    """``fn(*args)``, with the file's name in front of any FormatError's message."""
    try:
        return fn(*args)
    except FormatError as exc:
        raise type(exc)(f"{name}: {exc}") from None


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, state_dict) of a .dz file; every problem is a FormatError."""
    header, sections, _ = open_file(path)
    return header, decode_records(header, sections, str(path))


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header, sections = _named(name, container.unpack, data)
    return header, decode_records(header, sections, name)


ModelOrBuilder = Union[nn.Module, Callable[[Any], nn.Module]]


def model_for(header: dict[str, Any], model: ModelOrBuilder | None, name: Any, device: str | None = None) -> nn.Module:
    """``model`` itself, or what the builder ``model(description)`` makes of the file's model description;
    either way checked to fit the file's records (names, shapes, kinds: `schema.check_fits`) before any
    tensor is decoded. A builder is called first under ``torch.device("meta")`` (shapes, no memory), so a
    hostile description cannot allocate anything before the check; ``device="meta"`` returns that skeleton.
    """
    if model is None:
        raise TypeError(f"{name}: pass model= (a fresh instance of the saved architecture, or a builder such as "
                        f"deepzip.models.from_description); deepzip.load(path) rebuilds deepzip's registry models")
    if isinstance(model, nn.Module):
        _named(str(name), schema.check_fits, header, model)
        return model
    if not callable(model):
        raise TypeError(f"model must be an nn.Module or a builder function, got {type(model).__name__}")
    with torch.device("meta"):
        skeleton = _named(str(name), model, header.get("model"))
    _named(str(name), schema.check_fits, header, skeleton)
    return skeleton if device == "meta" else model(header.get("model"))


def load_checked(header: dict[str, Any], sections: list[bytes], model: ModelOrBuilder | None, name: Any) -> nn.Module:
    """`load` for a file already opened (`open_file`)."""
    model = model_for(header, model, name)  # before any tensor is decoded
    state = decode_records(header, sections, str(name))
    try:
        load_state_dict(model, state)
    except (RuntimeError, ValueError) as exc:  # what the record check cannot see (e.g. a mask on a buffer)
        raise schema.ModelFitError(f"{name} does not fit this model: {str(exc).splitlines()[0]}") from None
    return model


def load(path: str | os.PathLike, model: ModelOrBuilder | None) -> nn.Module:
    """Fill ``model`` (a fresh instance of the saved architecture, or a builder called with the file's
    model description) from a .dz file, bit-exact, and return it.

    Pruning masks and codebooks come back as explicit state, ready for more training or `finalize`.
    """
    header, sections, _ = open_file(path)
    return load_checked(header, sections, model, path)
