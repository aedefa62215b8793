"""deepzip: make neural networks small and fast (Deep Compression + lottery tickets).

Every entry point is reachable from ``import deepzip`` and imported on first use, so importing the
package stays fast (torch, numba and matplotlib load only when a function needs them):

    deepzip.prune(model, 0.9)            deepzip.quantize(model, 5)
    deepzip.save(model, "model.dz")      deepzip.load("model.dz")
    deepzip.runtime.convert(model, example)
    deepzip.models, deepzip.data, deepzip.train, deepzip.lottery, deepzip.sweep, deepzip.pipeline

Convention: every operation on a model (prune, quantize, finalize, remove, convert, load_state_dict)
changes that model in place and returns it; a call that raises leaves it exactly as it was.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import CheckpointError, DataError, DataNotFoundError, DeepzipError, FormatError

__version__ = "0.1.0"

_SUBPACKAGES = ("calibrate", "checkpoint", "config", "data", "encode", "lottery", "models", "pipeline", "prune",
                "quantize", "registry", "report", "runtime", "sweep", "train")
_FUNCTIONS = {"save": "deepzip.encode", "load": "deepzip.api", "load_state_dict": "deepzip.quantize",
              "METHODS": "deepzip.registry"}

__all__ = ["CheckpointError", "DataError", "DataNotFoundError", "DeepzipError", "FormatError", "__version__", *_FUNCTIONS,
           *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'deepzip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
