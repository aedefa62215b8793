"""Weight sharing as explicit module state: a codebook Parameter and an index buffer per layer.

For a shared parameter ``weight`` the module holds ``weight_codebook`` (fp32[k], trainable) and
``weight_index`` (uint8 up to 8 bits, else int32; same shape as the weight), plus the pruning mask ``weight_mask`` when the
layer is pruned. A forward pre-hook sets ``module.weight = where(mask, codebook[index], 0)``, so autograd gives
each centroid the sum of the gradients of the weights in its cluster (Han et al. 2016, Figure 3) and
pruned positions stay exactly zero. `finalize` turns the layer back into an ordinary Parameter.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
from torch import nn

from ..prune.masks import MASK_SUFFIX, apply_masks, enforce, get_masks, saved_masks
from ..prune.targets import split_name
from .kmeans import MAX_ITERS, kmeans_1d
from .lookup import shared_values

CODEBOOK, INDEX = "_codebook", "_index"


def _effective(module: nn.Module, param: str) -> torch.Tensor:
    weight = shared_values(getattr(module, param + CODEBOOK), getattr(module, param + INDEX))
    mask = getattr(module, param + MASK_SUFFIX, None)
    # where(), not multiply: pruned positions are +0.0 exactly (a negative centroid times 0 is -0.0)
    return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)) \
        if mask is not None else weight


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


class DetachSharedWeights:
    """The matching forward hook: after the forward the graph holds the effective weight; the attribute
    keeps a detached copy so the module stays deep-copyable and does not pin the graph."""

    def __init__(self, refresh: SharedWeights) -> None:
        self.refresh = refresh

    def __call__(self, module: nn.Module, _inputs=None, _output=None) -> None:
        for param in self.refresh.params:
            setattr(module, param, getattr(module, param).detach())


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


def install(module: nn.Module, param: str, codebook: torch.Tensor, index: torch.Tensor) -> None:
    """Replace ``module.<param>`` by a shared codebook + index (pure state change, no clustering)."""
    original = getattr(module, param)
    if index.shape != original.shape:
        raise ValueError(f"index shape {tuple(index.shape)} does not match {param} {tuple(original.shape)}")
    device = original.device
    if isinstance(original, nn.Parameter):
        del module._parameters[param]
    module.register_parameter(param + CODEBOOK, nn.Parameter(codebook.detach().clone().float().to(device)))
    module.register_buffer(param + INDEX, index.to(device=device, dtype=index_dtype(len(codebook))))
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
    quantized values). Returns the model."""
    for name, module in shared_layers(model).items():
        param = split_name(name)[1]
        value = _effective(module, param).detach().clone()
        del module._parameters[param + CODEBOOK]
        del module._buffers[param + INDEX]
        hook = _sharing_hook(module)
        hook.params.remove(param)
        delattr(module, param)
        module.register_parameter(param, nn.Parameter(value))
        if not hook.params:
            for hooks in (module._forward_pre_hooks, module._forward_hooks):
                for key in [k for k, h in hooks.items() if isinstance(h, (SharedWeights, DetachSharedWeights))]:
                    del hooks[key]
    return model


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a (pruned and/or weight-shared, or plain) ``state_dict`` into a model of the same architecture,
    in place; returns the model.

    Masks and codebooks in the state are installed first. All or nothing: the load is tried on a copy
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
            if not isinstance(getattr(module, param + CODEBOOK, None), nn.Parameter):
                install(module, param, codebook, index)
    apply_masks(model, saved_masks(model, state_dict))
    model.load_state_dict(state_dict, strict=strict)
    enforce(model)
    for module in set(shared_layers(model).values()):
        _refresh(module)
