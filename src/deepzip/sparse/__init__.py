"""Sparse-to-sparse training (issue 18): a sparse network from the start, never dense, whose topology
changes during training.

    from deepzip.sparse import RigL, SparseTraining
    sparse = SparseTraining(model, optimizer, RigL(sparsity=0.95), total_steps=steps)
    ... loss.backward(); sparse.step() ...       # instead of optimizer.step()

Methods (family "sparse" of `deepzip.METHODS`): static (the control), set, rigl, snfs, srste (N:M).
One module per method (`static`, `set_`, `rigl`, `snfs`, `srste`), the shared mask-update core in
`core`, initial distributions (uniform, er, erk) in `distribution`, FLOP counting in `flops`.
"""

from . import core, distribution, flops
from .configs import SET, SNFS, SRSTE, RigL, SparseMethod, Static, method_names
from .rigl import RigLRule
from .set_ import SETRule
from .snfs import SNFSRule
from .srste import SRSTERule
from .static import StaticRule
from .trainer import SparseTraining, resolve

__all__ = ["RigL", "RigLRule", "SET", "SETRule", "SNFS", "SNFSRule", "SRSTE", "SRSTERule", "SparseMethod",
           "SparseTraining", "Static", "StaticRule", "core", "distribution", "flops", "method_names", "resolve"]
