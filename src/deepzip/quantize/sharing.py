"""Weight sharing as explicit module state: a codebook Parameter and an index buffer per layer.

For a shared parameter ``weight`` the module holds ``weight_codebook`` (fp32[k], trainable; or
fp32[rows, k] for per-row codebooks, row r of the weight using ``codebook[r]``) and ``weight_index``
(uint8 up to 8 bits, else int32; same shape as the weight), plus the pruning mask ``weight_mask`` when
the layer is pruned, and for a dense-and-sparse split (SqueezeLLM) ``weight_outlier_mask`` (bool, the
weight's shape) with ``weight_outliers`` (fp32[m], trainable: the exact values at those positions in
row-major order; their index entries are 0 and unused). A forward pre-hook sets ``module.weight = where(mask, codebook[index], 0)``, so autograd gives
each centroid the sum of the gradients of the weights in its cluster (Han et al. 2016, Figure 3) and
pruned positions stay exactly zero. `finalize` turns the layer back into an ordinary Parameter.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from ..prune import l0
from ..prune.masks import MASK_SUFFIX, DetachParams, apply_masks, enforce, get_masks, saved_masks
from ..prune.targets import split_name
from .kmeans import MAX_ITERS, kmeans_1d
from .lookup import shared_values

CODEBOOK, INDEX = "_codebook", "_index"
OUTLIER_MASK, OUTLIERS = "_outlier_mask", "_outliers"
PARTS = (CODEBOOK, INDEX, OUTLIER_MASK, OUTLIERS)  # every state suffix of a shared parameter


def lookup(codebook: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``codebook[index]`` for a layer codebook ([k]) or per-row codebooks ([rows, k]: row r of
    ``index`` reads ``codebook[r]``), with the deterministic centroid gradient of `shared_values`."""
    if codebook.dim() == 1:
        return shared_values(codebook, index)
    rows, k = codebook.shape
    offsets = (torch.arange(rows, device=index.device) * k).reshape((rows,) + (1,) * (index.dim() - 1))
    return shared_values(codebook.reshape(-1), index.long() + offsets)


def shared_weight(codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None = None,
                  outlier_mask: torch.Tensor | None = None, outliers: torch.Tensor | None = None) -> torch.Tensor:
    """The weight a sharing state stands for: ``codebook[index]``, exact outliers in place, pruned
    positions +0.0 (a pure function of the state's tensors, as a saved state_dict holds them)."""
    weight = lookup(codebook, index)
    if outlier_mask is not None:  # the exact values, in row-major order of their positions
        weight = weight.masked_scatter(outlier_mask, outliers.to(weight.dtype))
    # where(), not multiply: pruned positions are +0.0 exactly (a negative centroid times 0 is -0.0)
    return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)) \
        if mask is not None else weight


def _effective(module: nn.Module, param: str) -> torch.Tensor:
    return shared_weight(getattr(module, param + CODEBOOK), getattr(module, param + INDEX),
                         getattr(module, param + MASK_SUFFIX, None), getattr(module, param + OUTLIER_MASK, None),
                         getattr(module, param + OUTLIERS, None))


class SharedWeights:
    """The forward pre-hook of a weight-shared module: sets each shared ``module.<param>`` to
    ``codebook[index]`` (pruned positions +0.0) before the forward, so autograd gives each centroid the
    sum of its cluster's gradients. Kept in the module's own hook dict, so ``copy.deepcopy``, pickling,
    ``.to(device)`` and wrappers keep it; it holds only parameter names."""

    def __init__(self) -> None:
        self.params: list[str] = []

    def __call__(self, module: nn.Module, _inputs=None) -> None:
        for param in self.params:
            setattr(module, param, _effective(module, param))


class DetachSharedWeights(DetachParams):
    """The matching forward hook: the attribute keeps a detached copy of the effective weight."""


def _sharing_hook(module: nn.Module) -> SharedWeights | None:
    return next((h for h in module._forward_pre_hooks.values() if isinstance(h, SharedWeights)), None)


def _refresh(module: nn.Module) -> None:
    hook = _sharing_hook(module)
    if hook is not None:
        with torch.no_grad():
            hook(module)


def index_dtype(codebook_size: int) -> torch.dtype:
    """uint8 up to 256 shared values, else int32: the smallest types NCCL and gloo can broadcast, so
    DistributedDataParallel can sync the index buffer."""
    return torch.uint8 if codebook_size <= 256 else torch.int32


def check_state(shape: torch.Size, codebook: torch.Tensor, index: torch.Tensor,
                outlier_mask: torch.Tensor | None = None, outliers: torch.Tensor | None = None, what: str = "weight") -> None:
    """Raise ValueError unless codebook / index / outliers form a consistent state for a ``shape`` weight."""
    if tuple(index.shape) != tuple(shape):
        raise ValueError(f"index shape {tuple(index.shape)} does not match {what} {tuple(shape)}")
    if codebook.dim() not in (1, 2) or codebook.shape[-1] < 1:
        raise ValueError(f"{what}: a codebook is [k] or [rows, k] with k >= 1, got {tuple(codebook.shape)}")
    if codebook.dim() == 2 and (len(shape) == 0 or codebook.shape[0] != shape[0]):
        raise ValueError(f"{what}: per-row codebooks {tuple(codebook.shape)} need one row per row of {tuple(shape)}")
    k = codebook.shape[-1]
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= k):
        raise ValueError(f"{what}: index values must be in 0..{k - 1}")
    if (outlier_mask is None) != (outliers is None):
        raise ValueError(f"{what}: outliers need both the mask and the values")
    if outlier_mask is not None:
        if outlier_mask.dtype != torch.bool or tuple(outlier_mask.shape) != tuple(shape):
            raise ValueError(f"{what}: the outlier mask must be a bool tensor of shape {tuple(shape)}")
        if outliers.dim() != 1 or outliers.numel() != int(outlier_mask.sum()):
            raise ValueError(f"{what}: {int(outlier_mask.sum())} outlier positions need as many values, "
                             f"got {tuple(outliers.shape)}")


def install(module: nn.Module, param: str, codebook: torch.Tensor, index: torch.Tensor,
            outlier_mask: torch.Tensor | None = None, outliers: torch.Tensor | None = None) -> None:
    """Replace ``module.<param>`` by a shared codebook ([k] or per-row [rows, k]) + index, and optionally
    exact outliers (bool mask of the weight's shape + their values in row-major order); a pure state
    change, no clustering."""
    original = getattr(module, param)
    check_state(original.shape, codebook, index, outlier_mask, outliers, param)
    device = original.device
    if isinstance(original, nn.Parameter):
        del module._parameters[param]
    module.register_parameter(param + CODEBOOK, nn.Parameter(codebook.detach().clone().float().to(device)))
    module.register_buffer(param + INDEX, index.to(device=device, dtype=index_dtype(codebook.shape[-1])))
    if outlier_mask is not None:
        module.register_buffer(param + OUTLIER_MASK, outlier_mask.detach().clone().to(device))
        module.register_parameter(param + OUTLIERS, nn.Parameter(outliers.detach().clone().float().to(device)))
    hook = _sharing_hook(module)
    if hook is None:  # one pre-hook per module refreshes all of its shared parameters
        hook = SharedWeights()
        module.register_forward_pre_hook(hook)
        module.register_forward_hook(DetachSharedWeights(hook))
    hook.params.append(param)
    setattr(module, param, _effective(module, param).detach())


def shared_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{parameter name: owning module} for every weight-shared parameter."""
    out = {}
    for module_name, module in model.named_modules():
        hook = _sharing_hook(module)
        for param in hook.params if hook is not None else ():
            out[f"{module_name}.{param}" if module_name else param] = module
    return out


def codebooks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{parameter name: (codebook, index)} of every shared parameter."""
    return {name: (getattr(m, split_name(name)[1] + CODEBOOK), getattr(m, split_name(name)[1] + INDEX))
            for name, m in shared_layers(model).items()}


def outliers(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{parameter name: (outlier mask, exact values)} of every shared parameter with a dense-and-sparse split."""
    out = {}
    for name, module in shared_layers(model).items():
        param = split_name(name)[1]
        if hasattr(module, param + OUTLIERS):
            out[name] = (getattr(module, param + OUTLIER_MASK), getattr(module, param + OUTLIERS))
    return out


def cluster(model: nn.Module, name: str, bits: int, init: str = "linear", seed: int = 0,
            iters: int = MAX_ITERS) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook, index) clustering the surviving (unmasked) weights of parameter ``name`` into 2**bits
    shared values; the model is not changed. k-means runs on the CPU (numpy, and numba for the exact DP)
    whatever the model's device; `install` puts the codebook and index on the layer's device."""
    module_name, param = split_name(name)
    weight = getattr(model.get_submodule(module_name), param).detach()
    mask = get_masks(model).get(name)
    alive = mask.reshape(-1).cpu() if mask is not None else torch.ones(weight.numel(), dtype=torch.bool)
    codebook, alive_index = kmeans_1d(weight.reshape(-1).cpu()[alive].float(), 2 ** bits, init, iters=iters, seed=seed)
    if len(codebook) == 0:  # an empty layer: one zero centroid keeps the state well-formed
        codebook = torch.zeros(1)
    index = torch.zeros(weight.numel(), dtype=torch.int64)
    index[alive] = alive_index
    return codebook, index.reshape(weight.shape)


def share(model: nn.Module, name: str, bits: int, init: str = "linear", seed: int = 0, iters: int = MAX_ITERS) -> None:
    """Weight-share parameter ``name`` in place (`cluster`, then `install`)."""
    codebook, index = cluster(model, name, bits, init, seed, iters)
    install(model.get_submodule(split_name(name)[0]), split_name(name)[1], codebook, index)


def finalize(model: nn.Module) -> nn.Module:
    """Make weight sharing permanent in place: every shared layer gets back a plain Parameter (its
    quantized values, outliers included). Returns the model."""
    for name, module in shared_layers(model).items():
        _uninstall(module, split_name(name)[1])
    return model


def _uninstall(module: nn.Module, param: str) -> None:
    """``module.<param>`` back to a plain Parameter holding its current shared value."""
    value = _effective(module, param).detach().clone()
    del module._parameters[param + CODEBOOK]
    del module._buffers[param + INDEX]
    if param + OUTLIERS in module._parameters:
        del module._parameters[param + OUTLIERS]
        del module._buffers[param + OUTLIER_MASK]
    hook = _sharing_hook(module)
    hook.params.remove(param)
    delattr(module, param)
    module.register_parameter(param, nn.Parameter(value))
    if not hook.params:
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, (SharedWeights, DetachSharedWeights))]:
                del hooks[key]


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a (pruned and/or weight-shared, or plain) ``state_dict`` into a model of the same architecture,
    in place; returns the model.

    Masks, codebooks and L0 gates in the state are installed first. All or nothing: the load is tried on a copy
    first, so a state that does not fit raises and leaves ``model`` as it was.
    """
    _load_compressed(copy.deepcopy(model), state_dict, strict)
    _load_compressed(model, state_dict, strict)
    return model


def _load_compressed(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool) -> None:
    for key, codebook in state_dict.items():
        if key.endswith(CODEBOOK):
            name = key[: -len(CODEBOOK)]
            module_name, param = split_name(name)
            module = model.get_submodule(module_name)
            index = state_dict.get(name + INDEX)
            if index is None:
                raise ValueError(f"{key} has no {name + INDEX} beside it")
            present = getattr(module, param + CODEBOOK, None)
            outlier_mask, outliers = state_dict.get(name + OUTLIER_MASK), state_dict.get(name + OUTLIERS)
            has_outliers = hasattr(module, param + OUTLIERS)
            if isinstance(present, nn.Parameter) and (present.shape != codebook.shape
                                                      or has_outliers != (outlier_mask is not None)
                                                      or (has_outliers and outliers.shape != getattr(module, param + OUTLIERS).shape)):
                _uninstall(module, param)  # a differently shaped sharing state: replaced by the saved one
                present = None
            if not isinstance(present, nn.Parameter):
                install(module, param, codebook, index, outlier_mask, outliers)
    l0.load_gates(model, state_dict)  # learned-sparsity gates still training (deepzip.prune.l0)
    apply_masks(model, saved_masks(model, state_dict))
    model.load_state_dict(state_dict, strict=strict)
    enforce(model)
    for module in set(shared_layers(model).values()):
        _refresh(module)
    l0.refresh(model)
