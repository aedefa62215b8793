"""Runtime: batch-1 sparse / weight-shared inference that beats dense, from a module or a .dz file.

    deepzip.runtime.convert(pruned_model, example=x)        # in place: per-layer sparse or dense
    fast = deepzip.runtime.load("model.dz", MyNet, example=x)   # no dense fp32 weights built
    deepzip.runtime.decisions(fast)                           # what was chosen per layer, and why
"""

from .convert import DENSITY_CUTOFF, convert, decisions, load
from .kernels import column_dtype, csr_mm, csr_mm_coded, to_csr
from .layers import SparseConv2d, SparseLinear, SparseMatrix

__all__ = ["DENSITY_CUTOFF", "SparseConv2d", "SparseLinear", "SparseMatrix", "column_dtype", "convert", "csr_mm",
           "csr_mm_coded", "decisions", "load", "to_csr"]
