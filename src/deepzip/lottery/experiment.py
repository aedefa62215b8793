"""Iterative magnitude pruning with resetting, its controls and one-shot pruning, resumable.

Layout of an experiment directory (named by the hash of its configs):
    config.json
    replicate_<r>/level_0/             dense training (a train run dir) + init.safetensors, rewind.safetensors
    replicate_<r>/level_<L>/<variant>/ mask.safetensors + a train run dir; variant in imp, reinit, random, oneshot
Every step is a finished train run (summary.json) or is (re)done; a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text, load_model_file, read_json, save_model
from ..config import to_dict
from ..data import DataSplits
from ..distributed import LOCAL_OBJECT_STORE, MAX_RETRIES, check_max_retries, check_picklable, run_on_ray
from ..errors import CheckpointError
from ..models import build
from ..prune import apply_masks, compute_masks, enforce, prunable_weights
from ..prune.masks import MASK_SUFFIX
from ..quantize import load_state_dict
from ..train import TrainConfig, TrainResult, evaluate, lr_factor, train
from .config import LotteryConfig
from .parallel import dependency, priority, run_parallel


def level_sparsities(model: nn.Module, cfg: LotteryConfig, level: int) -> dict[str, float]:
    """Per-layer sparsity after ``level`` levels: 1 - (1 - rate)^level, rate by kind, output at its own rate."""
    weights, kinds = prunable_weights(model)
    output = list(weights)[-1]
    rates = {n: cfg.output_rate if n == output else cfg.conv_rate if kinds[n] == "conv" else cfg.fc_rate
             for n in weights}
    return {n: 1 - (1 - r) ** level for n, r in rates.items()}


def level_masks(trained: nn.Module, cfg: LotteryConfig, level: int) -> dict[str, torch.Tensor]:
    """Masks for ``level`` from the trained weights of the previous level (pruned entries stay pruned)."""
    if cfg.pruning == "global":
        return compute_masks(trained, 1 - (1 - cfg.fc_rate) ** level, "global")
    return compute_masks(trained, None, "fraction", layer_sparsity=level_sparsities(trained, cfg, level))


def random_masks(like: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """The random-pruning control: per layer the same number kept, at random positions."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in like.items():
        keep = int(mask.sum())
        order = torch.randperm(mask.numel(), generator=generator)[:keep]
        flat = torch.zeros(mask.numel(), dtype=torch.bool)
        flat[order] = True
        out[name] = flat.reshape(mask.shape)
    return out


RAY_OBJECT_STORE = LOCAL_OBJECT_STORE  # a Ray instance started for one sweep holds only the experiment and its data


class Experiment:
    """One experiment directory: trains what is missing, loads what is there."""

    def __init__(self, directory: str | Path, train_cfg: TrainConfig, cfg: LotteryConfig, data: DataSplits,
                 progress: bool = True, train_fn: Callable[[nn.Module, Path], object] | None = None):
        """``train_fn(model, run_dir)``: your own training, in place of deepzip's loop, for every step. It
        trains the (masked) model in place; it may keep its own checkpoints in ``run_dir`` to resume a
        killed step. The experiment evaluates the result and marks the step finished, so a rerun skips
        it. With a train_fn, survivors restart from their initialization (``reset='init'``). With
        ``run(executor="ray")`` the train_fn and a custom data set are pickled for the workers: define
        them at module level (a TypeError names the one that cannot be pickled, before any work)."""
        if train_fn is not None and (cfg.reset != "init" or not callable(train_fn)):
            raise ValueError("a custom train_fn must be callable and supports reset='init' only (rewinding to an "
                             "iteration k or replaying the schedule needs deepzip's loop)")
        self.train_fn = train_fn
        self.dir, self.train_cfg, self.cfg, self.data, self.progress = Path(directory), train_cfg, cfg, data, progress
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.json", json.dumps({"train": to_dict(train_cfg), "lottery": to_dict(cfg)},
                                                               indent=2) + "\n")
        self.per_epoch = math.ceil(len(data.train) / train_cfg.batch_size)
        self.total = train_cfg.epochs * self.per_epoch
        if cfg.rewind_iteration >= self.total:
            raise ValueError(f"rewind_iteration {cfg.rewind_iteration} must be below the {self.total} training iterations")

    # ----------------------------------------------------------------------------------- helpers
    def _model(self, seed: int) -> nn.Module:
        return build(self.train_cfg.model, self.data.input_shape, self.data.num_classes, seed=seed)

    def _train(self, model, run_dir: Path, seed: int, start: int = 0, cfg: TrainConfig | None = None, hooks=()):
        cfg = dataclasses.replace(cfg or self.train_cfg, seed=seed)
        if self.train_fn is not None:
            return self._train_with_user_fn(model, run_dir, cfg)
        return train(model, self.data, cfg, run_dir=run_dir, resume=True, hooks=hooks, progress=False,
                     start_iteration=start)

    def _train_with_user_fn(self, model: nn.Module, run_dir: Path, cfg: TrainConfig) -> None:
        """The user's training for one step, then the files deepzip's loop would leave (model, metrics,
        summary), the summary last: a step killed inside the user's function is redone on rerun."""
        if (run_dir / "summary.json").exists():
            state, _ = load_model_file(run_dir / "model.safetensors")
            load_state_dict(model, state)
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.train_fn(model, run_dir)
        val_loss, val_acc = evaluate(model, self.data.val) if len(self.data.val) else (float("nan"),) * 2
        test_loss, test_acc = evaluate(model, self.data.test)
        metrics = [{"iteration": self.total, "epoch": cfg.epochs, "val_loss": val_loss, "val_acc": val_acc,
                    "test_loss": test_loss, "test_acc": test_acc}]
        save_model(run_dir / "model.safetensors", model, {"train_config": to_dict(cfg)})
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))
        atomic_write_text(run_dir / "summary.json", json.dumps(TrainResult(metrics).summary(), indent=2) + "\n")

    def _load(self, model: nn.Module, path: Path) -> nn.Module:
        state, _ = load_model_file(path)
        weights = {k: v for k, v in state.items() if not k.endswith(MASK_SUFFIX)}
        model.load_state_dict(weights, strict=False)
        return model

    def steps(self) -> Iterator[tuple[int, int, str]]:
        """Every (replicate, level, variant) the experiment consists of, in run order."""
        for r in range(self.cfg.replicates):
            yield r, 0, "dense"
            for level in range(1, self.cfg.levels + 1):
                yield r, level, "imp"
                for control in self.cfg.control_list():
                    yield r, level, control
                if self.cfg.oneshot:
                    yield r, level, "oneshot"

    def step_dir(self, replicate: int, level: int, variant: str) -> Path:
        base = self.dir / f"replicate_{replicate}" / f"level_{level}"
        return base if variant == "dense" else base / variant

    def done(self, replicate: int, level: int, variant: str) -> bool:
        return (self.step_dir(replicate, level, variant) / "summary.json").exists()

    # ------------------------------------------------------------------------------------ steps
    def run(self, jobs: int = 1, executor: str = "local", ray_address: str | None = None, cpus_per_step: float = 1,
            gpus_per_step: float = 0, max_retries: int = MAX_RETRIES) -> None:
        """Run every unfinished step; ``jobs`` > 1 runs independent steps in that many processes.

        ``executor="ray"`` runs the steps as Ray tasks instead (``deepzip.distributed``; the ``ray`` extra)
        on the cluster at ``ray_address`` (default: a Ray instance of this machine's own), each task with
        ``cpus_per_step`` CPUs and ``gpus_per_step`` GPUs; a task whose worker or node is lost is rerun up
        to ``max_retries`` times. The experiment directory must be on a file system every node mounts: each
        task writes its step there and reads the step it builds on."""
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be >= 1 (an int), got {jobs!r}")
        if executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
        check_max_retries(max_retries)
        if executor == "ray":  # before any work: what the workers cannot receive is named
            check_picklable({"train_fn": self.train_fn, **self.data.user_datasets()})
        steps = list(self.steps())
        bar = tqdm(steps, desc="lottery", unit="run", disable=None if self.progress else True)

        def on_done(step):
            bar.set_postfix(replicate=step[0], level=step[1], variant=step[2])
            bar.update(1)

        if executor == "ray":
            bar.update(sum(self.done(*s) for s in steps))
            run_on_ray(steps, self._run_step_tuple, dependency, self._done_tuple, address=ray_address,
                       num_cpus=cpus_per_step, num_gpus=gpus_per_step, max_retries=max_retries,
                       log_dir=self.dir / "ray_log",
                       on_done=on_done, priority=priority, object_store_memory=RAY_OBJECT_STORE)
        elif jobs > 1:
            bar.update(sum(self.done(*s) for s in steps))
            run_parallel(self, steps, jobs, on_done=on_done)
        else:
            for replicate, level, variant in bar:
                bar.set_postfix(replicate=replicate, level=level, variant=variant)
                if not self.done(replicate, level, variant):
                    self.run_step(replicate, level, variant)
        bar.close()

    def _run_step_tuple(self, step: tuple[int, int, str]) -> None:
        """A step on a Ray worker: the experiment directory the driver wrote must be visible here."""
        if not (self.dir / "config.json").exists():
            raise RuntimeError(f"the experiment directory {self.dir} is not visible on {socket.gethostname()}: with "
                               f"--executor ray the runs directory must be on a file system every node mounts")
        self.run_step(*step)

    def _done_tuple(self, step: tuple[int, int, str]) -> bool:
        return self.done(*step)

    def _dense(self, replicate: int) -> nn.Module:
        seed = self.cfg.seed + replicate
        directory = self.step_dir(replicate, 0, "dense")
        directory.mkdir(parents=True, exist_ok=True)
        model = self._model(seed)
        if not (directory / "init.safetensors").exists():
            save_model(directory / "init.safetensors", model)
        k = self.cfg.rewind_iteration

        def keep_rewind_point(m, optimizer, iteration):
            if iteration == k and not (directory / "rewind.safetensors").exists():
                save_model(directory / "rewind.safetensors", m)

        if k == 0 and not (directory / "rewind.safetensors").exists():
            save_model(directory / "rewind.safetensors", model)
        self._train(model, directory, seed, hooks=[keep_rewind_point])
        return model

    def trained(self, replicate: int, level: int, variant: str = "imp") -> nn.Module:
        """The trained (masked) model of a finished step."""
        directory = self.step_dir(replicate, level, variant)
        model = self._model(self.cfg.seed + replicate)
        state, _ = load_model_file(directory / "model.safetensors")
        load_state_dict(model, state)
        return model

    def run_step(self, replicate: int, level: int, variant: str) -> dict[str, Any]:
        if variant == "dense":
            self._dense(replicate)
            return read_json(self.step_dir(replicate, 0, "dense") / "summary.json")
        seed = self.cfg.seed + replicate
        directory = self.step_dir(replicate, level, variant)
        mask_file = directory / "mask.safetensors"
        if not mask_file.exists():
            masks = self._masks(replicate, level, variant)
            holder = nn.Module()
            for i, (name, mask) in enumerate(masks.items()):
                holder.register_buffer(f"m{i}", mask)
            directory.mkdir(parents=True, exist_ok=True)
            save_model(mask_file, holder, {"names": list(masks)})
        state, meta = load_model_file(mask_file)
        masks = _masks_from_file(mask_file, state, meta)
        model, start, cfg = self._reset(replicate, level, variant, seed)
        apply_masks(model, masks)
        enforce(model)
        self._train(model, directory, seed, start=start, cfg=cfg)
        return read_json(directory / "summary.json")

    def _masks(self, replicate: int, level: int, variant: str) -> dict[str, torch.Tensor]:
        # one-shot prunes the dense model to the level at once; every other variant starts from the
        # winning ticket's mask at this level (the random control keeps only its per-layer counts)
        masks = level_masks(self._source(replicate, level, variant), self.cfg, level)
        if variant == "random":
            return random_masks(masks, seed=10_000 * (self.cfg.seed + replicate) + level)
        return masks

    def _source(self, replicate: int, level: int, variant: str) -> nn.Module:
        """The trained model of the step this one starts from (`parallel.dependency`)."""
        r, source_level, source_variant = dependency((replicate, level, variant))
        if source_variant == "dense":
            return self.trained_dense(r)
        return self.trained(r, source_level, source_variant)

    def trained_dense(self, replicate: int) -> nn.Module:
        model = self._model(self.cfg.seed + replicate)
        return self._load(model, self.step_dir(replicate, 0, "dense") / "model.safetensors")

    def _reset(self, replicate: int, level: int, variant: str, seed: int):
        """(model with the variant's starting weights, start iteration, train config)."""
        dense_dir = self.step_dir(replicate, 0, "dense")
        k = self.cfg.rewind_iteration
        model = self._model(seed)
        if variant == "reinit":  # same mask, fresh random weights: the control for the initialization
            return self._model(seed + 7_919), 0, None
        if variant == "random" or self.cfg.reset in ("init", "rewind") or variant == "oneshot":
            start = 0 if self.cfg.reset == "init" else k
            source = "init.safetensors" if start == 0 else "rewind.safetensors"
            return self._load(model, dense_dir / source), start, None
        # lr_rewind and finetune keep the previous level's trained weights
        previous = self._source(replicate, level, "imp")
        weights = {k2: v for k2, v in previous.state_dict().items() if not k2.endswith(MASK_SUFFIX)}
        model.load_state_dict(weights, strict=False)
        if self.cfg.reset == "lr_rewind":
            return model, k, None
        final_lr = self.train_cfg.lr * lr_factor(self.train_cfg, self.total, self.total, self.per_epoch)
        return model, k, dataclasses.replace(self.train_cfg, lr=max(final_lr, 1e-6), lr_schedule="constant")


def _masks_from_file(path, state: dict, meta: dict) -> dict[str, torch.Tensor]:
    """A step's masks by parameter name; a file whose names and tensors disagree is a CheckpointError."""
    names = meta.get("names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: metadata field 'names' must be a list of parameter names")
    missing = [f"m{i}" for i in range(len(names)) if f"m{i}" not in state]
    if missing:
        raise CheckpointError(f"{path}: the masks {', '.join(missing[:3])} named in 'names' are missing")
    return {name: state[f"m{i}"] for i, name in enumerate(names)}
