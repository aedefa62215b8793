"""Turn a pruned / weight-shared model into a fast inference model, from a module or straight from a .dz.

Per layer the fastest of {deepzip's sparse (CSR) kernel, its dense-codes kernel (`runtime.codes`: a
weight-shared Linear layer run from its 4- or 8-bit codebook indices), dense} is kept (calibration on a sample batch: a
batch of 1 for real-time inference, or a batch of the size you will serve). Layers are decided in model
order by timing the whole model with the layer sparse and with it dense, alternately, so the other
layers' traffic through the caches is counted; sparse must win by 1% in every one of 3 rounds. Then the
chosen model must beat the all-dense one the same way, or every layer goes back to dense. The layer's
own times (alone, on the input it sees in the model) are recorded too. A layer with both compact forms
takes the one faster alone into the whole-model race against dense; calibration starts from the all-dense
model. Layers that are each a small part of the model (under 10% of the dense layers' time, as a
transformer's) are not raced one by one, which cannot resolve gains that small: those faster alone are
raced together, kept together or not, then those within 5% of dense alone the same way (`_race_group`).
Without a sample input, a layer goes sparse when at most `DENSITY_CUTOFF` of its weights are kept, else
to dense codes when it has them and its dense weight is at least `CODES_MIN_BYTES` (big enough to
stream from memory, where 4x-8x fewer bytes pay for the table lookups; `PANELS_MIN_BYTES` for the panel
kernels, which beat MKL from MiniLM's smallest layer up), else dense.

Then, with ``fuse`` (CPU, with an example): when the model is a chain the chain compiler runs
(`runtime.chain`), each layer's form is chosen again inside the compiled chain (sparse, codes or dense,
the fastest of them timed in the chain, in model order), and the chain is kept when it beats the
per-layer model by 1% in every one of 3 rounds (``fuse="auto"``) or always (``"on"``); the result is then
a `FusedModel` wrapping the per-layer model. On CUDA, ``fuse`` captures the whole model in one CUDA
graph instead (`runtime.gpu_graph`): kept when replaying it beats calling the model (``"auto"``) or always
(``"on"``), the result then a `GraphedModel`; calibration times the layers as the model will run (graph
replays, or eager calls with the launch work in). `fusion(model)` says what was decided, and why not.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..encode.api import ModelOrBuilder, decode_records, model_for, open_file
from ..encode.records import Entries, decode_entries, decode_shared
from ..prune.masks import MASK_SUFFIX, get_masks
from ..prune.targets import replace_module
from ..quantize.sharing import CODEBOOK, INDEX, OUTLIER_MASK, OUTLIERS, codebooks, outliers, shared_weight
from . import gpu
from .chain import Chain, FusedModel, Trace, Unsupported
from . import panels, rowtables
from .codes import CodedMatrix
from .kernels import column_dtype
from .layers import CodedLinear, SparseConv2d, SparseLinear, SparseMatrix
from .timing import interleaved

DENSITY_CUTOFF = 0.3
CODES_MIN_BYTES = 4 << 20
# The panel kernels beat MKL fp32 on every MiniLM shape at 1 to 32 input rows, the smallest (384x384, 576 KiB)
# by 1.26-1.72x (benchmarks/results/panels.md): without an example they are kept from 512 KiB up (measured
# sizes only; smaller layers stay dense unless calibration says otherwise).
PANELS_MIN_BYTES = 512 << 10
# The row-table kernels (per-row codebooks, outliers) beat MKL fp32 on MiniLM's shapes at 1 to 32 input rows, the
# 384x384 layer (576 KiB) by only 1.08-1.14x at 32 rows (benchmarks/results/panels.md), within what this machine's
# noise moves: without an example they are kept from the MLP shapes' size (2.25 MiB) down to 2 MiB.
ROWTABLES_MIN_BYTES = 2 << 20
MODES = ("auto", "sparse", "codes", "dense")
PRECISIONS = panels.PRECISIONS
FUSE = ("auto", "on", "off")
CONVERTIBLE = (nn.Linear, nn.Conv2d)


# Sparse must make the whole model this much faster to be kept: on a near tie, timing noise would
# otherwise pick sparse about half the time, and "not slower than dense" is the promise. It must also
# win every round: one noisy stretch of the machine cannot flip a decision (it once kept a 2 us layer
# sparse that is 5% slower).
SPARSE_MARGIN = 0.99
CALIBRATION_ROUNDS = 3
CALIBRATION_CALLS = 30  # of each, per round
RACE_SHARE = 0.1  # a layer under this share of the dense layers' time is raced in a group (`_race_group`)
NEAR_TIE = 1.05  # small layers this close to dense alone (or faster) go into a group race: in the model, with
# the other layers' weights through the caches, a form that ties alone can win (a transformer's codes do)
PROBE_MARGIN = 1.5  # a compiled chain this much slower than the per-layer model at first sight is not tried further


def _time_both(run_sparse, run_dense, repeats: int = CALIBRATION_CALLS) -> tuple[float, float]:
    """(sparse, dense) median seconds, the two calls timed alternately so machine noise hits both alike."""
    times = interleaved({"sparse": run_sparse, "dense": run_dense}, repeats=repeats, warmup=5)
    return times["sparse"], times["dense"]


def _calibrate(options: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Median seconds of each form of a layer alone on ``x`` (sparse, codes, dense), timed alternately."""
    return interleaved({k: (lambda m=m: m(x)) for k, m in options.items()},
                       repeats=CALIBRATION_ROUNDS * CALIBRATION_CALLS, warmup=5)


def _calibrate_in_model(model: nn.Module, sparse: dict[str, nn.Module], dense: dict[str, nn.Module],
                        example: torch.Tensor) -> list[tuple[float, float]]:
    """(sparse, dense) median seconds of the whole model with the named layers sparse or dense, per round.

    In the whole model the other layers evict this layer's weights from the caches between calls, as
    in real use; a layer timed alone keeps them warm and can look faster (or slower) than it is.
    """
    def run_with(layers):
        def call():
            for name, layer in layers.items():
                replace_module(model, name, layer)
            model(example)
        return call

    return [_time_both(run_with(sparse), run_with(dense)) for _ in range(CALIBRATION_ROUNDS)]


def _race_group(model: nn.Module, group: dict[str, tuple[nn.Module, nn.Module]], decisions: list[dict],
                example: torch.Tensor) -> dict[str, tuple[nn.Module, nn.Module]]:
    """Small layers (each under RACE_SHARE of the dense layers' time) whose compact form was faster alone
    (or, the second group, near a tie), raced together in the whole model against dense: kept together
    (returned) or not at all.
    Alone, each one's gain is under what a whole-model race can tell from noise (a transformer's 36
    Linear layers are ~2% of its time each); together they are not."""
    rounds = _calibrate_in_model(model, {n: c for n, (c, _) in group.items()}, {n: t for n, (_, t) in group.items()},
                                 example)
    wins = _sparse_wins(rounds)
    for d in decisions:
        if d["layer"] in group:
            d["group_s"] = _medians(rounds)  # [the group compact, the group dense]
            replace_module(model, d["layer"], group[d["layer"]][0 if wins else 1])
    return group if wins else {}


def _sparse_wins(rounds: list[tuple[float, float]]) -> bool:
    return all(s < SPARSE_MARGIN * t for s, t in rounds)


def _medians(rounds: list[tuple[float, float]]) -> list[float]:
    """[sparse, dense] median seconds over the rounds."""
    return [float(np.median(times)) for times in zip(*rounds)]


def _layer_inputs(model: nn.Module, example: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The input each named layer sees when ``example`` runs through the model (at the example's batch size)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, args, n=n: seen.setdefault(n, args[0].detach().clone())) for n in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def build_coded(module: nn.Module, codebook: torch.Tensor | None, index: torch.Tensor | None,
                outliers: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor | None,
                precision: str = "fp32") -> CodedLinear | None:
    """The dense-codes form of a weight-shared Linear layer, or None where the kernels cannot run it (not
    Linear, no codebook, more than 255 shared values; exact outliers (``outliers``: (outlier mask, exact
    values) or None) only with the row-table kernels: at most 16 values a row, AVX-512)."""
    pruned = mask is not None and not bool(mask.all())
    if not isinstance(module, nn.Linear) or not codes_eligible(codebook, outliers is not None, pruned):
        return None
    outliers = None if outliers is None else tuple(part.detach().cpu() for part in outliers)
    return CodedLinear(coded_matrix(codebook.detach().cpu(), index.cpu(), None if mask is None else mask.cpu(),
                                    outliers, precision), module.bias)


def codes_eligible(codebook: torch.Tensor | None, has_outliers: bool, pruned: bool) -> bool:
    """Whether some dense-codes kernel runs a layer's sharing state: the row kernels (`runtime.codes`: up
    to 255 values, no outliers) or the row tables (`runtime.rowtables`: up to 16 values a row with the
    pruned weights' +0.0, exact outliers allowed; AVX-512)."""
    return CodedMatrix.eligible(codebook, has_outliers) or (rowtables.eligible(codebook, pruned) and rowtables.available())


def _codes_min_bytes(layer: nn.Module) -> int:
    """The dense bytes from which the density rule (no example) keeps a layer's dense codes."""
    if isinstance(layer.matrix, panels.PanelMatrix):
        return PANELS_MIN_BYTES
    return ROWTABLES_MIN_BYTES if isinstance(layer.matrix, rowtables.RowTableMatrix) else CODES_MIN_BYTES


def _codes_kernel(matrix) -> str:
    """How a layer's dense codes run: ``panels fp32`` / ``panels int8`` (`runtime.panels`), ``row tables``
    / ``row tables + outliers`` (`runtime.rowtables`: a table per row, exact outliers as a CSR term; int8:
    ``row tables int8`` / ``row tables int8 + outliers``) or ``rows`` (`runtime.codes`)."""
    if isinstance(matrix, panels.PanelMatrix):
        return f"panels {matrix.precision}"
    if isinstance(matrix, rowtables.RowTableMatrix):
        precision = " int8" if matrix.precision == "int8" else ""
        return "row tables" + precision + (" + outliers" if matrix.outliers is not None else "")
    return "rows"


def coded_matrix(codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None,
                 outliers: tuple[torch.Tensor, torch.Tensor] | None,
                 precision: str) -> CodedMatrix | panels.PanelMatrix | rowtables.RowTableMatrix:
    """A weight-shared layer's dense codes: in panels (`runtime.panels`: one codebook of at most 16 values,
    no outliers, on a CPU with AVX-512; ``precision`` applies there), else in row tables (`runtime.rowtables`:
    at most 16 values a row, exact outliers (``outliers``: (outlier mask, exact values)) as a CSR term;
    AVX-512; ``precision`` applies there too), else rows (`runtime.codes`, fp32). Raises ValueError where
    none of them fits."""
    pruned = mask is not None and not bool(mask.all())
    has_outliers = outliers is not None
    precision = panels.precision_for(index[0].numel(), precision)
    if panels.eligible(codebook, has_outliers, pruned) and panels.available(precision):
        return panels.PanelMatrix.from_index(codebook, index, mask, precision)
    if rowtables.eligible(codebook, pruned) and rowtables.available():
        return rowtables.RowTableMatrix.from_index(codebook, index, mask, *(outliers or (None, None)), precision=precision)
    if has_outliers:
        raise ValueError("exact outliers run from codes only in row tables: at most 16 values a row "
                         f"(15 with pruned weights), on a CPU with {', '.join(rowtables.NEEDS)}")
    return CodedMatrix.from_index(codebook, index, mask)


def build_sparse(module: nn.Module, codebook=None, index=None, mask=None) -> nn.Module:
    matrix = SparseMatrix.from_dense(module.weight, codebook, index, mask)
    if isinstance(module, nn.Linear):
        return SparseLinear(matrix, module.bias)
    return SparseConv2d(matrix, module.bias, module)


DECISIONS = "_deepzip_runtime_decisions"
FUSION = "_deepzip_runtime_fusion"


def decisions(model: nn.Module) -> list[dict]:
    """The per-layer choices `convert` or `load` made for ``model``: layer, density, sparse, codes (where
    the layer has them) and dense bytes, the kernel kept (sparse, codes or dense) and, when calibrated,
    the timings behind it."""
    found = model.__dict__.get(DECISIONS)
    if found is None:
        raise ValueError(f"{type(model).__name__} was not made by deepzip.runtime.convert or runtime.load")
    return found


def fusion(model: nn.Module) -> dict:
    """Whether `convert` or `load` compiled ``model`` into one chain (cpu) or CUDA graph (cuda, ``kind``
    "cuda graph"): ``fused``, ``reason`` (why not, or why), and when timed ``chain_s`` or ``graph_s``, and
    ``layers_s`` (median seconds per call or round: fused and per-layer) and ``max_abs_diff`` (fused against
    the per-layer model on the example)."""
    found = model.__dict__.get(FUSION)
    if found is None:
        raise ValueError(f"{type(model).__name__} was not made by deepzip.runtime.convert or runtime.load")
    return found


def convert(model: nn.Module, example: torch.Tensor | None = None, mode: str = "auto",
            device: str | torch.device = "cpu", fuse: str = "auto", precision: str = "fp32") -> nn.Module:
    """Turn ``model`` into an inference model in place and return it; `decisions(model)` tells per layer
    what was chosen. ``mode``: auto (calibrate on ``example``, or the density rule without it), sparse
    (CSR everywhere), codes (dense codes where a layer has them, else CSR), or dense.
    ``fuse``: auto (compile the whole model into one call when it is a chain of supported ops and that is
    faster on ``example``), on (compile it, an error if it cannot be), off. When fused, the return value
    is a `runtime.chain.FusedModel` (use it, not ``model``): inputs of the example's shape run in one
    compiled call, others through ``model``, converted per layer in place. `fusion(result)` says why.
    On cuda the one call is a CUDA graph of the model (`runtime.gpu_graph.GraphedModel`), and ``fuse``
    also says how layers are timed: graph replays, or with ``off`` (or a model that cannot be captured)
    eager calls, so a kernel is kept only where it wins as the model will run.

    ``example``: a sample input batch for calibration, at the batch size the model will serve.
    Linear and Conv2d layers with a mask or a codebook are candidates. The model is switched to eval
    mode. If anything raises, the model is left as it was.
    ``device``: ``cpu`` (numba kernels), or ``cuda`` (Triton kernels or cuBLAS per layer; see
    `runtime.gpu`): the model moves there, the converted layers' weights go there compact.
    ``precision``: how a weight-shared layer run from its 4-bit codes in panels (`runtime.panels`) or row
    tables (`runtime.rowtables`) multiplies: fp32 (exact up to fp32 reassociation), or int8 (the codebook,
    or each row's table, on an int8 grid, each input row quantized to int8 as dynamic int8 quantization
    does; needs AVX-512 VNNI). Other layers stay fp32.
    """
    _check_mode(mode, device, fuse, example, precision)
    cuda = _cuda(device)
    if cuda is not None:
        return _convert_gpu(model, example, mode, cuda, fuse)
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("deepzip.runtime is a CPU inference runtime; convert a CPU copy: "
                         "runtime.convert(copy.deepcopy(model).cpu(), example), or run it on the GPU with "
                         "runtime.convert(model, example, device='cuda')")
    masks, shared, with_outliers = get_masks(model), codebooks(model), outliers(model)
    candidates = [n for n, m in model.named_modules() if isinstance(m, CONVERTIBLE)
                  and (f"{n}.weight" in masks or f"{n}.weight" in shared)]
    originals = {name: model.get_submodule(name) for name in candidates}
    was_training = model.training
    try:
        found, coded = [], {}
        for name in candidates:
            module, weight = originals[name], f"{name}.weight"
            codebook, index = _kernel_codebook(weight, shared, with_outliers)
            sparse = build_sparse(module, codebook, index, masks.get(weight))
            found.append(_decision(name, sparse.matrix))
            layer_coded = build_coded(module, *shared.get(weight, (None, None)), with_outliers.get(weight),
                                      masks.get(weight), precision)
            if layer_coded is not None:
                coded[name] = layer_coded
                found[-1].update(codes_bytes=layer_coded.matrix.nbytes(), codes_kernel=_codes_kernel(layer_coded.matrix))
            replace_module(model, name, sparse)
        model.eval()
        forms: dict[str, dict[str, nn.Module]] = {}
        _choose_kernels(model, found, example, mode, coded, forms)
        model.__dict__[DECISIONS] = found
        return _fuse(model, found, example, fuse, forms)
    except BaseException:
        for name, module in originals.items():
            replace_module(model, name, module)
        model.train(was_training)
        model.__dict__.pop(DECISIONS, None)
        model.__dict__.pop(FUSION, None)
        raise


def _cuda(device) -> torch.device | None:
    """None for the CPU runtime, else the checked CUDA device (an error says what is missing)."""
    if torch.device(device).type == "cpu":
        return None
    return gpu.check_device(device)


def _kernel_codebook(weight: str, shared: dict, with_outliers) -> tuple:
    """(codebook, index) the CSR kernels take for a layer, or (None, None): they read one shared codebook
    per layer, so per-row codebooks and exact outliers run there as fp32 values (their dense codes run in
    row tables, `build_coded`)."""
    codebook, index = shared.get(weight, (None, None))
    if codebook is not None and (codebook.dim() != 1 or weight in with_outliers):
        return None, None
    return codebook, index


def _convert_gpu(model: nn.Module, example: torch.Tensor | None, mode: str, device: torch.device,
                 fuse: str) -> nn.Module:
    masks, shared, with_outliers = get_masks(model), codebooks(model), outliers(model)
    candidates = [n for n, m in model.named_modules() if isinstance(m, CONVERTIBLE)
                  and (f"{n}.weight" in masks or f"{n}.weight" in shared)]
    originals = {name: model.get_submodule(name) for name in candidates}
    first = next(iter(model.parameters()), None)
    home = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    try:
        found, pending = [], {}
        for name in candidates:
            module = originals[name]
            codebook, index = _kernel_codebook(f"{name}.weight", shared, with_outliers)
            mask = masks.get(f"{name}.weight")
            matrix = SparseMatrix.from_dense(module.weight.detach().cpu(), _cpu(codebook), _cpu(index), _cpu(mask))
            found.append(_decision(name, matrix))
            pending[name] = (matrix, gpu.layer_bias(module), module)
            replace_module(model, name, nn.Identity())  # its dense weight never goes to the GPU
        model.to(device).eval()
        result, info = gpu.place(model, found, pending, None if example is None else example.to(device), mode,
                                 device, fuse)
    except BaseException:
        for name, module in originals.items():
            replace_module(model, name, module)
        model.to(home).train(was_training)
        raise
    return _with_reports(model, result, found, info)


def _with_reports(model: nn.Module, result: nn.Module, found: list[dict], info: dict) -> nn.Module:
    """``result`` (``model`` or a wrapper of it) with what `decisions` and `fusion` read, on both."""
    for target in {id(model): model, id(result): result}.values():
        target.__dict__[DECISIONS], target.__dict__[FUSION] = found, info
    return result


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().cpu()


def _check_mode(mode: str, device: str | torch.device = "cpu", fuse: str = "auto",
                example: torch.Tensor | None = None, precision: str = "fp32") -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if fuse not in FUSE:
        raise ValueError(f"fuse must be one of {', '.join(FUSE)}, got {fuse!r}")
    if fuse == "on" and example is None:
        raise ValueError("fuse='on' needs an example input: the chain (cpu) or CUDA graph (cuda) is made for the "
                         "example's shape")
    panels.check_precision(precision)
    if precision != "fp32" and torch.device(device).type != "cpu":
        raise ValueError(f"precision={precision!r} is the CPU runtime's panel and row-table kernels'; on cuda use precision='fp32'")
    if mode == "codes" and torch.device(device).type != "cpu":
        raise ValueError("mode 'codes' is the CPU runtime's; on cuda use auto (it picks dense codes where they "
                         "win), sparse or dense")


def _decision(name: str, matrix: SparseMatrix) -> dict:
    rows, width = matrix.shape
    return {"layer": name, "density": matrix.nnz / max(rows * width, 1), "sparse_bytes": matrix.nbytes(),
            "dense_bytes": rows * width * 4}


def _choose_kernels(model: nn.Module, decisions: list[dict], example: torch.Tensor | None, mode: str,
                    coded: dict[str, nn.Module] | None = None,
                    forms: dict[str, dict[str, nn.Module]] | None = None) -> nn.Module:
    """Keep each layer sparse, run it from its codes (``coded``: name -> CodedLinear) or swap in its dense
    twin: by timing on ``example`` (auto with an example), by the density rule (auto without), or as
    ``mode`` says. Records the choice in ``decisions``; in mode auto, every form of each layer goes into
    ``forms`` (name -> {kind: module}) for the chain compiler to choose from again."""
    coded = coded or {}
    forms = {} if forms is None else forms
    if mode == "codes":
        for name, layer in coded.items():
            replace_module(model, name, layer)
    elif mode != "sparse":
        inputs = _layer_inputs(model, example, [d["layer"] for d in decisions]) \
            if example is not None and mode == "auto" else None
        layer_forms = {}
        for d in decisions:
            sparse = model.get_submodule(d["layer"])
            options = {"sparse": sparse, **({"codes": coded[d["layer"]]} if d["layer"] in coded else {})}
            layer_forms[d["layer"]] = {**options, "dense": _dense_from_sparse(sparse)}
            if mode == "auto":
                forms[d["layer"]] = layer_forms[d["layer"]]
            if inputs is not None:  # calibration starts from the all-dense model: each race moves one layer
                replace_module(model, d["layer"], layer_forms[d["layer"]]["dense"])
        kept: dict[str, tuple[nn.Module, nn.Module]] = {}
        groups: list[dict[str, tuple[nn.Module, nn.Module]]] = [{}, {}]  # small layers: faster alone; near ties
        # each layer's forms alone on the input it sees (independent of the other layers' choices), timed once:
        # they rank its forms, and the dense times sum to the total a layer's share is measured against
        alone_times = {n: _calibrate(f, inputs[n]) for n, f in layer_forms.items()} if inputs is not None else {}
        dense_total = sum(times["dense"] for times in alone_times.values())
        for d in decisions:
            options = dict(layer_forms[d["layer"]])
            dense = options.pop("dense")
            if inputs is not None:  # layer by layer in model order, each choice kept for the next
                alone = alone_times[d["layer"]]
                d.update({f"{kind}_s": seconds for kind, seconds in alone.items()})
                fastest = min(options, key=alone.get)  # the compact form to race dense in the model
                d["raced"] = fastest
                choice = None
                if alone["dense"] < RACE_SHARE * dense_total:  # too small to race alone: raced in a group
                    tier = 0 if alone[fastest] < SPARSE_MARGIN * alone["dense"] else 1
                    if alone[fastest] <= NEAR_TIE * alone["dense"]:
                        groups[tier][d["layer"]] = (options[fastest], dense)
                else:
                    rounds = _calibrate_in_model(model, {d["layer"]: options[fastest]}, {d["layer"]: dense}, example)
                    d["model_sparse_s"], d["model_dense_s"] = _medians(rounds)  # "sparse": the compact form raced
                    choice = fastest if _sparse_wins(rounds) else None
            elif mode == "auto" and d["density"] <= DENSITY_CUTOFF:
                choice = "sparse"
            elif mode == "auto" and "codes" in options and d["dense_bytes"] >= _codes_min_bytes(options["codes"]):
                choice = "codes"
            else:
                choice = None
            if choice is not None:
                kept[d["layer"]] = (options[choice], dense)
                replace_module(model, d["layer"], options[choice])
            else:
                replace_module(model, d["layer"], dense)
        for group in groups:
            if group:
                kept.update(_race_group(model, group, decisions, example))
        if inputs is not None and kept:
            _check_whole_model(model, kept, decisions, example)
        if inputs is not None:
            _fresh_dense_layers(model, decisions)
    for d in decisions:
        d["kernel"] = _kind(model.get_submodule(d["layer"]))
    return model


def _fuse(model: nn.Module, decisions: list[dict], example: torch.Tensor | None, fuse: str,
          forms: dict[str, dict[str, nn.Module]]) -> nn.Module:
    """``model`` (per-layer) or a `FusedModel` of it, as ``fuse`` and timing on ``example`` say (module doc)."""
    info: dict = {"fused": False}
    model.__dict__[FUSION] = info
    if fuse == "off":
        info["reason"] = "fuse='off'"
        return model
    if example is None:
        info["reason"] = "no example input (the chain is planned for the example's shape)"
        return model
    try:
        trace = Trace(model, example)
        if fuse == "auto" and len(trace.layers) < 2:
            info["reason"] = ("one weight layer: nothing to fuse (the chain saves the calls between layers; a "
                              "single layer's kernel runs per layer as it would in the chain)")
            return model
        probe = interleaved({"chain": lambda c=Chain(trace): c(example), "layers": lambda: model(example)}, repeats=5,
                            warmup=1)
        if probe["chain"] > PROBE_MARGIN * probe["layers"]:  # far behind: not worth calibrating its forms
            info["reason"] = (f"the compiled chain took {probe['chain'] / probe['layers']:.1f}x the per-layer model's "
                              "time on the example (a first probe)")
            return model
        chosen, kinds = _chain_forms(trace, decisions, example, forms)
        chain = Chain(trace, chosen)
    except Unsupported as error:
        if fuse == "on":
            raise
        info["reason"] = f"not a chain the compiler runs: {error}"
        return model
    with torch.inference_mode():
        want, got = model(example), chain(example)
    scale = float(want.abs().max()) if want.numel() else 0.0
    info["max_abs_diff"] = float((got - want).abs().max()) if want.numel() else 0.0
    if info["max_abs_diff"] > 1e-4 * max(scale, 1.0):  # fp32 reassociation stays far below this
        if fuse == "on":
            raise ValueError(f"the compiled chain differs from the per-layer model by {info['max_abs_diff']:.2e}")
        info["reason"] = f"the compiled chain differs from the per-layer model by {info['max_abs_diff']:.2e}"
        return model
    rounds = [_time_both(lambda: chain(example), lambda: model(example)) for _ in range(CALIBRATION_ROUNDS)]
    info["chain_s"], info["layers_s"] = _medians(rounds)
    if fuse == "auto" and not _sparse_wins(rounds):
        info["reason"] = "the compiled chain was not faster than the per-layer model on the example"
        return model
    info.update(fused=True, reason="fuse='on'" if fuse == "on" else "faster than the per-layer model on the example",
                input_shape=list(chain.input_shape), ops=len(chain.program), chain_bytes=chain.nbytes())
    for d in decisions:
        if d["layer"] in chain.layers:  # kinds: where there were forms to choose from; else the model's own
            d["chain_kernel"] = kinds.get(d["layer"], _kind(chain.layers[d["layer"]]))
    fused = FusedModel(model, chain).eval()
    fused.__dict__[DECISIONS], fused.__dict__[FUSION] = decisions, info
    return fused


def _chain_forms(trace: Trace, decisions: list[dict], example: torch.Tensor,
                 forms: dict[str, dict[str, nn.Module]]) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Each layer's form inside the chain (modules, and kinds where there was a choice): in model order, the fastest of its forms timed in the whole
    compiled chain (the per-layer choice can differ: out of the chain a small sparse layer loses to its
    fixed call costs, inside it it does not). Forms the compiler cannot run are skipped."""
    chosen: dict[str, nn.Module] = {}
    kinds: dict[str, str] = {}
    by_layer = {d["layer"]: d for d in decisions}
    for name in trace.layers:
        options = dict(forms.get(name, {}))
        sparse = options.get("sparse")
        if sparse is not None and sparse.matrix.codes is not None:
            options["sparse fp32"] = _with_values(sparse)
        chains = {}
        for kind, module in options.items():
            try:
                chains[kind] = Chain(trace, {**chosen, name: module})
            except Unsupported:
                continue
        if len(chains) < 2:
            if chains:
                kinds[name] = next(iter(chains))
                chosen[name] = options[kinds[name]]
            continue
        times = interleaved({k: (lambda c=c: c(example)) for k, c in chains.items()}, repeats=CALIBRATION_CALLS,
                            warmup=5)
        best = min(times, key=times.get)
        chosen[name] = options[best]
        if name in by_layer:
            by_layer[name]["chain_s"] = times
        kinds[name] = best
    return chosen, kinds


def _with_values(layer: nn.Module) -> nn.Module:
    """A codebook CSR layer as fp32 values on the same pattern: 4 bytes a weight instead of 1, but no
    table lookup per weight (LeNet-300-100's fc1 inside the chain: ~25% faster). Only the chain's copy
    of the weights holds them, and only where its calibration picks this form."""
    twin = copy.copy(layer)  # shares the bias; only the matrix differs
    m = layer.matrix
    twin.matrix = SparseMatrix(m.shape, m.indptr, m.cols, values=m.codebook[m.codes])
    return twin


def _kind(module: nn.Module) -> str:
    if isinstance(module, CodedLinear):
        return "codes"
    return "sparse" if isinstance(module, (SparseLinear, SparseConv2d)) else "dense"


def _fresh_dense_layers(model: nn.Module, decisions: list[dict]) -> None:
    """Calibration's dense twins, where the model keeps them, replaced by copies made now: a twin built
    before calibration measured 3-8% slower on microsecond layers than a copy of itself made after it
    (where its tensors landed among calibration's allocations; LeNet-300-100's fc2 / fc3 in
    benchmarks/runtime.py), and "never slower than dense" is the promise. It costs one weight copy."""
    for d in decisions:
        layer = model.get_submodule(d["layer"])
        if _kind(layer) == "dense":
            replace_module(model, d["layer"], copy.deepcopy(layer))


def _check_whole_model(model: nn.Module, kept: dict[str, tuple[nn.Module, nn.Module]], decisions: list[dict],
                       example: torch.Tensor) -> None:
    """The promise is a model never slower than dense: each layer won alone, so now the chosen model must
    win against the all-dense one the same way, or every layer goes back to dense (small gains from
    several layers can be eaten by their fixed call costs, or were luck)."""
    rounds = _calibrate_in_model(model, {n: s for n, (s, _) in kept.items()}, {n: t for n, (_, t) in kept.items()}, example)
    wins = _sparse_wins(rounds)
    for d in decisions:
        if d["layer"] in kept:
            d["whole_model_s"] = _medians(rounds)  # [chosen, all dense]
            replace_module(model, d["layer"], kept[d["layer"]][0 if wins else 1])


def load(path: str | Path, model: ModelOrBuilder, example: torch.Tensor | None = None, mode: str = "auto",
         device: str | torch.device = "cpu", fuse: str = "auto", precision: str = "fp32") -> nn.Module:
    """A runnable inference model straight from a .dz file; `decisions(model)` tells per layer what was chosen.

    ``model``: an instance of the saved architecture (its weights are not used: build it under
    ``torch.device("meta")`` to skip allocating them), or a builder called with the file's model
    description (``deepzip.models.from_description`` for deepzip's registry models). Sparse layers are
    built from the decoded positions and codes: no dense fp32 weight is made for them (only,
    temporarily, when calibrating against dense with ``example``). ``device``: as in `convert`; on
    ``cuda`` the compact layers are copied to the GPU from the decoded positions and codes. ``fuse``: as
    in `convert` (the result may be a `runtime.chain.FusedModel`). ``precision``: as in `convert`.
    """
    _check_mode(mode, device, fuse, example, precision)
    cuda = _cuda(device)
    header, sections, _ = open_file(path)  # the whole header checked, nothing decoded yet
    # a skeleton (layer hyperparameters without weight memory), checked against the records first
    model = model_for(header, model, path, device="meta")
    model.eval()
    dense_state, found = {}, []
    for record in header["tensors"]:
        module_name, _, param = record["name"].rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        if record["encoding"] == "dense" or param != "weight" or not isinstance(module, CONVERTIBLE):
            dense_state.update(decode_records({"tensors": [record]}, sections, str(path)))
            continue
        rows, width = record["shape"][0], int(np.prod(record["shape"][1:]))
        entries, coded = _decode_weight(record, sections, module, rows, width, cuda is None, precision)
        matrix = _matrix_from_entries(entries, rows, width)
        found.append({**_decision(module_name, matrix), "module": module, "matrix": matrix})
        if coded is not None:
            found[-1].update(codes_bytes=coded.nbytes(), codes_kernel=_codes_kernel(coded), coded=coded)
    for key, value in _materialised(dense_state).items():  # biases and layers left to PyTorch
        value = value if cuda is None else value.to(cuda)
        owner, _, attr = key.rpartition(".")
        target = model.get_submodule(owner) if owner else model
        if attr in target._parameters:
            target._parameters[attr] = nn.Parameter(value, requires_grad=False)
        else:
            target._buffers[attr] = value
    if cuda is not None:
        pending = {d["layer"]: (d.pop("matrix"), dense_state.get(f"{d['layer']}.bias"), d.pop("module")) for d in found}
        result, info = gpu.place(model, found, pending, None if example is None else example.to(cuda), mode, cuda,
                                 fuse)
        return _with_reports(model, result, found, info)
    coded = {}
    for d in found:
        bias = dense_state.get(f"{d['layer']}.bias")
        module, matrix, codes = d.pop("module"), d.pop("matrix"), d.pop("coded", None)
        sparse = SparseLinear(matrix, bias) if isinstance(module, nn.Linear) else SparseConv2d(matrix, bias, module)
        replace_module(model, d["layer"], sparse)
        if codes is not None:
            coded[d["layer"]] = CodedLinear(codes, bias)
    forms: dict[str, dict[str, nn.Module]] = {}
    _choose_kernels(model, found, example, mode, coded, forms)
    model.__dict__[DECISIONS] = found
    return _fuse(model, found, example, fuse, forms)


def _materialised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoded records of the layers PyTorch runs (embeddings, norms, biases) as plain tensors: a shared
    one's codebook state becomes its weight; a pruned one's mask is dropped (its zeros are in the weight)."""
    out = dict(state)
    for key in [k for k in state if k.endswith(CODEBOOK)]:
        base = key[: -len(CODEBOOK)]
        parts = [base + suffix for suffix in (CODEBOOK, INDEX, MASK_SUFFIX, OUTLIER_MASK, OUTLIERS)]
        out[base] = shared_weight(*(state.get(part) for part in parts)).detach()
        for part in parts:
            out.pop(part, None)
    for key in [k for k in out if k.endswith(MASK_SUFFIX) and k[: -len(MASK_SUFFIX)] in out]:
        del out[key]
    return out


def _decode_weight(record: dict, sections, module: nn.Module, rows: int, width: int,
                   want_codes: bool, precision: str = "fp32") -> tuple[Entries, CodedMatrix | None]:
    """A weight record's kept entries (for CSR) and, for a weight-shared Linear layer the dense-codes
    kernels can run (`codes_eligible`), its dense codes (`coded_matrix`); the record is decoded once."""
    if record["encoding"] != "shared":
        return decode_entries(record, sections), None
    shared = decode_shared(record, sections)
    has_outliers = shared.outlier_values is not None
    if shared.codebook.dim() == 1 and not has_outliers:  # as decode_entries: the CSR kernels read one codebook
        entries = Entries(shared.positions, shared.codes, None, shared.codebook)
    else:
        entries = Entries(shared.positions, None, shared.values(), None)
    if not isinstance(module, nn.Linear) or not want_codes:
        return entries, None
    positions = torch.from_numpy(shared.positions.astype(np.int64))
    mask = None
    if len(positions) < rows * width:
        mask = torch.zeros(rows * width, dtype=torch.bool)
        mask[positions] = True
        mask = mask.reshape(rows, width)
    if not codes_eligible(shared.codebook, has_outliers, mask is not None):  # (a mask exists only where pruned)
        return entries, None
    index = torch.zeros(rows * width, dtype=torch.int64)
    index[positions] = torch.from_numpy(shared.codes.astype(np.int64))
    outliers = None
    if has_outliers:  # their codes are 0 in the record; the correction is exact minus code 0's value
        outlier_mask = torch.zeros(rows * width, dtype=torch.bool)
        outlier_mask[positions[torch.from_numpy(shared.is_outlier)]] = True
        outliers = (outlier_mask.reshape(rows, width), shared.outlier_values)
    return entries, coded_matrix(shared.codebook, index.reshape(rows, width), mask, outliers, precision)


def _matrix_from_entries(entries, rows: int, width: int) -> SparseMatrix:
    positions = entries.positions.astype(np.int64)
    row_of, cols = positions // max(width, 1), positions % max(width, 1)
    indptr = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(row_of, minlength=rows), out=indptr[1:])
    if entries.codes is None:
        return SparseMatrix((rows, width), indptr, cols.astype(column_dtype(width)), values=entries.values.numpy())
    k = len(entries.codebook)
    return SparseMatrix((rows, width), indptr, cols.astype(column_dtype(width)),
                        codes=entries.codes.astype(np.uint8 if k <= 256 else np.uint16), codebook=entries.codebook.numpy())


def _dense_from_sparse(sparse: nn.Module) -> nn.Module:
    weight = sparse.matrix.to_dense()
    bias = sparse.bias
    if isinstance(sparse, SparseLinear):
        dense = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        shape = weight.shape
    else:
        in_channels = weight.shape[1] // (sparse.kernel_size[0] * sparse.kernel_size[1])
        dense = nn.Conv2d(in_channels, sparse.out_channels, sparse.kernel_size, sparse.stride, sparse.padding,
                          sparse.dilation, bias=bias is not None)
        shape = dense.weight.shape
    with torch.no_grad():
        dense.weight.copy_(weight.reshape(shape))
        if bias is not None:
            dense.bias.copy_(bias)
    return dense.eval().requires_grad_(False)
