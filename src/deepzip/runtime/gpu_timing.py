"""Side-by-side GPU timing: each callable captured in a CUDA graph (launch overhead out of all alike),
replayed in shuffled order, medians of CUDA-event times. Used by calibration and the GPU benchmark."""

from __future__ import annotations

import random
import statistics
from typing import Callable

import torch


def replayer(fn: Callable[[], object], calls: int, warmup: int = 3) -> tuple[Callable[[], None], bool]:
    """(run, graphed): ``run()`` performs ``calls`` calls of ``fn``, from one CUDA graph when ``fn`` can be
    captured (else eagerly, ``graphed`` False). ``fn`` is warmed up first on a side stream, so Triton's
    autotuning and the caching allocator's first allocations happen before the capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.inference_mode(), torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except Exception:  # not capturable (a host sync, a CPU op): time it as it runs
        torch.cuda.synchronize()

        def eager():
            with torch.inference_mode():
                for _ in range(calls):
                    fn()
        return eager, False
    return graph.replay, True


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15, calls: int = 20,
                seed: int = 0) -> dict[str, dict]:
    """Per name: ``seconds`` (median per call over the rounds) and ``graphed``. Each round replays every
    callable's graph once (``calls`` calls each), in a shuffled order, timed with CUDA events."""
    runs = {name: replayer(fn, calls) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    order, rng = list(fns), random.Random(seed)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for name in order:  # one untimed replay each: first replays upload the graph
        runs[name][0]()
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start.record()
            runs[name][0]()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / 1e3 / calls)
    return {name: {"seconds": statistics.median(t), "graphed": runs[name][1], "rounds": t} for name, t in times.items()}
