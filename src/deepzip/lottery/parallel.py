"""Run an experiment's steps in worker processes, each step as soon as the step it builds on is done.

A step needs one earlier step: level L of any variant starts from the masks (or weights) of level L-1's
winning ticket, level 1 and one-shot from the dense run. Everything else is independent, so with
``jobs`` workers the controls and one-shot runs of a level overlap the next level's winning ticket,
and replicates overlap each other. Each step still writes its own directory atomically, so a killed
parallel run resumes exactly like a serial one.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:  # annotations only: the experiment module imports this one
    from .experiment import Experiment

Step = tuple[int, int, str]


def dependency(step: Step) -> Step | None:
    """The step whose output ``step`` starts from (None for the dense run)."""
    replicate, level, variant = step
    if variant == "dense":
        return None
    if variant == "oneshot" or level == 1:
        return replicate, 0, "dense"
    return replicate, level - 1, "imp"


def priority(step: Step) -> tuple:
    # The winning-ticket chain is the critical path of every replicate: its steps go first.
    replicate, level, variant = step
    return (variant not in ("dense", "imp"), level, replicate)


def _worker(experiment: "Experiment", tasks, results) -> None:
    """A forked worker: runs the steps it is sent until it gets None (the experiment, with its data set,
    is inherited from the parent's memory, never pickled)."""
    torch.set_num_threads(1)  # one core per worker: the workers are the parallelism
    for step in iter(tasks.get, None):
        try:
            experiment.run_step(*step)
            results.put((step, None))
        except BaseException:  # noqa: BLE001  (reported to the parent, which stops the experiment)
            results.put((step, traceback.format_exc()))
            return


def run_parallel(experiment: "Experiment", steps: list[Step], jobs: int,
                 on_done: Callable[[Step], object] = lambda step: None) -> None:
    """Run the unfinished ``steps`` with ``jobs`` worker processes; ``on_done(step)`` after each."""
    finished = {s for s in steps if experiment.done(*s)}
    pending = sorted((s for s in steps if s not in finished), key=priority)
    # fork: workers share the parent's data set in memory instead of each unpickling a copy.
    context = multiprocessing.get_context("fork")
    tasks, results = context.Queue(), context.Queue()
    workers = [context.Process(target=_worker, args=(experiment, tasks, results), daemon=True)
               for _ in range(min(jobs, max(len(pending), 1)))]
    for worker in workers:
        worker.start()
    try:
        running: set[Step] = set()
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


def _next_result(results, workers) -> tuple[Step, str | None]:
    """The next finished step; a worker that died without reporting (killed, out of memory) is an error."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive()]
            if dead:
                raise RuntimeError(f"a worker process died (exit code {dead[0].exitcode}); rerun to resume") from None
