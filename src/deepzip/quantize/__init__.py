"""Trained quantization by weight sharing (Deep Compression step 2).

    import deepzip.quantize as Q
    Q.quantize(model, Q.KMeans(bits={"conv": 8, "fc": 5}))   # codebook + index per layer, in place
    train(model, ...)                                        # fine-tunes the centroids (grouped gradients)
    Q.finalize(model)                                        # back to plain Parameters
"""

import sys
import types

from .api import allocate_bits, bits_sensitivity, layer_bits, nonzero_counts, quantize, resolve, resolve_bits
from .configs import PAPER_BITS, KMeans, QuantizeMethod, Uniform, WeightedKMeans, method_names
from .feedback import feedback_assign
from .kmeans import INITS, assign, check_bits, kmeans_1d, kmeans_rows, weighted_error
from .sharing import cluster, codebooks, finalize, install, load_state_dict, outliers, share, shared_layers
from .uniform import uniform_quantize_1d
from .weighted import fisher_diagonal

__all__ = ["INITS", "PAPER_BITS", "KMeans", "QuantizeMethod", "Uniform", "WeightedKMeans", "allocate_bits", "assign",
           "bits_sensitivity", "check_bits", "cluster", "codebooks", "feedback_assign", "finalize", "fisher_diagonal",
           "install", "kmeans_1d", "kmeans_rows", "layer_bits", "load_state_dict", "method_names", "nonzero_counts",
           "outliers", "quantize", "resolve", "resolve_bits", "share", "shared_layers", "uniform_quantize_1d",
           "weighted_error"]


class _CallableModule(types.ModuleType):
    """Lets ``deepzip.quantize(model, ...)`` call `quantize` while ``deepzip.quantize`` stays this package."""

    def __call__(self, *args, **kwargs):
        return quantize(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
