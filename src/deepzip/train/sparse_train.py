"""Sparse-to-sparse training through the resumable loop (`deepzip.sparse`), and its CLI options.

`SparseTrainConfig` holds the options of ``deepzip sparse-train``; an option left at None takes the
chosen method's own (paper) default, and an option the method does not have is an error.
`sparse_train` trains a fresh model in a run directory with `deepzip.sparse.SparseTraining` stepping
the optimizer; the checkpoints hold its state, so a killed run resumes exactly; ``sparse.json`` records
the method, the final per-layer densities and the training FLOPs relative to dense.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import atomic_write_text
from ..config import check_choices, option
from ..data import DataSplits
from ..errors import DeepzipError
from ..registry import METHODS
from ..sparse import SparseMethod, SparseTraining, method_names
from .config import TrainConfig
from .loop import TrainResult, train


_RENAMED = {"snfs_momentum": "momentum"}  # CLI name -> config field (--momentum is the optimizer's)


@dataclass(frozen=True)
class SparseTrainConfig:
    """Sparse-to-sparse training (options left unset take the method's paper defaults)."""

    method: str = option("rigl", "sparse training method (deepzip.sparse.configs)", tuple(method_names()))
    sparsity: float = option(0.9, "global fraction of weights inactive (srste: fixed by N:M)")
    distribution: str | None = option(None, "initial per-layer sparsity: uniform, er, erk (default: the method's)")
    dense_first: bool | None = option(None, "keep the first layer dense")
    dense_last: bool | None = option(None, "keep the last layer dense")
    update_interval: int | None = option(None, "steps between mask updates (Delta T)")
    drop_fraction: float | None = option(None, "fraction of each layer's active weights replaced at an update")
    drop_schedule: str | None = option(None, "drop fraction over training: constant or cosine")
    end_fraction: float | None = option(None, "stop updating masks after this fraction of training")
    snfs_momentum: float | None = option(None, "snfs: momentum of the dense gradient (the config's momentum)")
    redistribution: str | None = option(None, "snfs: momentum or none")
    n: int | None = option(None, "srste: weights kept per group")
    m: int | None = option(None, "srste: group size along the input dimension")
    decay: float | None = option(None, "srste: lambda_W, decay of the pruned weights")
    exclude: str = option("", "comma-separated layers kept dense and never updated, e.g. 'conv1'")

    def __post_init__(self):
        check_choices(self)
        self.method_config()

    def method_config(self, seed: int = 0) -> SparseMethod:
        """The `deepzip.sparse` config these options name; an option set for a method without it is an error."""
        cls = METHODS.config_class("sparse", self.method)
        takes = {f.name for f in dataclasses.fields(cls)}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        options: dict[str, Any] = {"seed": seed}
        exclude = tuple(e.strip() for e in self.exclude.split(",") if e.strip())
        if exclude:
            options["exclude"] = exclude
        for f in dataclasses.fields(self):
            if f.name in ("method", "exclude"):
                continue
            value, field = getattr(self, f.name), _RENAMED.get(f.name, f.name)
            if value == defaults[f.name] and (value is None or field not in takes):
                continue
            if field not in takes:
                flags = sorted(n for n in defaults if _RENAMED.get(n, n) in takes)
                raise ValueError(f"option {f.name}={value!r} does not apply to method {self.method!r}; "
                                 f"its options: {', '.join(flags)}")
            options[field] = value
        return METHODS.build("sparse", self.method, **options)


def method_options(method: str) -> tuple[str, ...]:
    """The `SparseTrainConfig` options (all but ``method``) that apply to ``method``."""
    takes = {f.name for f in dataclasses.fields(METHODS.config_class("sparse", method))}
    return tuple(f.name for f in dataclasses.fields(SparseTrainConfig)
                 if f.name != "method" and _RENAMED.get(f.name, f.name) in takes)


def sparse_train(model: nn.Module, data: DataSplits, train_cfg: TrainConfig, method: SparseMethod,
                 run_dir: str | Path | None = None, resume: bool = False, description: dict | None = None,
                 progress: bool = True) -> tuple[TrainResult, dict[str, Any]]:
    """Train ``model`` (fresh, unpruned) sparse from the start with ``method``; returns the training
    result and the sparse summary (also ``sparse.json`` in the run directory)."""
    made: list[SparseTraining] = []

    def step_with(optimizer, total: int) -> SparseTraining:
        made.append(SparseTraining(model, optimizer, method, total, example=data.train.batch([0])[0]))
        return made[0]

    result = train(model, data, train_cfg, run_dir=run_dir, resume=resume, description=description,
                   progress=progress, step_with=step_with)
    path = Path(run_dir) / "sparse.json" if run_dir is not None else None
    if not made:  # a finished run, loaded
        if path is not None and path.exists():
            return result, json.loads(path.read_text())
        raise DeepzipError(f"{run_dir} is a finished run without sparse.json: not a sparse-train run directory")
    trainer = made[0]
    summary = {"method": method.method, "config": dataclasses.asdict(method), "densities": trainer.densities(),
               "flops_ratio": trainer.flops_ratio(), "updates": len(trainer.updates),
               "sparsity": 1 - sum(int(m.sum()) for m in trainer.masks().values())
               / sum(m.numel() for m in trainer.masks().values())}
    if path is not None:
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return result, summary
