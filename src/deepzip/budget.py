"""Per-layer settings under a size budget: a multiple-choice knapsack, solved exactly on a byte grid.

Each layer offers options (e.g. a sparsity and a number of index bits), each with a size in bytes as the
real encoder measured it and a cost (e.g. the validation loss added when that layer alone is compressed
so). `choose` picks one option per layer minimising the summed cost with the summed bytes within the
budget. The costs are assumed additive across layers (the usual first-order assumption of sensitivity
analysis, Han et al. 2015); the pipeline then retrains and measures the real file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

GRID = 4000  # byte-grid cells: sizes are rounded up to budget / GRID, so a chosen set always fits


@dataclass(frozen=True)
class Option:
    """One way to store a layer: its settings, its bytes in the file, and its cost (lower is better)."""

    settings: Mapping[str, Any]
    bytes: int
    cost: float


def choose(options: Mapping[str, Sequence[Option]], budget: int, grid: int = GRID) -> dict[str, Option]:
    """The option per layer with the least total cost whose total bytes are <= ``budget``.

    Exact up to the byte grid: each option's bytes are rounded up to a multiple of ``budget / grid``, so
    the result never exceeds the budget (it may miss a solution within ``layers * budget / grid`` bytes of
    it). Raises ValueError when even the smallest options do not fit.
    """
    _check(options, budget)
    names = list(options)
    cell = max(1, math.ceil(budget / grid))
    cells = budget // cell
    best = np.zeros(cells + 1)  # best[j]: least cost of the layers so far within j cells
    picks = []
    for name in names:
        new = np.full(cells + 1, np.inf)
        pick = np.full(cells + 1, -1, dtype=np.int64)
        for i, option in enumerate(options[name]):
            width = math.ceil(option.bytes / cell)
            if width > cells:
                continue
            candidate = np.full(cells + 1, np.inf)
            candidate[width:] = best[: cells + 1 - width] + option.cost
            better = candidate < new
            new[better], pick[better] = candidate[better], i
        best = new
        picks.append(pick)
    if not np.isfinite(best[cells]):
        smallest = sum(min(o.bytes for o in options[n]) for n in names)
        raise ValueError(f"no choice of the measured options fits {budget:,} bytes: the smallest need "
                         f"{smallest:,}; measure sparser or fewer-bit options, or give a larger budget")
    return _backtrack(options, names, picks, best, cell, cells)


def _backtrack(options, names, picks, best, cell: int, cells: int) -> dict[str, Option]:
    # best is non-increasing in j, so the full budget holds the optimum; walk the layers back from it.
    chosen: dict[str, Option] = {}
    j = cells
    for name, pick in zip(reversed(names), reversed(picks)):
        option = options[name][int(pick[j])]
        chosen[name] = option
        j -= math.ceil(option.bytes / cell)
    return {name: chosen[name] for name in names}


def _check(options: Mapping[str, Sequence[Option]], budget: int) -> None:
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget <= 0:
        raise ValueError(f"budget must be a positive number of bytes, got {budget!r}")
    if not options:
        raise ValueError("no layers to choose settings for")
    for name, layer in options.items():
        if not layer:
            raise ValueError(f"layer {name!r} has no options")
        for option in layer:
            if not isinstance(option, Option):
                raise TypeError(f"options of {name!r} must be budget.Option, got {type(option).__name__}")
            if option.bytes < 0 or not math.isfinite(option.cost):
                raise ValueError(f"option {dict(option.settings)} of {name!r}: bytes must be >= 0 and the cost "
                                 f"finite, got {option.bytes} bytes, cost {option.cost}")


def total_bytes(chosen: Mapping[str, Option]) -> int:
    return sum(o.bytes for o in chosen.values())


__all__ = ["GRID", "Option", "choose", "total_bytes"]
