"""deepzip: make neural networks small and fast (Deep Compression + lottery tickets)."""

from .errors import DataError, DataNotFoundError, DeepzipError, FormatError

__version__ = "0.1.0"
__all__ = ["DataError", "DataNotFoundError", "DeepzipError", "FormatError", "__version__"]
