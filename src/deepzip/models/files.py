"""A registry model rebuilt from the description a file carries (.dz header, checkpoint metadata).

The description is untrusted: `from_description` checks its fields (known model name, input shape,
number of classes), builds the model on the `meta` device (shapes only, no memory) and compares it
with what the file stores before building it for real. The one place a model is rebuilt from a file.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from ..encode.schema import ModelFitError, check_fits
from ..errors import FormatError
from .registry import MODELS, build

DEFAULT_INPUT_SHAPE = (1, 28, 28)
DEFAULT_CLASSES = 10
MAX_INPUT_DIMS = 4
MAX_INPUT_SIZE = 4096  # pixels (or features) along one input dimension
MAX_INPUT_ELEMENTS = 1 << 24
MAX_CLASSES = 1 << 20
MAX_MODEL_ELEMENTS = 1 << 28  # without a file to compare with: 1 GiB of fp32


def require(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


def check_description(description: Any) -> tuple[str, tuple[int, ...], int]:
    """(model name, input shape, classes) of a description, each field checked; FormatError otherwise."""
    if description is None:
        raise ModelFitError("the file records no registry model; pass model= (an instance of its architecture)")
    require(isinstance(description, dict) and "model" in description,
            f"model description must be an object with a 'model' name, got {_short(description)}")
    name = description["model"]
    require(isinstance(name, str) and name in MODELS,
            f"model description 'model': unknown model {_short(name)}; known: {', '.join(MODELS)}")
    shape = description.get("input_shape", list(DEFAULT_INPUT_SHAPE))
    require(isinstance(shape, list) and 1 <= len(shape) <= MAX_INPUT_DIMS
            and all(_is_int(s) and 1 <= s <= MAX_INPUT_SIZE for s in shape)
            and math.prod(shape) <= MAX_INPUT_ELEMENTS,
            f"model description 'input_shape' must be a list of 1..{MAX_INPUT_DIMS} integers in 1..{MAX_INPUT_SIZE} "
            f"with at most {MAX_INPUT_ELEMENTS} elements, got {_short(shape)}")
    classes = description.get("num_classes", DEFAULT_CLASSES)
    require(_is_int(classes) and 1 <= classes <= MAX_CLASSES,
            f"model description 'num_classes' must be an integer in 1..{MAX_CLASSES}, got {_short(classes)}")
    return name, tuple(shape), classes


def skeleton(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model on the `meta` device: every shape, no weight memory."""
    try:
        with torch.device("meta"):
            return MODELS.get(name)(input_shape=input_shape, num_classes=num_classes)
    except (ValueError, TypeError, RuntimeError) as exc:  # the model refuses this input shape
        raise FormatError(f"model description 'input_shape' {list(input_shape)} does not suit {name}: "
                          f"{str(exc).splitlines()[0]}") from None


def header_of_state(state: Mapping[str, torch.Tensor]) -> dict:
    """A .dz-like header ({"tensors": [...]}) listing a state_dict's tensors the way records would."""
    tensors = []
    for key, tensor in state.items():
        base = key[: -len("_codebook")] if key.endswith("_codebook") else None
        if base is not None and base + "_index" in state:
            tensors.append({"name": base, "shape": list(state[base + "_index"].shape), "encoding": "shared"})
        elif any(key.endswith(part) and key[: -len(part)] + "_codebook" in state
                 for part in ("_index", "_outlier_mask", "_outliers")):
            continue
        elif key.endswith("_mask") and (key[: -len("_mask")] in state or key[: -len("_mask")] + "_codebook" in state):
            continue
        else:
            tensors.append({"name": key, "shape": list(tensor.shape), "encoding": "dense"})
    return {"tensors": tensors}


def from_description(description: Any, header: dict | None = None,
                     state: Mapping[str, torch.Tensor] | None = None, device: str | None = None) -> nn.Module:
    """Build the registry model a file describes, after checking it fits the file's tensors.

    ``header``: a checked .dz header; ``state``: a checkpoint's state_dict. With either, the model's
    parameters and buffers must match the file's tensors name for name and shape for shape before any
    weight memory is allocated; with neither, the model's size is bounded. ``device="meta"`` returns
    the checked skeleton itself (shapes only).
    """
    name, input_shape, num_classes = check_description(description)
    meta = skeleton(name, input_shape, num_classes)
    if header is None and state is not None:
        header = header_of_state(state)
    if header is not None:
        check_fits(header, meta)
    else:
        elements = sum(t.numel() for t in meta.state_dict().values())
        require(elements <= MAX_MODEL_ELEMENTS, f"model description: {name} {list(input_shape)} -> {num_classes} "
                                                f"has {elements} elements, more than {MAX_MODEL_ELEMENTS}")
    if device == "meta" or torch.get_default_device().type == "meta":  # a skeleton is all that is asked for
        meta._deepzip_description = {"model": name, "input_shape": list(input_shape), "num_classes": num_classes}
        return meta
    return build(name, input_shape, num_classes)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["check_description", "from_description", "header_of_state", "skeleton"]
