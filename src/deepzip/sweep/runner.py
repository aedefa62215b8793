"""Run a sparse-training sweep: every unfinished run of the grid, serially, in forked worker processes
(``jobs``) or as Ray tasks (``executor="ray"``); a finished run is never recomputed.

Layout of a sweep directory:
    config.json              the TrainConfig, the grid (SweepConfig) and the shared method options
    sparse_<hash>/           one ``deepzip sparse-train`` run directory per (method, sparsity, seed),
                             named as that command names it (checkpoints, summary.json, sparse.json)
    ray_log/starts/          with the Ray executor: one marker per run start (node, process, seconds)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..checkpoint import atomic_write_text
from ..config import to_dict
from ..data import DataSplits
from ..distributed import (LOCAL_OBJECT_STORE, MAX_RETRIES, check_max_retries, check_picklable, run_in_processes,
                           run_on_ray)
from ..models import build
from ..train import TrainConfig
from ..train.sparse_train import sparse_train
from . import results
from .config import Key, SweepConfig, plan


def no_dependency(key: Key) -> None:
    """Every run of a sweep is independent (a module-level function: Ray pickles it by reference)."""
    return None


class Sweep:
    """One sweep directory: trains the runs that are missing, loads what is there.

    ``options`` are `SparseTrainConfig` options shared by the grid's runs (e.g. ``{"update_interval":
    100}``); each applies to the methods that have it. With ``run(executor="ray")`` the data set is
    pickled for the workers: a custom Dataset must be picklable (defined at module level), and a
    TypeError names one that is not before any run starts."""

    def __init__(self, directory: str | Path, train_cfg: TrainConfig, grid: SweepConfig, data: DataSplits,
                 options: dict[str, Any] | None = None, progress: bool = True):
        self.runs = plan(train_cfg, grid, options)  # every setting checked before anything is written
        self.by_key = {run.key: run for run in self.runs}
        self.dir, self.train_cfg, self.grid, self.data = Path(directory), train_cfg, grid, data
        self.options, self.progress = dict(options or {}), progress
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "config.json", json.dumps(
            {"train": to_dict(train_cfg), "sweep": to_dict(grid), "options": self.options}, indent=2) + "\n")

    def steps(self) -> list[Key]:
        """Every (method, sparsity, seed) of the grid, in order."""
        return [run.key for run in self.runs]

    def run_dir(self, key: Key) -> Path:
        return results.run_dir(self.dir, self.by_key[key])

    def done(self, key: Key) -> bool:
        return results.done(self.dir, self.by_key[key])

    def run_step(self, key: Key) -> dict[str, Any]:
        """Train (or resume, or load) one run; returns its sparse summary. A worker that cannot see the
        sweep directory the driver wrote fails at once, naming the requirement."""
        if not (self.dir / "config.json").exists():
            raise RuntimeError(f"the sweep directory {self.dir} is not visible on {socket.gethostname()}: with "
                               f"--executor ray the runs directory must be on a file system every node mounts")
        run = self.by_key[key]
        model = build(run.train.model, self.data.input_shape, self.data.num_classes, seed=run.train.seed)
        description = {"model": run.train.model, "input_shape": list(self.data.input_shape),
                       "num_classes": self.data.num_classes, "sparse_config": run.sparse.__dict__}
        _, summary = sparse_train(model, self.data, run.train, run.sparse.method_config(seed=run.train.seed),
                                  run_dir=self.run_dir(key), resume=True, description=description, progress=False)
        return summary

    def run(self, jobs: int = 1, executor: str = "local", ray_address: str | None = None, cpus_per_step: float = 1,
            gpus_per_step: float = 0, max_retries: int = MAX_RETRIES) -> None:
        """Run every unfinished run; ``jobs`` > 1 runs that many at once in forked processes (one core
        each). ``executor="ray"``: each run is a Ray task (``deepzip.distributed.run_on_ray``) on the
        cluster at ``ray_address`` (default: a Ray instance of this machine's own) with ``cpus_per_step``
        CPUs and ``gpus_per_step`` GPUs, rerun up to ``max_retries`` times if its worker or node is lost;
        the sweep directory must then be on a file system every node mounts."""
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be >= 1 (an int), got {jobs!r}")
        if executor not in ("local", "ray"):
            raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
        check_max_retries(max_retries)
        if executor == "ray":  # before any work: what the workers cannot receive is named
            check_picklable(self.data.user_datasets())
        steps = self.steps()
        bar = tqdm(steps, desc="sweep", unit="run", disable=None if self.progress else True)

        def on_done(key: Key) -> None:
            bar.set_postfix(method=key[0], sparsity=key[1], seed=key[2])
            bar.update(1)

        if executor == "ray":
            bar.update(sum(self.done(k) for k in steps))
            run_on_ray(steps, self.run_step, no_dependency, self.done, address=ray_address, num_cpus=cpus_per_step,
                       num_gpus=gpus_per_step, max_retries=max_retries, log_dir=self.dir / "ray_log",
                       on_done=on_done, object_store_memory=LOCAL_OBJECT_STORE)
        elif jobs > 1:
            bar.update(sum(self.done(k) for k in steps))
            run_in_processes(steps, self.run_step, no_dependency, self.done, jobs, on_done=on_done)
        else:
            for key in steps:
                if not self.done(key):
                    self.run_step(key)
                on_done(key)
        bar.close()

    def records(self) -> list[dict[str, Any]]:
        """One record per finished run (`results.records`)."""
        return results.records(self.dir, self.runs)

    def status(self) -> str:
        return results.status(self.dir, self.runs)

