"""How many threads deepzip's parallel kernels use: as many as torch does (`torch.set_num_threads` governs both).

numba runs its parallel loops on its OpenMP layer, the same GNU OpenMP runtime (libgomp) that torch uses, so
the two share one pool of workers: a parallel kernel starts in ~2 us (numba's own workqueue pool took ~140 us
on the 2-core CI machine) and never competes for a core with torch workers still spinning after a torch op.
That layer sets the process-wide OpenMP thread count once, when it starts; `_start` puts torch's back.
GNU OpenMP is not fork-safe (numba ends a forked child that starts a parallel loop), so in a process forked
after the start the kernels run on one thread.
"""

from __future__ import annotations

import os

import numba
import torch

_started_in: int | None = None  # the process that started numba's threads


def _start() -> None:
    global _started_in
    if "NUMBA_THREADING_LAYER" not in os.environ:  # a user's own choice wins
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    wanted = torch.get_num_threads()
    numba.get_num_threads()  # starts numba's threading layer, which resets the OpenMP thread count
    torch.set_num_threads(wanted)
    _started_in = os.getpid()


def kernel_threads() -> int:
    """Threads for a parallel kernel now: torch's count, at most numba's pool; 1 in a forked child."""
    wanted = torch.get_num_threads()
    if wanted <= 1:
        return 1
    if _started_in is None:
        _start()
    if os.getpid() != _started_in:
        return 1
    count = min(wanted, numba.config.NUMBA_NUM_THREADS)
    if numba.get_num_threads() != count:
        numba.set_num_threads(count)
    return count
