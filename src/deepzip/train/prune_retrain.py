"""Prune with retraining: one-shot, iterative or gradual, through the resumable training loop.

Each step trains in its own run directory (``step_<k>``); a finished step is loaded instead of
retrained, so rerunning the same command after a crash resumes at the step it reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_write_text
from ..config import check_choices, option, parse_spec
from ..data import DataSplits
from ..prune import GradualPruning, iterative_sparsities, prunable_weights, prune, sensitivity_curves, sparsity_report
from ..prune import l0
from ..prune.configs import L0, LayerFraction, PruneMethod, RandomPruning, Structured, method_names as prune_method_names
from ..registry import METHODS
from .config import TrainConfig
from .l0_gates import gate_summary, train_gates
from .loop import Loss, Metric, accuracy, evaluate, train


L0_OPTIONS = ("penalty", "lr", "droprate_init", "temperature")  # L0's fields, here prefixed l0_


@dataclass(frozen=True)
class PruneConfig:
    """Pruning and retraining (Han et al. 2015: iterative magnitude pruning with L2 retraining)."""

    # Training from labels prunes by the weights; the calibration methods are compress-pretrained's.
    method: str = option("global", "pruning method (deepzip.prune.configs)", tuple(prune_method_names(calibration=False)))
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
    seed: int = option(0, "seed for random pruning and for l0's gates")
    l0_penalty: float = option(5.0, "l0: penalty on the expected fraction of open gates (above the target)")
    l0_lr: float = option(0.05, "l0: Adam learning rate of the gates' log_alpha")
    l0_droprate_init: float = option(0.5, "l0: the gates' initial dropout rate")
    l0_temperature: float = option(2 / 3, "l0: temperature (beta) of the hard-concrete gates")

    def __post_init__(self):
        check_choices(self)
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        for name in ("retrain_epochs", "weight_decay", "l1"):
            if not getattr(self, name) >= 0 or math.isinf(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.retrain_lr < math.inf:
            raise ValueError(f"retrain_lr must be a finite number > 0, got {self.retrain_lr}")
        # Sensitivity curves are measured later; placeholders let the method's options be checked now.
        self.method_config(curves={}, base_accuracy=0.0)
        if self.method == "l0" and self.schedule != "iterative":
            raise ValueError(f"schedule={self.schedule!r} does not apply to method 'l0': its masks are learned "
                             f"while training (the gates train for steps x retrain_epochs epochs, then the "
                             f"survivors retrain for retrain_epochs)")

    def method_config(self, **measured: Any) -> PruneMethod:
        """The pruning config these options name (`deepzip.prune.configs`), at the final sparsity.

        An option that differs from its default but does not apply to the method is an error.
        """
        cls = METHODS.config_class("prune", self.method)
        takes = {f.name for f in dataclasses.fields(cls)}
        exclude = tuple(e.strip() for e in self.exclude.split(",") if e.strip())
        layer_sparsity = parse_spec(self.layer_sparsity)
        values = {"sparsity": self.sparsity, "quality": parse_spec(self.quality), "layer_sparsity": layer_sparsity,
                  "scales": parse_spec(self.scales), "exclude": exclude, "n": self.n, "m": self.m,
                  "norm": self.norm, "round_to": self.round_to, "seed": self.seed}
        values.update({name: getattr(self, f"l0_{name}") for name in L0_OPTIONS})
        if cls in (RandomPruning, L0) and layer_sparsity is not None:
            values["sparsity"] = None  # random and l0 take one of the two
        if cls is Structured and not exclude:
            values["exclude"] = None  # its default: keep the output layer
        options = {}
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, value in values.items():
            own = f"l0_{name}" if name in L0_OPTIONS else name  # this config's field of that option
            if name in takes:
                options[name] = value
            elif getattr(self, own) != defaults[own]:
                its = sorted(f"l0_{n}" if n in L0_OPTIONS else n for n in takes & set(values))
                raise ValueError(f"prune option {own}={getattr(self, own)!r} does not apply to method "
                                 f"{self.method!r}; its options: {', '.join(its)}")
        options.update({k: v for k, v in measured.items() if k in takes})
        try:
            return METHODS.build("prune", self.method, **options)
        except ValueError as exc:
            if cls is not L0:
                raise
            # L0's own field names are this config's l0_* options (the CLI's --l0-* flags)
            raise ValueError(re.sub(rf"\b({'|'.join(L0_OPTIONS)})\b", r"l0_\1", str(exc))) from None

    def retrain_config(self, base: TrainConfig, epochs: int | None = None) -> TrainConfig:
        return dataclasses.replace(base, epochs=epochs or self.retrain_epochs, lr=self.retrain_lr,
                                   weight_decay=self.weight_decay, lr_schedule="cosine")


@dataclass
class L1Regularization:
    """A training hook: proximal L1 step, w <- sign(w) max(|w| - lr * strength, 0), on prunable weights."""

    strength: float
    lr: float

    def __call__(self, model: nn.Module, optimizer, iteration: int) -> None:
        with torch.no_grad():
            for w in prunable_weights(model)[0].values():
                w.copy_(w.sign() * (w.abs() - self.lr * self.strength).clamp_min(0))


def _targets(cfg: PruneConfig, method: PruneMethod) -> list[PruneMethod]:
    """The pruning config of each step: iterative schedules step every layer of a per-layer fraction
    towards its own target; other methods that fix their own sparsity prune in one step."""
    if isinstance(method, LayerFraction) and cfg.schedule == "iterative":
        return [dataclasses.replace(method, layer_sparsity=_step_of(method.layer_sparsity, cfg.steps, k))
                for k in range(cfg.steps)]
    if method.fixes_own_sparsity:
        return [method]
    targets = iterative_sparsities(cfg.sparsity, cfg.steps) if cfg.schedule == "iterative" else [cfg.sparsity]
    return [dataclasses.replace(method, sparsity=target) for target in targets]


def _step_of(layer_sparsity, steps: int, k: int):
    """Step k (from 0) of the geometric schedule to each layer's final sparsity."""
    if isinstance(layer_sparsity, Mapping):
        return {name: iterative_sparsities(s, steps)[k] if s > 0 else 0.0 for name, s in layer_sparsity.items()}
    return iterative_sparsities(layer_sparsity, steps)[k] if layer_sparsity > 0 else 0.0


def prune_and_retrain(model: nn.Module, data: DataSplits, cfg: PruneConfig, base: TrainConfig,
                      run_dir: str | Path | None = None, description: dict | None = None,
                      progress: bool = True, loss: Loss = F.cross_entropy,
                      metric: Metric = accuracy) -> list[dict[str, Any]]:
    """Prune ``model`` in place per ``cfg`` with retraining; returns one record per step. ``data`` may be
    any Datasets (`deepzip.data.from_datasets`); ``loss`` and ``metric`` as for `train`."""
    run_dir = Path(run_dir) if run_dir is not None else None
    fit = {"loss": loss, "metric": metric}
    hooks = [L1Regularization(cfg.l1, cfg.retrain_lr)] if cfg.l1 > 0 else []
    measured = {}
    if cfg.method == "sensitivity":
        exclude = cfg.method_config(curves={}, base_accuracy=0.0).exclude
        measured = _sensitivity_options(model, data, run_dir, exclude, progress, fit)
    method = cfg.method_config(**measured)
    records = []
    if isinstance(method, L0):
        records = _learn_masks(model, data, cfg, method, base, run_dir, description, progress, hooks, fit)
    elif cfg.schedule == "gradual" and not method.fixes_own_sparsity:
        retrain = cfg.retrain_config(base)
        per_epoch = -(-len(data.train) // retrain.batch_size)
        end = int(per_epoch * retrain.epochs * 0.75)  # prune over the first 3/4, then recover
        gradual = GradualPruning(cfg.sparsity, begin=0, end=end, every=max(1, end // cfg.steps), method=method)
        result = train(model, data, retrain, run_dir=run_dir and run_dir / "gradual", resume=True,
                       hooks=[gradual, *hooks], description=description, progress=progress, **fit)
        records.append({"step": 1, "target": cfg.sparsity, **_record(model, result)})
    else:
        for step, step_method in enumerate(_targets(cfg, method), start=1):
            prune(model, step_method)
            retrain = cfg.retrain_config(base)
            pruned_only = evaluate(model, data.test, **fit)[1]
            result = train(model, data, retrain, run_dir=run_dir and run_dir / f"step_{step}", resume=True,
                           hooks=hooks, description=description, progress=progress, **fit)
            records.append({"step": step, "target": getattr(step_method, "sparsity", None),
                            "test_acc_before_retrain": pruned_only, **_record(model, result)})
    if run_dir is not None:
        atomic_write_text(run_dir / "steps.json", json.dumps(records, indent=2) + "\n")
    return records


def _learn_masks(model: nn.Module, data: DataSplits, cfg: PruneConfig, method: L0, base: TrainConfig,
                 run_dir: Path | None, description, progress: bool, hooks, fit) -> list[dict[str, Any]]:
    """L0: gates and weights train together for steps x retrain_epochs epochs (``gates``), the gates
    become exact masks, and the survivors retrain with masks kept for retrain_epochs (``retrain``)."""
    gate_cfg = cfg.retrain_config(base, epochs=cfg.steps * cfg.retrain_epochs)
    result, target = train_gates(model, data, method, gate_cfg, run_dir=run_dir and run_dir / "gates", hooks=hooks,
                                 description=description, progress=progress, **fit)
    learned = {"step": 1, "phase": "gates", "target": target, "gates": gate_summary(model),
               "test_acc": result.final["test_acc"], "val_acc": result.final["val_acc"]}
    l0.finish(model, target)
    pruned_only = evaluate(model, data.test, **fit)[1]
    result = train(model, data, cfg.retrain_config(base), run_dir=run_dir and run_dir / "retrain", resume=True,
                   hooks=hooks, description=description, progress=progress, **fit)
    return [learned, {"step": 2, "phase": "retrain", "target": target, "test_acc_before_retrain": pruned_only,
                      **_record(model, result)}]


def _sensitivity_options(model: nn.Module, data: DataSplits, run_dir: Path | None, exclude,
                         progress: bool, fit: dict[str, Any]) -> dict[str, Any]:
    """Curves for sensitivity allocation, measured once on the validation split of the model as given.

    Saved in the run directory so a resumed run allocates exactly as the interrupted one did.
    """
    saved = run_dir / "sensitivity.json" if run_dir is not None else None
    if saved is not None and saved.exists():
        found = json.loads(saved.read_text())
        return {"curves": {k: [tuple(p) for p in v] for k, v in found["curves"].items()},
                "base_accuracy": found["base_accuracy"]}
    val_acc = lambda m: evaluate(m, data.val, **fit)[1]  # noqa: E731  (allocation never sees the test set)
    measured = {"curves": sensitivity_curves(model, val_acc, exclude=exclude, progress=progress),
                "base_accuracy": val_acc(model)}
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(saved, json.dumps(measured, indent=2) + "\n")
    return measured


def _record(model, result) -> dict[str, Any]:
    report = sparsity_report(model)
    return {"sparsity": report["sparsity"], "test_acc": result.final["test_acc"], "val_acc": result.final["val_acc"],
            "layers": [{k: l[k] for k in ("layer", "total", "nonzero", "kept")} for l in report["layers"]]}
