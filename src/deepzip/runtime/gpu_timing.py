"""Side-by-side GPU timing: each callable captured in a CUDA graph (launch overhead out of all alike), or
called eagerly (launch overhead in, as a model run call by call pays it), in shuffled order, medians of
CUDA-event times. Used by calibration, the CUDA-graph wrapper and the GPU benchmark."""

from __future__ import annotations

import contextlib
import random
import statistics
from typing import Callable, Iterator

import torch


def warm_up(fn: Callable[[], object], calls: int = 3) -> None:
    """Run ``fn`` a few times on a side stream, as a CUDA-graph capture needs first: Triton's autotuning and
    the caching allocator's first allocations must not happen inside a capture."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(calls):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


@contextlib.contextmanager
def capturing(graph: torch.cuda.CUDAGraph) -> Iterator[None]:
    """``torch.cuda.graph(graph)`` on a capture stream of the current device (its default stream is made once,
    on whichever device was current then), with the caller's stream current again afterwards, also when the
    capture fails: ending an invalidated capture (a host sync in it) raises before torch.cuda.graph's exit
    restores the stream, which would leave its capture stream current for the rest of the thread."""
    stream = torch.cuda.current_stream()
    try:
        with torch.cuda.graph(graph, stream=torch.cuda.Stream()):
            yield
    finally:
        if torch.cuda.current_stream() != stream:
            torch.cuda.set_stream(stream)


def replayer(fn: Callable[[], object], calls: int, warmup: int = 3,
             graphs: bool = True) -> tuple[Callable[[], None], bool]:
    """(run, graphed): ``run()`` performs ``calls`` calls of ``fn``, from one CUDA graph when ``graphs`` and
    ``fn`` can be captured (else eagerly, Python's launch costs in, ``graphed`` False). ``fn`` is warmed up
    first (`warm_up`)."""
    with torch.inference_mode():
        warm_up(fn, warmup)

    def eager():
        with torch.inference_mode():
            for _ in range(calls):
                fn()
    if not graphs:
        return eager, False
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.inference_mode(), capturing(graph):
            for _ in range(calls):
                fn()
    except Exception:  # not capturable (a host sync, a CPU op): time it as it runs
        torch.cuda.synchronize()
        return eager, False
    return graph.replay, True


def wins(candidate: dict, baseline: dict, margin: float = 0.99, groups: int = 3) -> bool:
    """Whether ``candidate`` beat ``baseline`` (`interleaved`'s entries) by ``1 - margin`` in each of
    ``groups`` groups of consecutive rounds (group medians): a win in one lucky stretch is not enough."""
    return all(c < margin * b for c, b in zip(_group_medians(candidate["rounds"], groups),
                                              _group_medians(baseline["rounds"], groups)))


def _group_medians(rounds: list[float], groups: int) -> list[float]:
    size = max(len(rounds) // groups, 1)
    return [statistics.median(rounds[i:i + size]) for i in range(0, size * groups, size) if rounds[i:i + size]]


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 15, calls: int = 20,
                seed: int = 0, graphs: bool = True) -> dict[str, dict]:
    """Per name: ``seconds`` (median per call over the rounds) and ``graphed``. Each round replays every
    callable's graph once (``calls`` calls each), in a shuffled order, timed with CUDA events. With
    ``graphs`` False each round calls them eagerly instead: the events then span the host's launch work too
    (the GPU waits for it), which is what a model run call by call costs."""
    runs = {name: replayer(fn, calls, graphs=graphs) for name, fn in fns.items()}
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
