"""Runtime: batch-1 sparse / weight-shared inference that beats dense, from a module or a .dz file.

Per layer: CSR (values or codebook codes), dense codes (4/8-bit indices, `codes`), or dense, as calibration
on a sample input says.

    deepzip.runtime.convert(pruned_model, example=x)        # in place: per-layer sparse or dense
    fast = deepzip.runtime.load("model.dz", MyNet, example=x)   # no dense fp32 weights built
    deepzip.runtime.decisions(fast)                           # what was chosen per layer, and why
    deepzip.runtime.fusion(fast)        # whether the whole model runs as one compiled chain (`fuse=`)
    deepzip.runtime.convert(shared_model, example=tokens, precision="int8")  # 4-bit codes, int8 dot products
    gpu = deepzip.runtime.load("model.dz", MyNet, example=x.cuda(), device="cuda")  # Triton kernels, one CUDA graph
"""

from .chain import FusedModel, Unsupported, compile_chain
from .codes import CodedMatrix
from .convert import CODES_MIN_BYTES, DENSITY_CUTOFF, FUSE, PRECISIONS, convert, decisions, fusion, load
from .gpu_graph import GraphedModel
from .kernels import column_dtype, csr_mm, csr_mm_coded, to_csr
from .layers import CodedLinear, SparseConv2d, SparseLinear, SparseMatrix
from .panels import PanelMatrix

__all__ = ["CODES_MIN_BYTES", "DENSITY_CUTOFF", "FUSE", "CodedLinear", "CodedMatrix", "FusedModel", "GraphedModel", "PRECISIONS", "PanelMatrix", "SparseConv2d",
           "SparseLinear", "SparseMatrix", "Unsupported", "column_dtype", "compile_chain", "convert", "csr_mm",
           "csr_mm_coded", "decisions", "fusion", "load", "to_csr"]
