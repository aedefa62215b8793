"""Trained quantization by weight sharing (Deep Compression step 2).

    import deepzip.quantize as Q
    Q.quantize(model, bits={"conv": 8, "fc": 5})   # k-means codebook + index per layer, in place
    train(model, ...)                              # fine-tunes the centroids (grouped gradients)
    Q.finalize(model)                              # back to plain Parameters
"""

from .api import (PAPER_BITS, allocate_bits, bits_sensitivity, layer_bits, nonzero_counts, quantize,
                  resolve_bits)
from .config import QuantizeConfig
from .kmeans import INITS, assign, check_bits, kmeans_1d
from .sharing import codebooks, finalize, install, load_state_dict, share, shared_layers
from .uniform import uniform_quantize_1d

__all__ = ["INITS", "PAPER_BITS", "QuantizeConfig", "allocate_bits", "assign", "bits_sensitivity", "check_bits", "codebooks",
           "finalize", "install", "kmeans_1d", "layer_bits", "load_state_dict", "nonzero_counts", "quantize",
           "resolve_bits", "share", "shared_layers", "uniform_quantize_1d"]


class _CallableModule(__import__("types").ModuleType):
    """Lets ``deepzip.quantize(model, ...)`` call `quantize` while ``deepzip.quantize`` stays this package."""

    def __call__(self, *args, **kwargs):
        return quantize(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
