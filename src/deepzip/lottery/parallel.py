"""Run an experiment's steps in worker processes, each step as soon as the step it builds on is done.

A step needs one earlier step: level L of any variant starts from the masks (or weights) of level L-1's
winning ticket, level 1 and one-shot from the dense run. Everything else is independent, so with
``jobs`` workers the controls and one-shot runs of a level overlap the next level's winning ticket,
and replicates overlap each other. Each step still writes its own directory atomically, so a killed
parallel run resumes exactly like a serial one.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .experiment import Experiment

Step = tuple[int, int, str]
_EXPERIMENT: "Experiment | None" = None  # set in the parent before the workers fork; they inherit it


def dependency(step: Step) -> Step | None:
    """The step whose output ``step`` starts from (None for the dense run)."""
    replicate, level, variant = step
    if variant == "dense":
        return None
    if variant == "oneshot" or level == 1:
        return replicate, 0, "dense"
    return replicate, level - 1, "imp"


def _priority(step: Step) -> tuple:
    # The winning-ticket chain is the critical path of every replicate: its steps go first.
    replicate, level, variant = step
    return (variant not in ("dense", "imp"), level, replicate)


def _run_in_worker(step: Step) -> Step:
    torch.set_num_threads(1)  # one core per worker: the workers are the parallelism
    _EXPERIMENT.run_step(*step)
    return step


def run_parallel(experiment: "Experiment", steps: list[Step], jobs: int, on_done=lambda step: None) -> None:
    """Run the unfinished ``steps`` with ``jobs`` worker processes; ``on_done(step)`` after each."""
    global _EXPERIMENT
    _EXPERIMENT = experiment
    finished = {s for s in steps if experiment.done(*s)}
    pending = sorted((s for s in steps if s not in finished), key=_priority)
    # fork: workers share the parent's data set in memory instead of each unpickling a copy.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        running = {}
        while pending or running:
            for step in list(pending):
                if len(running) >= jobs:
                    break
                needed = dependency(step)
                if needed is None or needed in finished:
                    running[pool.submit(_run_in_worker, step)] = step
                    pending.remove(step)
            if not running:
                raise RuntimeError(f"steps {pending[:3]} wait on steps that are neither done nor scheduled")
            completed, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in completed:
                step = running.pop(future)
                future.result()  # a worker's error stops the experiment here, with its traceback
                finished.add(step)
                on_done(step)
