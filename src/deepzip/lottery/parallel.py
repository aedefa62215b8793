"""Run an experiment's steps in worker processes, each step as soon as the step it builds on is done.

A step needs one earlier step: level L of any variant starts from the masks (or weights) of level L-1's
winning ticket, level 1 and one-shot from the dense run. Everything else is independent, so with
``jobs`` workers the controls and one-shot runs of a level overlap the next level's winning ticket,
and replicates overlap each other. Each step still writes its own directory atomically, so a killed
parallel run resumes exactly like a serial one. The pool itself is `deepzip.distributed.run_in_processes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..distributed import run_in_processes

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


def run_parallel(experiment: "Experiment", steps: list[Step], jobs: int,
                 on_done: Callable[[Step], object] = lambda step: None) -> None:
    """Run the unfinished ``steps`` with ``jobs`` forked worker processes (the experiment, with its data
    set, is inherited from the parent's memory, never pickled); ``on_done(step)`` after each."""
    run_in_processes(steps, experiment._run_step_tuple, dependency, experiment._done_tuple, jobs,
                     on_done=on_done, priority=priority)
