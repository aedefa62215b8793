"""The training loop: deterministic, evaluated on validation and test, resumable from atomic checkpoints.

Data order comes from a generator seeded by (seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen. A run directory holds ``config.json``,
``metrics.jsonl`` (one line per evaluation), ``checkpoint.safetensors`` (the latest state, written
at every evaluation), and on success ``model.safetensors`` + ``summary.json``.
"""

from __future__ import annotations

import dataclasses
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

from ..checkpoint import atomic_write_text, load_model_file, load_state, read_json, save_model, save_state
from ..config import to_dict
from ..data import DatasetSplit, DataSplits, Split
from ..errors import CheckpointError, DeepzipError
from ..quantize.sharing import load_state_dict
from .config import TrainConfig
from .device import make_deterministic, resolve_device


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


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The default metric: the fraction of rows whose largest output is the target class."""
    return (outputs.argmax(1) == targets).double().mean().item()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters are (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def evaluate(model: nn.Module, split: Split | DatasetSplit, batch_size: int = 1000, loss: Loss = F.cross_entropy,
             metric: Metric = accuracy) -> tuple[float, float]:
    """(mean ``loss``, mean ``metric``) of ``model`` on ``split`` (defaults: cross-entropy, accuracy), with
    the batches on the model's device."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total_loss, total_metric = 0.0, 0.0
    for start in range(0, len(split), batch_size):
        x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))))
        x, y = x.to(device), y.to(device)
        outputs = model(x)
        total_loss += float(loss(outputs, y)) * len(y)
        total_metric += float(metric(outputs, y)) * len(y)
    model.train(was_training)
    n = max(len(split), 1)
    return total_loss / n, total_metric / n


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
    rows = read_json(path, lines=True)
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("iteration"), int)):
            raise CheckpointError(f"{path}: line {i + 1} needs an integer 'iteration'")
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
    loss: Loss = F.cross_entropy,
    metric: Metric = accuracy,
    step_with: Callable[[torch.optim.Optimizer, int], Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with ``cfg``; see the module docstring for the run files.

    ``start_iteration`` > 0 starts mid-schedule (lottery-ticket rewinding to iteration k): the data
    order and learning rate continue from there, and training ends at the schedule's last iteration.
    A finished run directory is not trained again: its final model is loaded and its metrics returned.
    ``data`` may hold any Datasets (`deepzip.data.from_datasets`); ``loss(outputs, targets)`` and
    ``metric(outputs, targets)`` default to cross-entropy and accuracy. The model is moved to
    ``cfg.device``; a data set held as tensors that fits (under 2 GiB) is moved there once.
    ``step_with(optimizer, total_iterations)`` makes an object whose ``step()`` replaces
    ``optimizer.step()`` (e.g. `deepzip.sparse.SparseTraining`); its ``state_dict()`` goes into the
    checkpoints and its ``finish()``, if it has one, runs when training ends.
    """
    device = resolve_device(cfg.device)
    make_deterministic(device)
    model.to(device)
    data = _on_device(data, device)
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
        state = _resume_state(load_state(checkpoint), checkpoint, total)
        _resume_into(checkpoint, model, optimizer, scheduler, state)
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
            x, y = data.train.batch(idx)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                batch_loss = loss(model(x.to(device)), y.to(device))
            batch_loss.backward()
            (stepper or optimizer).step()
            scheduler.step()
            iteration += 1
            for hook in hooks:
                hook(model, optimizer, iteration)
            running_loss += batch_loss.item()
            running_count += 1
            bar.update()
            if iteration % eval_every == 0 or iteration == total:
                metrics.append(_evaluate_all(model, data, iteration, per_epoch, running_loss / running_count,
                                             scheduler.get_last_lr()[0], time.perf_counter() - started,
                                             loss, metric))
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


DEVICE_DATA_LIMIT = 2 << 30  # bytes of tensors kept on an accelerator for the whole run


def _on_device(data: DataSplits, device: torch.device) -> DataSplits:
    """The splits held as tensors moved to ``device`` once, when they fit; else batches move as made."""
    if device.type == "cpu" or sum(s.nbytes() for s in (data.train, data.val, data.test)) > DEVICE_DATA_LIMIT:
        return data
    return dataclasses.replace(data, train=data.train.to(device), val=data.val.to(device), test=data.test.to(device))


RESUME_FIELDS = {"model": dict, "optimizer": dict, "scheduler": dict, "iteration": int}


def _resume_state(state: Any, path: Path, total: int) -> dict:
    """A training state file's fields, each checked (CheckpointError naming the file and field)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a training state must be a dict, got {type(state).__name__}")
    for name, kind in RESUME_FIELDS.items():
        if name not in state:
            raise CheckpointError(f"{path}: the training state lacks the field {name!r}")
        if not isinstance(state[name], kind) or isinstance(state[name], bool):
            raise CheckpointError(f"{path}: field {name!r} must be a {kind.__name__}, got {type(state[name]).__name__}")
    if not 0 <= state["iteration"] <= total:
        raise CheckpointError(f"{path}: field 'iteration' {state['iteration']} is outside 0..{total}")
    bad = [k for k, v in state["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: field 'model' holds non-tensors ({', '.join(map(repr, bad[:3]))})")
    return state


def _resume_into(path: Path, model, optimizer, scheduler, state: dict) -> None:
    """Load a checked state; a state of another model or optimizer is a CheckpointError naming the field."""
    for name, load in (("model", lambda v: _load_weights(model, v)), ("optimizer", optimizer.load_state_dict),
                       ("scheduler", scheduler.load_state_dict)):
        try:
            load(state[name])
        except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: field {name!r} does not fit this run: {str(exc).splitlines()[0][:200]}") from None


def _load_weights(model: nn.Module, state: dict) -> None:
    # Pruned / weight-shared models carry masks and codebooks; install them before loading.
    load_state_dict(model, state)


def _evaluate_all(model, data, iteration, per_epoch, train_loss, lr, elapsed, loss, metric) -> dict[str, Any]:
    val_loss, val_acc = evaluate(model, data.val, loss=loss, metric=metric) if len(data.val) \
        else (float("nan"), float("nan"))
    test_loss, test_acc = evaluate(model, data.test, loss=loss, metric=metric)
    model.train()
    return {"iteration": iteration, "epoch": round(iteration / per_epoch, 3), "train_loss": train_loss,
            "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "lr": lr, "elapsed_s": round(elapsed, 2)}
