"""Runtime: batch-1 sparse / weight-shared inference that beats dense, from a module or a .dz file.

    fast, decisions = deepzip.runtime.convert(pruned_model, example=x)   # per-layer sparse or dense
    fast, decisions = deepzip.runtime.load("model.dz", example=x)       # no dense fp32 weights built
"""

from .convert import DENSITY_CUTOFF, convert, load
from .kernels import column_dtype, csr_mm, csr_mm_coded, to_csr
from .layers import SparseConv2d, SparseLinear, SparseMatrix

__all__ = ["DENSITY_CUTOFF", "SparseConv2d", "SparseLinear", "SparseMatrix", "column_dtype", "convert", "csr_mm",
           "csr_mm_coded", "load", "to_csr"]
