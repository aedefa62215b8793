"""A sparse-training sweep's grid (methods x sparsities x seeds) and the runs it consists of.

Each run is exactly one ``deepzip sparse-train`` run: the same `SparseTrainConfig` and `TrainConfig`
(its seed from the grid), so the same hash-named run directory and the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..config import option
from ..sparse import method_names
from ..train import TrainConfig
from ..train.sparse_train import SparseTrainConfig, method_options

Key = tuple[str, float, int]  # (method, sparsity, seed): one run of the grid


def _items(value: Any, name: str) -> tuple[str, ...]:
    """A comma-separated string (or a list / tuple of values) as its stripped items."""
    if isinstance(value, str):
        return tuple(i.strip() for i in value.split(",") if i.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(i).strip() for i in value)
    raise TypeError(f"{name} must be a comma-separated string (e.g. '0.9,0.95') or a list, got {type(value).__name__}")


def _unique(items: tuple, name: str) -> None:
    repeated = sorted({str(i) for i in items if items.count(i) > 1})
    if repeated:
        raise ValueError(f"{name} lists {', '.join(repeated)} more than once; give each value once")


@dataclass(frozen=True)
class SweepConfig:
    """A grid of sparse-training runs: every method x sparsity x seed."""

    methods: str = option("static,set,rigl", f"comma-separated methods: {', '.join(method_names())}")
    sparsities: str = option("0.9", "comma-separated global sparsities, each in [0, 1) (srste's N:M fixes its "
                                    "own: it runs once per seed)")
    seeds: str = option("0,1,2", "comma-separated seeds (initialization, data order, mask updates), each >= 0")

    def __post_init__(self):
        # lists are accepted from Python and stored in the canonical comma-separated form (hashes stay stable)
        for name in ("methods", "sparsities", "seeds"):
            items = _items(getattr(self, name), name)
            if not items:
                example = {f.name: f.default for f in dataclasses.fields(self)}[name]
                raise ValueError(f"{name} is empty; give at least one value, e.g. {name}={example!r}")
            _unique(items, name)
            object.__setattr__(self, name, ",".join(items))
        unknown = [m for m in self.method_list() if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown methods {', '.join(unknown)}; allowed: {', '.join(method_names())}")
        self.sparsity_list()
        self.seed_list()

    def method_list(self) -> list[str]:
        return list(_items(self.methods, "methods"))

    def sparsity_list(self) -> list[float]:
        out = []
        for item in _items(self.sparsities, "sparsities"):
            try:
                value = float(item)
            except ValueError:
                value = math.nan
            if not 0 <= value < 1:  # nan fails too
                raise ValueError(f"sparsities must be numbers in [0, 1) (e.g. 0.9,0.95), got {item}")
            out.append(value)
        _unique(tuple(out), "sparsities")
        return out

    def seed_list(self) -> list[int]:
        out = []
        for item in _items(self.seeds, "seeds"):
            if not (item.isascii() and item.isdigit()):
                raise ValueError(f"seeds must be integers >= 0 (e.g. 0,1,2), got {item}")
            out.append(int(item))
        _unique(tuple(out), "seeds")
        return out


@dataclass(frozen=True)
class Run:
    """One run of the grid: its `deepzip sparse-train` settings."""

    key: Key
    train: TrainConfig
    sparse: SparseTrainConfig


OPTIONS = tuple(f.name for f in dataclasses.fields(SparseTrainConfig) if f.name not in ("method", "sparsity"))


def check_options(grid: SweepConfig, options: dict[str, Any]) -> None:
    """``options`` are `SparseTrainConfig` fields shared by the grid's runs; each applies to the methods
    that have it, and one that applies to none of the grid's methods is an error."""
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict of SparseTrainConfig options, got {type(options).__name__}")
    for name in options:
        if name in ("method", "sparsity"):
            plural = {"method": "methods", "sparsity": "sparsities"}[name]
            raise ValueError(f"option {name!r} is the grid's: give it as SweepConfig.{plural} (--{plural})")
        if name not in OPTIONS:
            raise ValueError(f"unknown sparse-training option {name!r}; allowed: {', '.join(OPTIONS)}")
        takers = [m for m in grid.method_list() if name in method_options(m)]
        if not takers:
            have = [m for m in method_names() if name in method_options(m)]
            raise ValueError(f"option {name}={options[name]!r} applies to none of the sweep's methods "
                             f"({grid.methods}); it applies to {', '.join(have)}")
    if grid.sparsities != SweepConfig.sparsities and not any("sparsity" in method_options(m)
                                                               for m in grid.method_list()):
        raise ValueError(f"sparsities={grid.sparsities!r} applies to none of the sweep's methods ({grid.methods}): "
                         f"srste's sparsity is set by its N:M (options n, m)")


def plan(train_cfg: TrainConfig, grid: SweepConfig, options: dict[str, Any] | None = None) -> list[Run]:
    """Every run of the grid, in order (method, then sparsity, then seed). A method without a sparsity
    option (srste) runs once per seed, keyed by its N:M sparsity 1 - N/M. Invalid settings raise
    ValueError before any run starts."""
    options = dict(options or {})
    check_options(grid, options)
    if train_cfg.seed != TrainConfig.seed:
        raise ValueError(f"the sweep's seeds come from SweepConfig.seeds; leave TrainConfig.seed at its default "
                         f"(got seed={train_cfg.seed})")
    runs: dict[Key, Run] = {}
    for method in grid.method_list():
        mine = {k: v for k, v in options.items() if k in method_options(method)}
        takes_sparsity = "sparsity" in method_options(method)
        for sparsity in grid.sparsity_list() if takes_sparsity else [None]:
            given = {"sparsity": sparsity} if takes_sparsity else {}
            try:
                sparse_cfg = SparseTrainConfig(method=method, **given, **mine)
            except ValueError as exc:
                raise ValueError(f"method {method}: {exc}") from None
            if not takes_sparsity:
                config = sparse_cfg.method_config()
                sparsity = round(1 - config.n / config.m, 6)
            for seed in grid.seed_list():
                key = (method, float(sparsity), seed)
                runs[key] = Run(key, dataclasses.replace(train_cfg, seed=seed), sparse_cfg)
    return list(runs.values())
