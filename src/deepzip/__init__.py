"""deepzip: make neural networks small and fast (Deep Compression + lottery tickets)."""

__version__ = "0.1.0"

from .errors import CheckpointError, DataError, DataNotFoundError, DeepzipError, FormatError  # noqa: E402
from . import prune, quantize  # noqa: E402  (callable packages: deepzip.prune(model, ...))
from .encode import load, save  # noqa: E402

__all__ = ["CheckpointError", "DataError", "DataNotFoundError", "DeepzipError", "FormatError", "__version__", "load", "prune",
           "quantize", "save"]
