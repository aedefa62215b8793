"""Side-by-side batch-1 latency: a converted model and its dense reference, layer by layer and whole."""

from __future__ import annotations

import random
import statistics
import time
from typing import Callable

import torch
from torch import nn


def median_seconds(fn: Callable[[], object], repeats: int = 200, warmup: int = 10) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 200, warmup: int = 10) -> dict[str, float]:
    """Median seconds of each callable, measured round-robin so machine noise hits all alike.

    The order is shuffled every round (fixed seed): what ran just before a call changes its caches and
    branch predictors, which on microsecond calls is worth several percent; shuffling spreads it evenly.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        for _ in range(repeats):
            rng.shuffle(order)
            for name in order:
                fn = fns[name]
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    return {k: statistics.median(v) for k, v in times.items()}


def compare_models(fast: nn.Module, dense: nn.Module, example: torch.Tensor, repeats: int = 200,
                   control: nn.Module | None = None) -> dict[str, float]:
    """Median seconds of each model and the speedup; with ``control`` (a copy of ``dense``) timed alongside,
    also ``noise``: dense against its copy, how far from 1.00x a ratio strays by chance."""
    fns = {"deepzip": lambda: fast(example), "dense": lambda: dense(example)}
    if control is not None:
        fns["control"] = lambda: control(example)
    result = interleaved(fns, repeats)
    if control is not None:
        result["noise"] = result["dense"] / result.pop("control")
    return {**result, "speedup": result["dense"] / result["deepzip"]}
