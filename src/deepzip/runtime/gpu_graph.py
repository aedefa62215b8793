"""The whole converted model as one CUDA graph (``fuse`` on cuda): what the chain compiler is on the CPU.

Called layer by layer, a model on the GPU pays Python's launch work for every kernel: about as much as a
small layer's whole GPU time, and more for a Triton kernel than for cuBLAS (the last H100 run measured the
LeNets at 0.29-0.77x dense when called eagerly, against 1.14-1.46x replayed from a graph). A CUDA graph
records the model's launches once and replays them in one call. `GraphedModel` keeps one graph per call
signature (tensor shapes and dtypes, other arguments' values; the example's at once, any other from its
second call, so a Hugging Face model called with its attention mask by keyword gets one too): the call's
tensors are copied into the graph's own buffers, the graph replayed, the output cloned out of it (so a
later call does not overwrite what an earlier one returned); a call no graph can take runs through the
per-layer model. `plan` says whether the model can be captured at all (a host sync or a CPU op in its
forward cannot be), which decides how calibration times it: replayed from graphs when the result will be
a graph, eagerly (launch work in) when it will not, so a kernel is kept only where it wins as it will run.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn
from torch.utils import _pytree as pytree

from . import gpu_timing

DIFF_TOLERANCE = 1e-4  # relative to the output's largest magnitude (at least 1), as the CPU's chain


def capture(fn: Callable[[], object]) -> tuple[Callable[[], None], object]:
    """(replay, output): ``fn`` recorded in a CUDA graph after a warm-up (`gpu_timing.warm_up`); each
    ``replay()`` reruns it on the GPU, rewriting ``output``'s tensors in place. Raises what the capture
    raised when ``fn`` cannot be captured."""
    graph = torch.cuda.CUDAGraph()
    gpu_timing.warm_up(fn)
    with gpu_timing.capturing(graph):
        output = fn()
    return graph.replay, output


def _unsupported_output(output: object) -> str | None:
    """Why a graph's output cannot be handed out safely (cloned per call), or None: its tensors must all be
    reachable as leaves of PyTorch's pytree (a tensor, tuples, lists, dicts, Hugging Face model outputs)."""
    leaves = pytree.tree_leaves(output)
    odd = [type(leaf).__name__ for leaf in leaves if not isinstance(leaf, (torch.Tensor, int, float, bool, str, type(None)))]
    if odd:
        return f"its output holds {', '.join(sorted(set(odd)))}, not tensors in tuples, lists or dicts"
    if not any(isinstance(leaf, torch.Tensor) for leaf in leaves):
        return "its output holds no tensor"
    return None


MAX_GRAPHS = 8  # call signatures kept captured (the least recently used dropped, then run per layer): each holds
# its buffers and pool
MAX_SEEN = 1024  # signatures remembered as seen once (forgotten all at once beyond this)


def _describe(name, value, device: torch.device):
    """One argument's part of a call's signature, or None when a graph cannot take it: a tensor by shape and
    dtype (on ``device``, no autograd wanted), a plain value (None, bool, int, float, str) by type and value."""
    if isinstance(value, torch.Tensor):
        if value.device != device or (value.requires_grad and torch.is_grad_enabled()):
            return None
        return name, tuple(value.shape), value.dtype
    if value is None or isinstance(value, (bool, int, float, str)):
        return name, type(value), value
    return None


class _Graph:
    """One captured call: its static arguments (the call's tensors are copied in), the graph, its output
    (cloned out per call), and an event that orders calls from other streams."""

    def __init__(self, model: nn.Module, args: tuple, kwargs: dict, device: torch.device):
        # plain tensors, also when the first call comes in inference mode: later calls copy into the input
        # buffers, and replays rewrite the output buffers, outside inference mode too. On the input's device:
        # captured from another device's stream, its kernels would run outside the graph (an empty graph)
        on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with on_device, torch.inference_mode(False), torch.no_grad():
            self.args = [self._static(a) for a in args]
            self.kwargs = {k: self._static(v) for k, v in kwargs.items()}
            self.replay, self.output = capture(lambda: model(*self.args, **self.kwargs))
        why = _unsupported_output(self.output)
        if why is not None:
            raise ValueError(f"{type(model).__name__} cannot run from a CUDA graph: {why}")
        self.device = device
        self.done = torch.cuda.Event() if device.type == "cuda" else None

    @staticmethod
    def _static(value):
        if not isinstance(value, torch.Tensor):
            return value
        static = torch.empty_like(value, memory_format=torch.contiguous_format)
        static.copy_(value)
        return static

    def run(self, args: tuple, kwargs: dict):
        stream = torch.cuda.current_stream(self.device) if self.done is not None else None
        if stream is not None:  # a call on another stream must not overwrite the inputs before the last one read them
            stream.wait_event(self.done)
        for static, value in (*zip(self.args, args), *((self.kwargs[k], v) for k, v in kwargs.items())):
            if isinstance(value, torch.Tensor):
                static.copy_(value)
        self.replay()
        output = pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.output)
        if stream is not None:
            self.done.record(stream)
        return output


class GraphedModel(nn.Module):
    """A model converted for CUDA, run from CUDA graphs, one per call signature (each tensor argument's shape
    and dtype, the other arguments' values): the example's signature is captured on its first call, any other
    on its second (a shape seen once runs per layer: capturing costs a few calls), at most `MAX_GRAPHS` kept
    (a signature whose graph was dropped for room runs per layer from then on, so that signatures taking turns
    do not capture on every call).
    A call copies its tensors into the graph's buffers, replays it and returns a clone of its output. Calls the
    graphs cannot take (autograd, a tensor on another device, an argument that is not a tensor or a plain
    value, a signature whose capture failed) and calls inside a caller's own graph capture (so the per-layer
    model is captured into the caller's graph) run ``model``, the per-layer model (a submodule; its state_dict
    keys are under ``model.``; attributes the wrapper lacks are its). The graphs are captured again after
    ``.to()``, a copy, pickling or ``load_state_dict`` of the wrapper (made on ``model`` itself, those leave
    the graphs reading the old buffers: change the model through the wrapper)."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        super().__init__()
        self.model = model
        self.input_shape, self.input_dtype = tuple(example.shape), example.dtype
        self._planned = (_describe(0, example, example.device),)
        self._graphs: OrderedDict = OrderedDict()  # signature -> _Graph, least recently used first
        self._seen: set = set()  # signatures called once
        self._failed: set = set()  # signatures whose capture failed or whose graph was dropped: per layer
        self._lock = threading.Lock()

    def forward(self, *args, **kwargs):
        key = self._signature(args, kwargs)
        if key is not None:
            with self._lock:  # one set of static buffers per graph: calls from several threads take turns
                graph = self._graph_for(key, args, kwargs)
                if graph is not None:
                    return graph.run(args, kwargs)
        return self.model(*args, **kwargs)

    def _signature(self, args: tuple, kwargs: dict) -> tuple | None:
        device = self._device()
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        parts = tuple(_describe(name, value, device) for name, value in (*enumerate(args), *sorted(kwargs.items())))
        if None in parts or not any(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values())):
            return None
        return parts

    def _graph_for(self, key: tuple, args: tuple, kwargs: dict) -> _Graph | None:
        """The graph for ``key``, captured now if it is due; None when this call runs per layer."""
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            return graph
        if key in self._failed:
            return None
        if key != self._planned and key not in self._seen:
            if len(self._seen) >= MAX_SEEN:
                self._seen.clear()
            self._seen.add(key)
            return None
        try:
            graph = _Graph(self.model, args, kwargs, self._device())
        except Exception:  # noqa: BLE001 - a call must not fail for want of a graph: it runs per layer, as
            self._per_layer(key)  # without graphs (plan() tests the example's capture on its own, and says why)
            return None
        self._graphs[key] = graph
        while len(self._graphs) > MAX_GRAPHS:  # a dropped signature is not captured again: with more than
            dropped, _ = self._graphs.popitem(last=False)  # MAX_GRAPHS in turn, each call would capture
            self._per_layer(dropped)
        return graph

    def _per_layer(self, key: tuple) -> None:
        if len(self._failed) >= MAX_SEEN:
            self._failed.clear()
        self._failed.add(key)

    def captured(self, example: torch.Tensor) -> bool:
        """Whether the graph for ``example``'s signature is captured (after a call with it)."""
        return self._signature((example,), {}) in self._graphs

    def __getattr__(self, name: str):
        """What the wrapper does not have, from the model (a Hugging Face model's ``config``, say), as
        torch.compile's wrapper does."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model" or "model" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["model"], name)

    def _device(self) -> torch.device:
        for tensor in self.model.buffers():
            return tensor.device
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def _drop_graphs(self) -> None:
        self._graphs, self._seen, self._failed = OrderedDict(), set(), set()

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): the graphs' buffers are the old ones
        self._drop_graphs()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # a layer's launch arguments may change (sliced groups)
        self._drop_graphs()
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # deepcopy and pickle: graphs and a lock are not copied; captured anew
        state = super().__getstate__()
        state["_graphs"], state["_seen"], state["_failed"], state["_lock"] = OrderedDict(), set(), set(), None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def extra_repr(self) -> str:
        return (f"CUDA graphs: planned for input {self.input_shape} {self.input_dtype}; "
                f"{len(self._graphs)} captured, at most {MAX_GRAPHS}")


def plan(model: nn.Module, example: torch.Tensor | None, fuse: str) -> tuple[bool, str]:
    """(graphs, reason): whether ``model`` will run from a CUDA graph of ``example`` (so calibration times
    graph replays), or why not (then it times eager calls). ``fuse='on'`` raises when it cannot be captured."""
    if fuse == "off":
        return False, "fuse='off'"
    if example is None:
        return False, "no example input (the graph is captured for the example's shape)"
    try:
        _Graph(model, (example,), {}, example.device)
    except Exception as exc:  # noqa: BLE001 - any failure to capture means: run eagerly (or, with 'on', say why)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        reason = f"the model cannot be captured in a CUDA graph ({_first_error(exc)})"
        if fuse == "on":
            raise ValueError(f"fuse='on': {reason}; use fuse='auto' or 'off'") from exc
        return False, reason
    return True, "capturable"


def _first_error(exc: BaseException) -> str:
    """What made a capture fail, on one line, the first error first: ending an invalidated capture raises an
    error of its own ("operation failed due to a previous error during capture") while the first one is
    handled, and CUDA's messages go on for lines about asynchronous reporting."""
    def line(error: BaseException) -> str:
        lines = str(error).strip().splitlines()
        return f"{type(error).__name__}: {lines[0] if lines else ''}"

    first = exc
    while first.__context__ is not None and first.__cause__ is None:
        first = first.__context__
    return line(exc) if first is exc else f"{line(first)}; then {line(exc)}"


def _difference(graphed: GraphedModel, model: nn.Module, inputs: list[torch.Tensor]) -> tuple[float, float]:
    """(largest absolute difference of ``graphed``'s output tensors from ``model``'s, largest magnitude of
    ``model``'s) over ``inputs``."""
    diff = scale = 0.0
    with torch.no_grad():
        for x in inputs:
            for got, want in zip(pytree.tree_leaves(graphed(x)), pytree.tree_leaves(model(x))):
                if isinstance(got, torch.Tensor) and got.numel():
                    want = want.double()
                    diff = max(diff, (got.double() - want).abs().max().item())
                    scale = max(scale, want.abs().max().item())
    return diff, scale


def fuse(model: nn.Module, example: torch.Tensor | None, fuse: str, graphs: bool, reason: str,
         rounds: int = 15, calls: int = 20) -> tuple[nn.Module, dict]:
    """(result, info): ``model`` wrapped in a `GraphedModel` (``fuse='on'``, or ``'auto'`` when replaying the
    graph beats calling the model by 1% in each of 3 groups of rounds, both timed eagerly as a caller runs
    them), else ``model``; ``info`` as `runtime.fusion` reports it (``graph_s`` / ``layers_s`` when timed,
    ``max_abs_diff`` of the graph against the per-layer model on the example and on it rolled by one along its
    last axis: a graph that does not replay the model, only gives back what its capture computed, differs
    there). A graph that differs beyond fp32 rounding (as the CPU's chain is held to) is not kept, and with
    ``fuse='on'`` it is an error."""
    if not graphs:
        return model, {"fused": False, "reason": reason}
    graphed = GraphedModel(model, example).eval()
    diff, scale = _difference(graphed, model, [example, example.roll(1, -1) if example.dim() else example])
    if not graphed.captured(example):  # (plan() captured it before calibration; now, with its layers, it failed)
        why = "the calibrated model could not be captured in a CUDA graph"
        if fuse == "on":
            raise ValueError(f"fuse='on': {why}; use fuse='auto' or 'off'")
        return model, {"fused": False, "reason": why}
    info = {"fused": True, "reason": "fuse='on'", "kind": "cuda graph", "max_abs_diff": diff}
    if diff > DIFF_TOLERANCE * max(scale, 1.0):
        why = f"replaying the CUDA graph differs from the per-layer model by {diff:.2e}"
        if fuse == "on":
            raise ValueError(f"fuse='on': {why}")
        info.update(fused=False, reason=why)
        return model, info
    if fuse == "on":
        return graphed, info
    timed = gpu_timing.interleaved({"graph": lambda: graphed(example), "layers": lambda: model(example)},
                                   rounds, calls, graphs=False)
    info.update(graph_s=timed["graph"]["seconds"], layers_s=timed["layers"]["seconds"])
    if gpu_timing.wins(timed["graph"], timed["layers"]):
        info["reason"] = "one CUDA-graph replay beat calling the per-layer model by 1% in each group of rounds"
        return graphed, info
    info.update(fused=False, reason="replaying a CUDA graph was not faster than calling the per-layer model")
    return model, info

