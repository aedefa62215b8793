"""Pickle-free checkpoints on safetensors, written atomically.

Two kinds:
- model files: a plain safetensors file whose keys are the ``state_dict`` keys (readable by any
  safetensors tool), with deepzip's model description (registry name, input shape) in the metadata;
- state files: any nested dict/list of tensors and JSON values (optimizer state, iteration, ...),
  tensors in the safetensors payload and the structure as JSON in the metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open

from .errors import CheckpointError, DeepzipError

_META_KEY = "deepzip"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory handles: the rename is as durable as it gets
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash never leaves a half-written file.

    The temporary file is fsynced before the rename and the directory after it, so after a power
    loss ``path`` holds either the old or the complete new content. The file gets the permissions
    an ordinary ``open()`` would give (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _tensors_for_file(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or strided storage; a contiguous copy is cheap at our sizes.
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def save_model(path: str | os.PathLike, model: torch.nn.Module, description: dict[str, Any] | None = None) -> None:
    """Save ``model.state_dict()`` (masks and codebooks included) with a JSON description."""
    tensors = _tensors_for_file(model.state_dict())
    meta = {_META_KEY: json.dumps(description or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file: (state_dict, description)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise DeepzipError(f"{path}: not a readable model file ({exc})") from exc
    description = _json_metadata(meta.get(_META_KEY, "{}"), path)
    if not isinstance(description, dict):
        raise CheckpointError(f"{path}: metadata '{_META_KEY}' must be a JSON object, got {type(description).__name__}")
    return tensors, description


def _json_metadata(text: str, path) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: metadata '{_META_KEY}' is not valid JSON ({exc})") from None


def read_json(path: str | os.PathLike, lines: bool = False) -> Any:
    """A run's JSON file (or JSON-lines file): its value, or CheckpointError naming the file and line."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
    try:
        if lines:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def _flatten(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{key}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    return obj  # JSON scalar


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], where: str = "s") -> Any:
    """The structure back from its skeleton; a skeleton that does not match the tensors is a
    CheckpointError naming the place (``where``, e.g. s/model/fc1.weight)."""
    if isinstance(obj, dict) and "__tensor__" in obj:
        key = obj["__tensor__"]
        if not isinstance(key, str) or key not in tensors:
            raise CheckpointError(f"{where}: names the tensor {key!r}, which the file does not hold")
        return tensors[key]
    if isinstance(obj, dict) and "__dict__" in obj:
        items = obj["__dict__"]
        if not (isinstance(items, list) and all(isinstance(i, list) and len(i) == 2 and not isinstance(i[0], (list, dict))
                                                for i in items)):
            raise CheckpointError(f"{where}: a dict must be a list of [key, value] pairs")
        return {k: _unflatten(v, tensors, f"{where}/{k}") for k, v in items}
    if isinstance(obj, dict):
        raise CheckpointError(f"{where}: unknown object in the skeleton (keys {sorted(obj)[:3]})")
    if isinstance(obj, list):
        return [_unflatten(v, tensors, f"{where}/{i}") for i, v in enumerate(obj)]
    return obj


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save a nested structure of tensors and JSON values (no pickle)."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    meta = {_META_KEY: json.dumps(skeleton)}
    tensors = _tensors_for_file(tensors)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads((f.metadata() or {})[_META_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise DeepzipError(f"{path}: not a readable deepzip state file ({exc})") from exc
    try:
        return _unflatten(skeleton, tensors)
    except RecursionError:
        raise CheckpointError(f"{path}: the state's structure is nested too deeply") from None
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: field {exc}") from None
