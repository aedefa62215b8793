"""The CUDA side of `runtime.convert` / `runtime.load`: per layer, a Triton kernel on the compact weights
(CSR, sliced CSR, or dense packed codes) or cuBLAS on a dense weight, whichever runs the model faster;
then, with ``fuse``, the whole model as one CUDA graph (`gpu_graph`).

With a sample input, each layer is decided in model order by timing the whole model with the layer as each
candidate, as the model will run: CUDA-graph replays when it will run from a graph (Python's launch work out
of all alike), eager calls when it will not (``fuse='off'``, or a model that cannot be captured: the launch
work is then part of the cost, and a kernel must pay for it); shuffled order, CUDA events. A kernel is kept
only if it beats dense by 1% in each of 3 groups of rounds. Then the chosen
model must beat the all-dense one the same way, or every layer goes back to dense. Without a sample, the
density rule: CSR at <= `DENSITY_CUTOFF` kept, else dense codes where the codebook allows, else dense (the
rule keeps plain CSR until the sliced layout has been measured faster on a GPU).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ..prune.targets import replace_module
from . import gpu_graph, gpu_layers, gpu_timing
from . import triton_kernels as tk
from .layers import SparseMatrix

DENSITY_CUTOFF = 0.3  # as the CPU runtime's
KERNEL_MARGIN = 0.99
GROUPS = 3  # the rounds are split into this many groups; a kernel must win in each
ROUNDS = 15
CALLS = 20  # model calls per graph replay


def check_device(device) -> torch.device:
    """``device`` as a CUDA torch.device, or an error that says what is missing."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"the GPU runtime runs on a CUDA device, got {device}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} needs CUDA, and this PyTorch ({torch.__version__}) sees no "
                           f"CUDA GPU; use device='cpu' for the CPU runtime")
    tk.require()
    return device


def dense_layer(matrix: SparseMatrix, bias: torch.Tensor | None, module: nn.Module, device) -> nn.Module:
    """The cuBLAS twin: a plain Linear / Conv2d with the weight expanded (made on the CPU, then moved)."""
    weight = matrix.to_dense()
    if isinstance(module, nn.Linear):
        dense = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    else:
        dense = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                          module.padding, module.dilation, bias=bias is not None, device="meta")
    dense.weight = nn.Parameter(weight.reshape(dense.weight.shape).to(device), requires_grad=False)
    if bias is not None:
        dense.bias = nn.Parameter(bias.detach().float().to(device), requires_grad=False)
    return dense.eval()


def _rule(matrix: SparseMatrix, density: float, mode: str) -> str:
    kinds = gpu_layers.kinds_for(matrix)
    if mode == "dense":
        return "dense"
    if density <= DENSITY_CUTOFF:
        return "csr"
    if "codes" in kinds:
        return "codes"
    return "csr" if mode == "sparse" else "dense"


def _wins(candidate: dict, dense: dict) -> bool:
    return gpu_timing.wins(candidate, dense, KERNEL_MARGIN, GROUPS)


def _time_variants(model: nn.Module, example: torch.Tensor, variants: dict[str, dict[str, nn.Module]],
                   graphs: bool) -> dict:
    """Whole-model seconds with each variant's layers installed (name -> module): replayed from CUDA graphs
    when the model will run from one (``graphs``), else called eagerly, launch work in."""
    def run_with(layers):
        def call():
            for name, layer in layers.items():
                replace_module(model, name, layer)
            model(example)
        return call

    return gpu_timing.interleaved({v: run_with(layers) for v, layers in variants.items()}, ROUNDS, CALLS,
                                  graphs=graphs)


def place(model: nn.Module, found: list[dict], pending: dict, example: torch.Tensor | None, mode: str,
          device: torch.device, fuse: str = "auto") -> tuple[nn.Module, dict]:
    """Install a GPU layer (or its dense twin) for every entry of ``found``; ``pending`` maps a layer name
    to (SparseMatrix, bias or None, the original module). Records the choice in each decision. Returns
    (result, fusion info): ``model``, or a `gpu_graph.GraphedModel` of it, as ``fuse`` says."""
    # on the model's device: the timing's streams, events and graph captures are the current device's
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        return _place(model, found, pending, example, mode, device, fuse)


def _place(model: nn.Module, found: list[dict], pending: dict, example: torch.Tensor | None, mode: str,
           device: torch.device, fuse: str) -> tuple[nn.Module, dict]:
    calibrate = example is not None and mode == "auto"
    for d in found:  # every layer runnable first (the calibration runs the whole model), compact or by the rule
        matrix, bias, module = pending[d["layer"]]
        kind = _rule(matrix, d["density"], "sparse" if calibrate else mode)
        layer = dense_layer(matrix, bias, module, device) if kind == "dense" else \
            gpu_layers.build(kind, matrix, bias, module, device)
        replace_module(model, d["layer"], layer)
        d["kernel"] = kind
    graphs, reason = gpu_graph.plan(model, example, fuse)  # time the model as it will run: graph or eager
    if calibrate:
        _calibrate(model, found, pending, example, device, graphs)
    result, info = gpu_graph.fuse(model, example, fuse, graphs, reason)
    if calibrate and graphs and not info["fused"]:  # timed as replays, but it will be called: time it so
        _calibrate(model, found, pending, example, device, graphs=False)
        info["reason"] += "; the layers were then timed again as eager calls, as the model will run"
    for d in found:
        d["gpu_bytes"] = matrix_bytes_on_device(model.get_submodule(d["layer"]))
    return result, info


def _calibrate(model: nn.Module, found: list[dict], pending: dict, example: torch.Tensor, device: torch.device,
               graphs: bool) -> None:
    """Each layer in model order to the fastest of its kernels or its dense twin (each choice kept for the
    next), timed in the whole model as graph replays or eager calls (``graphs``); then the whole-model check."""
    chosen: dict[str, tuple[nn.Module, nn.Module]] = {}  # layer -> (kernel layer, dense twin)
    for d in found:
        d.pop("whole_model_s", None)  # (from an earlier pass, when the layers are timed again)
        matrix, bias, module = pending[d["layer"]]
        dense = dense_layer(matrix, bias, module, device)
        options = {kind: gpu_layers.build(kind, matrix, bias, module, device) for kind in gpu_layers.kinds_for(matrix)}
        timed = _time_variants(model, example, {k: {d["layer"]: m} for k, m in {**options, "dense": dense}.items()},
                               graphs)
        d["model_s"] = {k: t["seconds"] for k, t in timed.items()}
        d["graphed"] = all(t["graphed"] for t in timed.values())
        best = min(options, key=lambda k: timed[k]["seconds"])
        if _wins(timed[best], timed["dense"]):
            chosen[d["layer"]] = (options[best], dense)
            replace_module(model, d["layer"], options[best])
            d["kernel"] = best
        else:
            replace_module(model, d["layer"], dense)
            d["kernel"] = "dense"
    if chosen:
        _check_whole_model(model, example, chosen, found, graphs)


def _check_whole_model(model: nn.Module, example: torch.Tensor, chosen: dict, found: list[dict],
                       graphs: bool) -> None:
    """Each kernel won alone; the chosen model must also beat the all-dense one, or all go back to dense."""
    timed = _time_variants(model, example, {"chosen": {n: k for n, (k, _) in chosen.items()},
                                            "dense": {n: t for n, (_, t) in chosen.items()}}, graphs)
    wins = _wins(timed["chosen"], timed["dense"])
    for d in found:
        if d["layer"] in chosen:
            d["whole_model_s"] = [timed["chosen"]["seconds"], timed["dense"]["seconds"]]
            if not wins:
                replace_module(model, d["layer"], chosen[d["layer"]][1])
                d["kernel"] = "dense"
    if not wins:
        return
    for name, (kernel, _) in chosen.items():
        replace_module(model, name, kernel)


def layer_bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach().cpu().float()


def matrix_bytes_on_device(layer: nn.Module) -> int:
    """The bytes a layer's weight holds on the device (compact, or dense fp32)."""
    weight = layer.weight
    return weight.nbytes() if callable(getattr(weight, "nbytes", None)) else int(np.prod(weight.shape)) * weight.element_size()
