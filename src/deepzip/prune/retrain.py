"""Prune with retraining: one-shot, iterative or gradual, through the resumable training loop.

Each step trains in its own run directory (``step_<k>``); a finished step is loaded instead of
retrained, so rerunning the same command after a crash resumes at the step it reached.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import atomic_write_text
from ..config import check_choices, option
from ..data import DataSplits
from ..train import TrainConfig, train
from .api import prune, sparsity_report
from .schedule import GradualPruning, iterative_sparsities


def parse_spec(text: str) -> float | dict[str, float] | None:
    """'0.9' -> 0.9; 'fc=0.92,conv=0.66' -> {'fc': 0.92, 'conv': 0.66}; '' -> None."""
    text = text.strip()
    if not text:
        return None
    if "=" not in text:
        return float(text)
    spec = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        try:
            spec[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"bad layer spec item {item!r}; expected name=number, e.g. fc=0.92,conv=0.66") from None
    return spec


@dataclass(frozen=True)
class PruneConfig:
    """Pruning and retraining (Han et al. 2015: iterative magnitude pruning with L2 retraining)."""

    method: str = option("global", "pruning method", ("global", "uniform", "erk", "fraction", "threshold",
                                                      "sensitivity", "random", "nm", "structured"))
    sparsity: float = option(0.92, "target fraction of weights removed, in [0, 1)")
    schedule: str = option("iterative", "when to prune", ("oneshot", "iterative", "gradual"))
    steps: int = option(3, "iterative: prune/retrain rounds; gradual: pruning events")
    retrain_epochs: int = option(4, "retraining epochs per step (gradual: total epochs)")
    retrain_lr: float = option(5e-4, "retraining learning rate (cosine-decayed within each step)")
    weight_decay: float = option(1e-5, "L2 regularization while retraining (the paper's choice after pruning)")
    l1: float = option(0.0, "L1 regularization strength while retraining (proximal step)")
    quality: str = option("1.0", "threshold: quality per layer or kind, e.g. 'fc=1.2,conv=0.8'")
    layer_sparsity: str = option("", "fraction: sparsity per layer or kind, e.g. 'fc=0.92,conv=0.66'")
    scales: str = option("", "uniform/erk/structured: per-layer rate multipliers, e.g. 'fc3=0.5'")
    exclude: str = option("", "comma-separated layers never pruned, e.g. 'conv1'")
    n: int = option(2, "nm: weights kept per group")
    m: int = option(4, "nm: group size along the input dimension")
    norm: str = option("l1", "structured: unit norm", ("l1", "l2"))
    round_to: int = option(1, "round each layer's kept count to a multiple of this (8: hardware friendly)")
    seed: int = option(0, "seed for random pruning")

    def __post_init__(self):
        check_choices(self)
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0 < self.n <= self.m:
            raise ValueError(f"N:M needs 0 < N <= M, got {self.n}:{self.m}")
        for name in ("steps", "round_to"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.retrain_epochs < 0 or self.weight_decay < 0 or self.l1 < 0 or self.retrain_lr <= 0:
            raise ValueError("retrain_epochs, weight_decay and l1 must be >= 0 and retrain_lr > 0")
        for name in ("quality", "layer_sparsity", "scales"):
            parse_spec(getattr(self, name))

    def options(self) -> dict[str, Any]:
        """Keyword options for `deepzip.prune.prune`."""
        opts: dict[str, Any] = {"round_to": self.round_to, "seed": self.seed, "n": self.n, "m": self.m,
                                "norm": self.norm, "quality": parse_spec(self.quality),
                                "layer_sparsity": parse_spec(self.layer_sparsity), "scales": parse_spec(self.scales)}
        if self.exclude.strip():
            opts["exclude"] = [e.strip() for e in self.exclude.split(",") if e.strip()]
        return opts

    def retrain_config(self, base: TrainConfig, epochs: int | None = None) -> TrainConfig:
        return dataclasses.replace(base, epochs=epochs or self.retrain_epochs, lr=self.retrain_lr,
                                   weight_decay=self.weight_decay, lr_schedule="cosine")


@dataclass
class L1Regularization:
    """A training hook: proximal L1 step, w <- sign(w) max(|w| - lr * strength, 0), on prunable weights."""

    strength: float
    lr: float

    def __call__(self, model: nn.Module, optimizer, iteration: int) -> None:
        from .api import prunable_weights

        with torch.no_grad():
            for w in prunable_weights(model)[0].values():
                w.copy_(w.sign() * (w.abs() - self.lr * self.strength).clamp_min(0))


def _targets(cfg: PruneConfig) -> list[float | None]:
    if cfg.method in ("threshold", "nm", "fraction"):
        return [None]  # these fix the sparsity themselves: one pruning step
    if cfg.schedule == "iterative":
        return iterative_sparsities(cfg.sparsity, cfg.steps)
    return [cfg.sparsity]


def prune_and_retrain(model: nn.Module, data: DataSplits, cfg: PruneConfig, base: TrainConfig,
                      run_dir: str | Path | None = None, description: dict | None = None,
                      progress: bool = True) -> list[dict[str, Any]]:
    """Prune ``model`` in place per ``cfg`` with retraining; returns one record per step."""
    run_dir = Path(run_dir) if run_dir is not None else None
    hooks = [L1Regularization(cfg.l1, cfg.retrain_lr)] if cfg.l1 > 0 else []
    options = cfg.options()
    if cfg.method == "sensitivity":
        options.update(_sensitivity_options(model, data, run_dir, options.get("exclude", ()), progress))
    records = []
    if cfg.schedule == "gradual" and cfg.method not in ("threshold", "nm", "fraction"):
        retrain = cfg.retrain_config(base)
        per_epoch = -(-len(data.train) // retrain.batch_size)
        end = int(per_epoch * retrain.epochs * 0.75)  # prune over the first 3/4, then recover
        gradual = GradualPruning(cfg.sparsity, begin=0, end=end, every=max(1, end // cfg.steps),
                                 method=cfg.method, options=options)
        result = train(model, data, retrain, run_dir=run_dir and run_dir / "gradual", resume=True,
                       hooks=[gradual, *hooks], description=description, progress=progress)
        records.append({"step": 1, "target": cfg.sparsity, **_record(model, result)})
    else:
        for step, target in enumerate(_targets(cfg), start=1):
            prune(model, target, cfg.method, **options)
            retrain = cfg.retrain_config(base)
            pruned_only = _evaluate(model, data)
            result = train(model, data, retrain, run_dir=run_dir and run_dir / f"step_{step}", resume=True,
                           hooks=hooks, description=description, progress=progress)
            records.append({"step": step, "target": target, "test_acc_before_retrain": pruned_only,
                            **_record(model, result)})
    if run_dir is not None:
        atomic_write_text(run_dir / "steps.json", json.dumps(records, indent=2) + "\n")
    return records


def _sensitivity_options(model: nn.Module, data: DataSplits, run_dir: Path | None, exclude,
                         progress: bool) -> dict[str, Any]:
    """Curves for sensitivity allocation, measured once on the validation split of the model as given.

    Saved in the run directory so a resumed run allocates exactly as the interrupted one did.
    """
    from ..train import evaluate
    from .sensitivity import sensitivity_curves

    saved = run_dir / "sensitivity.json" if run_dir is not None else None
    if saved is not None and saved.exists():
        found = json.loads(saved.read_text())
        return {"curves": {k: [tuple(p) for p in v] for k, v in found["curves"].items()},
                "base_accuracy": found["base_accuracy"]}
    val_acc = lambda m: evaluate(m, data.val)[1]  # noqa: E731  (allocation never sees the test set)
    measured = {"curves": sensitivity_curves(model, val_acc, exclude=exclude, progress=progress),
                "base_accuracy": val_acc(model)}
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(measured, indent=2) + "\n")
    return measured


def _evaluate(model, data) -> float:
    from ..train import evaluate

    return evaluate(model, data.test)[1]


def _record(model, result) -> dict[str, Any]:
    report = sparsity_report(model)
    return {"sparsity": report["sparsity"], "test_acc": result.final["test_acc"], "val_acc": result.final["val_acc"],
            "layers": [{k: l[k] for k in ("layer", "total", "nonzero", "kept")} for l in report["layers"]]}
