"""Run a DAG of resumable steps as Ray tasks, on one machine or a cluster (the ``ray`` extra).

The executor knows nothing about lottery tickets: it takes the steps, ``run_step(step)`` (does the work
and writes the step's output to storage every node sees), ``done(step)`` (is the output there?) and
``dependency(step)`` (the one earlier step it builds on, or None). Any workflow made of such steps (the
lottery experiment today; sparse-training sweeps later) can run on it unchanged.

- Each unfinished step is one Ray task; a step whose dependency is unfinished gets that dependency's
  ObjectRef as an argument, so Ray starts it only after the dependency has finished (a chain runs in
  order, everything else fans out beside it).
- A task first asks ``done(step)``: a retried task (its worker or node was lost: ``max_retries``) or a
  rerun of the whole sweep skips every step whose output exists. Nothing finished is recomputed.
- Each task that really starts a step writes a marker ``<log_dir>/starts/<step>.<unique>.json`` first
  (and its time, node and process when it ends), so a sweep's history can be audited and timed.
- Resources per task: ``num_cpus`` / ``num_gpus`` (Ray gives a GPU task its own ``CUDA_VISIBLE_DEVICES``).

Ray is imported only when a sweep runs: importing this module never needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

from .errors import DeepzipError

INSTALL_HINT = "Ray is not installed; install it with: pip install 'deepzip[ray]'  (or: pip install 'ray>=2.9')"


class RayMissing(DeepzipError):
    """``--executor ray`` without Ray installed."""


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _ray():
    if not ray_available():
        raise RayMissing(INSTALL_HINT)
    return importlib.import_module("ray")


def step_name(step: Hashable) -> str:
    return "_".join(str(part) for part in step) if isinstance(step, tuple) else str(step)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload) + "\n")
    os.replace(tmp, path)


def _execute(functions: tuple, step, *_after) -> tuple[Any, dict | None]:
    """The Ray task: run ``step`` unless its output exists. ``_after`` are the dependencies' results,
    passed only so that Ray orders the tasks."""
    run_step, done, log_dir = functions
    if done(step):
        return step, None
    record = {"step": list(step) if isinstance(step, tuple) else step, "host": socket.gethostname(),
              "node": _ray().get_runtime_context().get_node_id(), "pid": os.getpid(), "start": time.time()}
    marker = None
    if log_dir is not None:
        starts = Path(log_dir) / "starts"
        starts.mkdir(parents=True, exist_ok=True)
        marker = starts / f"{step_name(step)}.{uuid.uuid4().hex[:12]}.json"
        _write_json(marker, record)
    run_step(step)
    record["end"] = time.time()
    record["seconds"] = record["end"] - record["start"]
    if marker is not None:
        _write_json(marker, record)
    return step, record


def _connect(ray, address: str | None, object_store_memory: int | None) -> bool:
    """Connect to (or start) Ray; True if this call started it (and so should shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:  # a Ray instance of this machine's own, for as long as the sweep runs
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=object_store_memory)
    return True


def _check_fits(ray, num_cpus: float, num_gpus: float) -> None:
    """A task no node can hold would wait forever: say so instead."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= num_cpus and r.get("GPU", 0) >= num_gpus for r in nodes):
        have = "; ".join(f"{r.get('CPU', 0):g} CPU, {r.get('GPU', 0):g} GPU" for r in nodes) or "no live nodes"
        raise RuntimeError(f"no node of the Ray cluster has {num_cpus:g} CPU and {num_gpus:g} GPU for a step "
                           f"(its nodes: {have}); lower --cpus-per-step / --gpus-per-step or add such a node")


def run_on_ray(steps: Iterable, run_step: Callable[[Any], object], dependency: Callable[[Any], Any],
               done: Callable[[Any], bool], *, address: str | None = None, num_cpus: float = 1,
               num_gpus: float = 0, max_retries: int = 3, log_dir: str | Path | None = None,
               on_done: Callable[[Any], object] = lambda step: None, priority: Callable[[Any], Any] | None = None,
               object_store_memory: int | None = None) -> dict:
    """Run the unfinished ``steps`` as Ray tasks; ``on_done(step)`` on the driver as each one finishes.

    ``run_step`` and ``done`` are pickled once (``ray.put``) and run on the workers; ``log_dir`` must be
    on storage every node sees (like the steps' outputs). ``priority`` orders the submissions (a key;
    every step must come after its dependency). Returns {step: its start marker's record} for the steps
    this call ran. A failed step raises RuntimeError naming it; finished steps stay finished."""
    if num_cpus < 0 or num_gpus < 0 or max_retries < 0:
        raise ValueError("num_cpus, num_gpus and max_retries must be >= 0")
    ray = _ray()
    steps = list(steps)
    finished = {s for s in steps if done(s)}
    pending = [s for s in steps if s not in finished]
    if priority is not None:
        pending.sort(key=priority)
    if not pending:
        return {}
    started = _connect(ray, address, object_store_memory)
    try:
        _check_fits(ray, num_cpus, num_gpus)
        functions = ray.put((run_step, done, str(log_dir) if log_dir is not None else None))
        task = ray.remote(_execute).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                                            retry_exceptions=False)
        refs: dict = {}
        for step in pending:
            needed = dependency(step)
            if needed is None or needed in finished:
                refs[step] = task.remote(functions, step)
            elif needed in refs:
                refs[step] = task.remote(functions, step, refs[needed])
            else:
                raise RuntimeError(f"step {step} needs step {needed}, which is neither done nor scheduled "
                                   f"before it")
        by_ref = {ref: step for step, ref in refs.items()}
        records: dict = {}
        waiting = list(by_ref)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                step = by_ref[ref]
                try:
                    _, record = ray.get(ref)
                except Exception as exc:  # noqa: BLE001  (a task error: name the step, keep the rest)
                    for other in waiting:
                        ray.cancel(other)
                    raise RuntimeError(f"step {step} failed on a Ray worker; finished steps are kept, rerun to "
                                       f"resume:\n{exc}") from None
                if record is not None:
                    records[step] = record
                on_done(step)
        return records
    finally:
        if started:
            ray.shutdown()
