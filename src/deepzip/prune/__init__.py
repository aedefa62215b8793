"""Pruning: pure mask criteria, typed method configs, masks as explicit module state, allocation,
schedules, structured shrink.

    import deepzip.prune as P
    P.prune(model, P.GlobalMagnitude(sparsity=0.9))   # in place, returns the model
    P.prune(model, 0.9, "erk", exclude=["conv1"])     # the same, configs built by name
    print(P.format_report(P.sparsity_report(model)))
    P.prune(model, P.Wanda(sparsity=0.5), calibration=batches)   # calibration methods: wanda, sparsegpt, owl
    P.remove(model)                                   # make it permanent
"""

import sys
import types

from . import allocate, criteria, l0
from .api import compute_masks, format_report, prunable_weights, prune, resolve, sparsity_report
from .calibrated import prune_calibrated
from .configs import (ERK, L0, NM, OWL, Calibrated, GlobalMagnitude, SparseGPT, Wanda, LayerFraction, PruneMethod, RandomPruning, Sensitivity, StdThreshold,
                      Structured, UniformMagnitude, method_names)
from .masks import (MaskGradients, apply_masks, capture_dense_gradients, captured_gradients, enforce, get_masks,
                    is_pruned, mask_optimizer_state, remove)
from .schedule import GradualPruning, iterative_sparsities, polynomial_sparsity
from .sensitivity import sensitivity_curves
from .shrink import find_pairs, shrink
from .targets import find_targets, layer_kind

__all__ = ["Calibrated", "ERK", "L0", "NM", "OWL", "SparseGPT", "Wanda", "prune_calibrated", "GlobalMagnitude", "GradualPruning", "LayerFraction", "MaskGradients", "PruneMethod",
           "RandomPruning", "Sensitivity", "StdThreshold", "Structured", "UniformMagnitude", "allocate",
           "apply_masks", "capture_dense_gradients", "captured_gradients", "compute_masks", "criteria", "enforce", "find_pairs", "find_targets", "format_report",
           "get_masks", "is_pruned", "iterative_sparsities", "l0", "layer_kind", "mask_optimizer_state", "method_names",
           "polynomial_sparsity", "prunable_weights", "prune", "remove", "resolve",
           "sensitivity_curves", "shrink", "sparsity_report"]


class _CallableModule(types.ModuleType):
    """Lets ``deepzip.prune(model, ...)`` call `prune` while ``deepzip.prune`` stays this package."""

    def __call__(self, *args, **kwargs):
        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
