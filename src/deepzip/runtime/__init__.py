"""Runtime: batch-1 sparse / weight-shared inference that beats dense, from a module or a .dz file.

Per layer: CSR (values or codebook codes), dense codes (4/8-bit indices, `codes`), or dense, as calibration
on a sample input says.

    deepzip.runtime.convert(pruned_model, example=x)        # in place: per-layer sparse or dense
    fast = deepzip.runtime.load("model.dz", MyNet, example=x)   # no dense fp32 weights built
    deepzip.runtime.decisions(fast)                           # what was chosen per layer, and why
"""

from .codes import CodedMatrix
from .convert import CODES_MIN_BYTES, DENSITY_CUTOFF, convert, decisions, load
from .kernels import column_dtype, csr_mm, csr_mm_coded, to_csr
from .layers import CodedLinear, SparseConv2d, SparseLinear, SparseMatrix

__all__ = ["CODES_MIN_BYTES", "DENSITY_CUTOFF", "CodedLinear", "CodedMatrix", "SparseConv2d", "SparseLinear",
           "SparseMatrix", "column_dtype", "convert", "csr_mm", "csr_mm_coded", "decisions", "load", "to_csr"]
