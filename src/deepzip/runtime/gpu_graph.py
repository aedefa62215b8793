"""The whole converted model as one CUDA graph (``fuse`` on cuda): what the chain compiler is on the CPU.

Called layer by layer, a model on the GPU pays Python's launch work for every kernel: about as much as a
small layer's whole GPU time, and more for a Triton kernel than for cuBLAS (the last H100 run measured the
LeNets at 0.29-0.77x dense when called eagerly, against 1.14-1.46x replayed from a graph). A CUDA graph
records the model's launches once and replays them in one call. `GraphedModel` does that for the example's
input: the input is copied into the graph's own buffer, the graph replayed, the output cloned out of it
(so a later call does not overwrite what an earlier one returned); any other input runs through the
per-layer model. `plan` says whether the model can be captured at all (a host sync or a CPU op in its
forward cannot be), which decides how calibration times it: replayed from graphs when the result will be
a graph, eagerly (launch work in) when it will not, so a kernel is kept only where it wins as it will run.
"""

from __future__ import annotations

import contextlib
import threading
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


class GraphedModel(nn.Module):
    """A model converted for CUDA and one CUDA graph of it, for inputs like its example: a call with one
    tensor of the example's shape and dtype, on the model's device, replays the graph; any other call runs
    ``model``, the per-layer model (a submodule; its state_dict keys are under ``model.``). The graph is
    captured on the first such call and captured again after ``.to()``, a copy, pickling or
    ``load_state_dict`` of the wrapper (made on ``model`` itself, those leave the graph reading the old
    buffers: change the model through the wrapper). Inside a caller's own graph capture the per-layer model runs, so it is captured
    into the caller's graph."""

    def __init__(self, model: nn.Module, example: torch.Tensor):
        super().__init__()
        self.model = model
        self.input_shape, self.input_dtype = tuple(example.shape), example.dtype
        self._graph: tuple | None = None  # (replay, static input, static output, done event): made on first use
        self._lock = threading.Lock()

    def forward(self, *args, **kwargs):
        if len(args) != 1 or kwargs or not self._planned(args[0]) or \
                (args[0].is_cuda and torch.cuda.is_current_stream_capturing()):
            return self.model(*args, **kwargs)  # (a Hugging Face call with keyword arguments, too)
        x = args[0]
        with self._lock:  # one static input: calls from several threads take turns
            if self._graph is None:
                self._graph = self._capture(x)
            replay, static_input, static_output, done = self._graph
            if done is not None:  # a call on another stream must not overwrite the input before the last one read it
                torch.cuda.current_stream(x.device).wait_event(done)
            static_input.copy_(x)
            replay()
            output = pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, static_output)
            if done is not None:
                done.record(torch.cuda.current_stream(x.device))
            return output

    def __getattr__(self, name: str):
        """What the wrapper does not have, from the model (a Hugging Face model's ``config``, say), as
        torch.compile's wrapper does."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model" or "model" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["model"], name)

    def _planned(self, x) -> bool:
        return (isinstance(x, torch.Tensor) and tuple(x.shape) == self.input_shape and x.dtype == self.input_dtype
                and x.device == self._device() and not (x.requires_grad and torch.is_grad_enabled()))

    def _device(self) -> torch.device:
        for tensor in self.model.buffers():
            return tensor.device
        for tensor in self.model.parameters():
            return tensor.device
        return torch.device("cpu")

    def _capture(self, x: torch.Tensor) -> tuple:
        # plain tensors, also when the first call comes in inference mode: later calls copy into the input
        # buffer, and replays rewrite the output buffers, outside inference mode too. On the input's device:
        # captured from another device's stream, its kernels would run outside the graph (an empty graph)
        on_device = torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
        with on_device, torch.inference_mode(False), torch.no_grad():
            static_input = torch.empty_like(x, memory_format=torch.contiguous_format)
            static_input.copy_(x)
            replay, output = capture(lambda: self.model(static_input))
        why = _unsupported_output(output)
        if why is not None:
            raise ValueError(f"{type(self.model).__name__} cannot run from a CUDA graph: {why}")
        done = torch.cuda.Event() if x.is_cuda else None
        return replay, static_input, output, done

    def _drop_graph(self) -> None:
        self._graph = None

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half(): the graph's buffers are the old ones
        self._drop_graph()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # a layer's launch arguments may change (sliced groups)
        self._drop_graph()
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # deepcopy and pickle: a graph and a lock are not copied; captured anew
        state = super().__getstate__()
        state["_graph"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def extra_repr(self) -> str:
        captured = "captured" if self._graph is not None else "captured on the first call"
        return f"CUDA graph for input {self.input_shape} {self.input_dtype}, {captured}"


def plan(model: nn.Module, example: torch.Tensor | None, fuse: str) -> tuple[bool, str]:
    """(graphs, reason): whether ``model`` will run from a CUDA graph of ``example`` (so calibration times
    graph replays), or why not (then it times eager calls). ``fuse='on'`` raises when it cannot be captured."""
    if fuse == "off":
        return False, "fuse='off'"
    if example is None:
        return False, "no example input (the graph is captured for the example's shape)"
    try:
        GraphedModel(model, example)(example)
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

