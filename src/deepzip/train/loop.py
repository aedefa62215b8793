"""The training loop: deterministic, evaluated on validation and test, resumable from atomic checkpoints.

Data order comes from a generator seeded by (seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen. A run directory holds ``config.json``,
``metrics.jsonl`` (one line per evaluation), ``checkpoint.safetensors`` (the latest state, written
at every evaluation), and on success ``model.safetensors`` + ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, load_model_file, load_state, save_model, save_state
from ..config import to_dict
from ..data import DataSplits, Split
from ..errors import DeepzipError
from ..quantize.sharing import load_state_dict
from .config import TrainConfig


class TrainHook(Protocol):
    """Called after every optimizer step (pruning schedules and masks plug in here)."""

    def __call__(self, model: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None: ...


@dataclass
class TrainResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1]

    @property
    def early_stop(self) -> dict[str, Any]:
        """The evaluation with the lowest validation loss (never chosen by test metrics)."""
        return min(self.metrics, key=lambda m: m["val_loss"])

    def summary(self) -> dict[str, Any]:
        return {
            "iterations": self.final["iteration"],
            "test_acc": self.final["test_acc"],
            "val_acc": self.final["val_acc"],
            "early_stop_iteration": self.early_stop["iteration"],
            "early_stop_test_acc": self.early_stop["test_acc"],
        }


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on ``split``."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    n = max(len(split), 1)
    return loss / n, correct / n


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, iteration: int, total: int, per_epoch: int) -> float:
    """The learning-rate multiplier at ``iteration`` (a pure function: replayable for lr rewinding)."""
    if cfg.lr_schedule == "step":
        return cfg.lr_gamma ** (iteration // (cfg.lr_step_epochs * per_epoch))
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    return 1.0


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["iteration"] <= upto]


class _Run:
    """The files of one run directory (or nothing, when training in memory)."""

    def __init__(self, run_dir: str | Path | None, cfg: TrainConfig, description: dict | None):
        self.dir = Path(run_dir) if run_dir is not None else None
        self.cfg, self.description = cfg, description or {}

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def done(self) -> bool:
        return self.dir is not None and self.path("summary.json").exists()

    def start(self) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path("config.json"), json.dumps(to_dict(self.cfg), indent=2) + "\n")

    def record(self, metrics: list[dict[str, Any]]) -> None:
        if self.dir is not None:
            atomic_write_text(self.path("metrics.jsonl"), "".join(json.dumps(m) + "\n" for m in metrics))


def train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    resume: bool = False,
    hooks: Iterable[TrainHook] = (),
    description: dict | None = None,
    progress: bool = True,
    start_iteration: int = 0,
    step_with: Callable[[torch.optim.Optimizer, int], Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``cfg``; see the module docstring for the run files.

    ``start_iteration`` > 0 starts mid-schedule (lottery-ticket rewinding to iteration k): the data
    order and learning rate continue from there, and training ends at the schedule's last iteration.
    A finished run directory is not trained again: its final model is loaded and its metrics returned.
    ``step_with(optimizer, total_iterations)`` makes an object whose ``step()`` replaces
    ``optimizer.step()`` (e.g. `deepzip.sparse.SparseTraining`); its ``state_dict()`` goes into the
    checkpoints and its ``finish()``, if it has one, runs when training ends.
    """
    run = _Run(run_dir, cfg, description)
    if run.done:
        state, _ = load_model_file(run.path("model.safetensors"))
        _load_weights(model, state)
        return TrainResult(_read_metrics(run.path("metrics.jsonl"), upto=10**18))

    n = len(data.train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    eval_every = cfg.eval_every or per_epoch
    optimizer = make_optimizer(model, cfg)
    if not 0 <= start_iteration < total:
        raise ValueError(f"start_iteration must be in [0, {total}), got {start_iteration}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(cfg, it + start_iteration, total, per_epoch))
    iteration, metrics = start_iteration, []
    stepper = step_with(optimizer, total) if step_with is not None else None

    checkpoint = run.path("checkpoint.safetensors") if run.dir is not None else None
    if checkpoint is not None and checkpoint.exists():
        if not resume:
            raise DeepzipError(f"{run.dir} holds an unfinished run; pass --resume to continue it "
                               f"or delete the directory to start over")
        state = load_state(checkpoint)
        _load_weights(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        iteration = state["iteration"]
        if stepper is not None:
            stepper.load_state_dict(state["stepper"])
        metrics = _read_metrics(run.path("metrics.jsonl"), upto=iteration)
    run.start()

    model.train()
    bar = tqdm(total=total, initial=iteration, desc=f"train {cfg.model}", unit="it",
               disable=None if progress else True, leave=False)
    running_loss, running_count, started = 0.0, 0, time.perf_counter()
    while iteration < total:
        epoch, offset = divmod(iteration, per_epoch)
        order = epoch_order(cfg.seed, epoch, n)
        for step in range(offset, per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            loss.backward()
            (stepper or optimizer).step()
            scheduler.step()
            iteration += 1
            for hook in hooks:
                hook(model, optimizer, iteration)
            running_loss += loss.item()
            running_count += 1
            bar.update()
            if iteration % eval_every == 0 or iteration == total:
                metrics.append(_evaluate_all(model, data, iteration, per_epoch, running_loss / running_count,
                                             scheduler.get_last_lr()[0], time.perf_counter() - started))
                running_loss, running_count = 0.0, 0
                bar.set_postfix(val_acc=f"{metrics[-1]['val_acc']:.4f}")
                if run.dir is not None:
                    run.record(metrics)
                    save_state(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict(), "iteration": iteration,
                                            **({"stepper": stepper.state_dict()} if stepper is not None else {})})
            if iteration >= total:
                break
    bar.close()
    if hasattr(stepper, "finish"):
        stepper.finish()

    result = TrainResult(metrics)
    if run.dir is not None:
        save_model(run.path("model.safetensors"), model, {**run.description, "train_config": to_dict(cfg)})
        atomic_write_text(run.path("summary.json"), json.dumps(result.summary(), indent=2) + "\n")
        checkpoint.unlink(missing_ok=True)
    return result


def _load_weights(model: nn.Module, state: dict) -> None:
    # Pruned / weight-shared models carry masks and codebooks; install them before loading.
    load_state_dict(model, state)


def _evaluate_all(model, data, iteration, per_epoch, train_loss, lr, elapsed) -> dict[str, Any]:
    val_loss, val_acc = evaluate(model, data.val) if len(data.val) else (float("nan"), float("nan"))
    test_loss, test_acc = evaluate(model, data.test)
    model.train()
    return {"iteration": iteration, "epoch": round(iteration / per_epoch, 3), "train_loss": train_loss,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "lr": lr, "elapsed_s": round(elapsed, 2)}
