"""Run a DAG of resumable steps as Ray tasks, on one machine or a cluster (the ``ray`` extra).

The executors know nothing about lottery tickets: they take the steps, ``run_step(step)`` (does the
work and writes the step's output to storage every node sees), ``done(step)`` (is the output there?) and
``dependency(step)`` (the one earlier step it builds on, or None). Any workflow made of such steps (the
lottery experiment, sparse-training sweeps) runs on them unchanged: `run_in_processes` on this
machine's cores (forked workers), `run_on_ray` on a Ray cluster.

- Each unfinished step is one Ray task; a step whose dependency is unfinished gets that dependency's
  ObjectRef as an argument, so Ray starts it only after the dependency has finished (a chain runs in
  order, everything else fans out beside it).
- A task first asks ``done(step)``: a retried task (its worker or node was lost: ``max_retries``) or a
  rerun of the whole sweep skips every step whose output exists. Nothing finished is recomputed.
- Each task that really starts a step writes a marker ``<log_dir>/starts/<step>.<unique>.json`` first
  (and its time, node and process when it ends), so a sweep's history can be audited and timed.
- Resources per task: ``num_cpus`` / ``num_gpus`` (Ray gives a GPU task its own ``CUDA_VISIBLE_DEVICES``).
- What a task runs is pickled (cloudpickle) once and sent to the workers: ``run_step``, ``done`` and all
  they hold, a user's training function and data set included. `check_picklable` names the object that
  cannot be pickled before any work starts. Forked local workers inherit everything: nothing is pickled.

Ray is imported only when a sweep runs: importing this module never needs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import multiprocessing
import os
import pickle
import queue
import socket
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

import torch

from .errors import DeepzipError

MAX_RETRIES = 3  # default: how often Ray reruns a task whose worker or node was lost
LOCAL_OBJECT_STORE = 200 * 2**20  # a Ray instance started for one sweep holds only its settings and data
INSTALL_HINT = "Ray is not installed; install it with: pip install 'deepzip[ray]'  (or: pip install 'ray>=2.9')"


class RayMissing(DeepzipError):
    """``--executor ray`` without Ray installed."""


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _ray():
    if not ray_available():
        raise RayMissing(INSTALL_HINT)
    return importlib.import_module("ray")


def check_max_retries(max_retries: object) -> int:
    """``max_retries`` must be an int >= 0 (Ray's -1, retry forever, is refused: a step that keeps
    killing its worker would never end)."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise TypeError(f"max_retries must be an int >= 0, got {type(max_retries).__name__} {max_retries!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    return max_retries


def _dumps(obj: object) -> bytes:
    # Ray pickles with its own cloudpickle (functions and lambdas by value); plain pickle without Ray
    if ray_available():
        return importlib.import_module("ray.cloudpickle").dumps(obj)
    return pickle.dumps(obj)


def check_picklable(objects: dict[str, object]) -> None:
    """Raise TypeError naming the first of ``objects`` ({what: object}) that cannot be pickled for the
    Ray workers, and how to fix it. Call it before any work starts; None values are skipped."""
    for what, obj in objects.items():
        if obj is None:
            continue
        try:
            _dumps(obj)
        except Exception as exc:  # noqa: BLE001  (pickling raises TypeError, PicklingError, AttributeError, ...)
            raise TypeError(
                f"{what} ({obj!r:.80}) cannot be pickled, and with --executor ray it must be sent to every worker: "
                f"{type(exc).__name__}: {exc}. Define it at module level in a module the workers can import, and "
                f"keep open files, locks, sockets, generators and live connections out of it (open them inside "
                f"the function); or use the local executor (--jobs N forks: nothing is pickled)") from None


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
               num_gpus: float = 0, max_retries: int = MAX_RETRIES, log_dir: str | Path | None = None,
               on_done: Callable[[Any], object] = lambda step: None, priority: Callable[[Any], Any] | None = None,
               object_store_memory: int | None = None) -> dict:
    """Run the unfinished ``steps`` as Ray tasks; ``on_done(step)`` on the driver as each one finishes.

    ``run_step`` and ``done`` are pickled once (``ray.put``) and run on the workers; ``log_dir`` must be
    on storage every node sees (like the steps' outputs). ``priority`` orders the submissions (a key;
    every step must come after its dependency). ``max_retries``: how often a task whose worker or node
    was lost is rerun (a step that raises is not retried). Returns {step: its start marker's record} for
    the steps this call ran. A failed step raises RuntimeError naming it; finished steps stay finished."""
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus} and {num_gpus}")
    check_max_retries(max_retries)
    ray = _ray()
    finished, pending = _split(steps, done, priority)
    if not pending:
        return {}
    started = _connect(ray, address, object_store_memory)
    try:
        _check_fits(ray, num_cpus, num_gpus)
        try:  # before any task: what cannot be pickled is named (the workflows name their users' objects first)
            functions = ray.put((run_step, done, str(log_dir) if log_dir is not None else None))
        except Exception:
            check_picklable({"run_step": run_step, "done": done})
            raise
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


# ------------------------------------------------------------------------ this machine's processes
def _process_worker(run_step: Callable[[Any], object], tasks, results) -> None:
    """A forked worker: runs the steps it is sent until it gets None (``run_step`` and all it holds, the
    data set included, are inherited from the parent's memory, never pickled)."""
    torch.set_num_threads(1)  # one core per worker: the workers are the parallelism
    for step in iter(tasks.get, None):
        try:
            run_step(step)
            results.put((step, None))
        except BaseException:  # noqa: BLE001  (reported to the parent, which stops the sweep)
            results.put((step, traceback.format_exc()))
            return


def _split(steps: Iterable, done: Callable[[Any], bool], priority: Callable[[Any], Any] | None) -> tuple[set, list]:
    """(the finished steps, the others in ``priority`` order when one is given)."""
    steps = list(steps)
    finished = {s for s in steps if done(s)}
    pending = [s for s in steps if s not in finished]
    if priority is not None:
        pending.sort(key=priority)
    return finished, pending


def run_in_processes(steps: Iterable, run_step: Callable[[Any], object], dependency: Callable[[Any], Any],
                     done: Callable[[Any], bool], jobs: int, on_done: Callable[[Any], object] = lambda step: None,
                     priority: Callable[[Any], Any] | None = None) -> None:
    """Run the unfinished ``steps`` with ``jobs`` forked worker processes, each step as soon as its
    dependency is finished; ``on_done(step)`` after each. A failed step raises RuntimeError naming it."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be >= 1 (an int), got {jobs!r}")
    finished, pending = _split(steps, done, priority)
    if not pending:
        return
    # fork: workers share the parent's data set in memory instead of each unpickling a copy.
    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    workers = [context.Process(target=_process_worker, args=(run_step, tasks, results), daemon=True)
               for _ in range(min(jobs, len(pending)))]
    for worker in workers:
        worker.start()
    try:
        running: set = set()
        while pending or running:
            for step in list(pending):
                if len(running) >= len(workers):
                    break
                needed = dependency(step)
                if needed is None or needed in finished:
                    tasks.put(step)
                    running.add(step)
                    pending.remove(step)
            if not running:
                raise RuntimeError(f"steps {pending[:3]} wait on steps that are neither done nor scheduled")
            step, error = _next_result(results, workers)
            running.discard(step)
            if error is not None:
                raise RuntimeError(f"step {step} failed in a worker process:\n{error}")
            finished.add(step)
            on_done(step)
    finally:
        for worker in workers:
            tasks.put(None)
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()


def _next_result(results, workers) -> tuple[Any, str | None]:
    """The next finished step; a worker that died without reporting (killed, out of memory) is an error."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                raise RuntimeError(f"a worker process died (exit code {dead[0].exitcode}); rerun to resume") from None
