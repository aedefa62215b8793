"""Pruning: pure mask criteria, masks as explicit module state, allocation, schedules, structured shrink.

    import deepzip.prune as P
    P.prune(model, 0.9)                         # global magnitude, in place
    P.prune(model, 0.9, method="erk", exclude=["conv1"])
    print(P.format_report(P.sparsity_report(model)))
    P.remove(model)                             # make it permanent
"""

from . import allocate, criteria
from .api import compute_masks, format_report, prunable_weights, prune, sparsity_report
from .masks import apply_masks, enforce, get_masks, is_pruned, load_state_dict, mask_optimizer_state, remove
from .methods import METHODS
from .retrain import L1Regularization, PruneConfig, parse_spec, prune_and_retrain
from .schedule import GradualPruning, iterative_sparsities, polynomial_sparsity
from .sensitivity import sensitivity_curves
from .shrink import find_pairs, shrink
from .targets import find_targets, layer_kind

__all__ = ["METHODS", "allocate", "apply_masks", "compute_masks", "criteria", "enforce", "find_targets",
           "format_report", "L1Regularization", "PruneConfig", "parse_spec", "prune_and_retrain", "GradualPruning", "iterative_sparsities", "polynomial_sparsity",
           "sensitivity_curves", "find_pairs", "shrink", "get_masks", "is_pruned", "layer_kind", "load_state_dict", "mask_optimizer_state",
           "prunable_weights", "prune", "remove", "sparsity_report"]


class _CallableModule(__import__("types").ModuleType):
    """Lets ``deepzip.prune(model, ...)`` call `prune` while ``deepzip.prune`` stays this package."""

    def __call__(self, *args, **kwargs):
        return prune(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
