"""Weight sharing as explicit module state: a codebook Parameter and an index buffer per layer.

For a shared parameter ``weight`` the module holds ``weight_codebook`` (fp32[k], trainable) and
``weight_index`` (int16, same shape as the weight), plus the pruning mask ``weight_mask`` when the
layer is pruned. A forward pre-hook sets ``module.weight = where(mask, codebook[index], 0)``, so autograd gives
each centroid the sum of the gradients of the weights in its cluster (Han et al. 2016, Figure 3) and
pruned positions stay exactly zero. `finalize` turns the layer back into an ordinary Parameter.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..prune.masks import MASK_SUFFIX, get_masks
from ..prune.targets import split_name
from .kmeans import MAX_ITERS, kmeans_1d
from .lookup import shared_values

CODEBOOK, INDEX = "_codebook", "_index"
_HOOK = "_deepzip_sharing_params"
_HANDLE = "_deepzip_sharing_handle"


def _effective(module: nn.Module, param: str) -> torch.Tensor:
    weight = shared_values(getattr(module, param + CODEBOOK), getattr(module, param + INDEX))
    mask = getattr(module, param + MASK_SUFFIX, None)
    # where(), not multiply: pruned positions are +0.0 exactly (a negative centroid times 0 is -0.0)
    return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype)) if mask is not None else weight


def _refresh(module: nn.Module, _inputs=None) -> None:
    for param in module.__dict__.get(_HOOK, {}):
        setattr(module, param, _effective(module, param))


def _detach(module: nn.Module, _inputs=None, _output=None) -> None:
    # After the forward the graph holds the effective weight; the attribute keeps a detached copy so
    # the module stays deep-copyable and does not pin the graph.
    for param in module.__dict__.get(_HOOK, {}):
        setattr(module, param, getattr(module, param).detach())


def install(module: nn.Module, param: str, codebook: torch.Tensor, index: torch.Tensor) -> None:
    """Replace ``module.<param>`` by a shared codebook + index (pure state change, no clustering)."""
    original = getattr(module, param)
    if index.shape != original.shape:
        raise ValueError(f"index shape {tuple(index.shape)} does not match {param} {tuple(original.shape)}")
    if isinstance(original, nn.Parameter):
        del module._parameters[param]
    module.register_parameter(param + CODEBOOK, nn.Parameter(codebook.detach().clone().float()))
    module.register_buffer(param + INDEX, index.to(torch.int16 if len(codebook) <= 32767 else torch.int32))
    hooks = module.__dict__.setdefault(_HOOK, {})
    if not hooks:  # one pre-hook per module refreshes all of its shared parameters
        module.__dict__[_HANDLE] = (module.register_forward_pre_hook(_refresh), module.register_forward_hook(_detach))
    hooks[param] = True
    setattr(module, param, _effective(module, param).detach())


def shared_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{parameter name: owning module} for every weight-shared parameter."""
    out = {}
    for module_name, module in model.named_modules():
        for param in module.__dict__.get(_HOOK, {}):
            out[f"{module_name}.{param}" if module_name else param] = module
    return out


def codebooks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{parameter name: (codebook, index)} of every shared parameter."""
    return {name: (getattr(m, split_name(name)[1] + CODEBOOK), getattr(m, split_name(name)[1] + INDEX))
            for name, m in shared_layers(model).items()}


def share(model: nn.Module, name: str, bits: int, init: str = "linear", seed: int = 0, iters: int = MAX_ITERS) -> None:
    """Cluster the surviving (unmasked) weights of parameter ``name`` into 2**bits shared values."""
    module = model.get_submodule(split_name(name)[0])
    param = split_name(name)[1]
    weight = getattr(module, param).detach()
    mask = get_masks(model).get(name)
    alive = mask.reshape(-1) if mask is not None else torch.ones(weight.numel(), dtype=torch.bool)
    codebook, alive_index = kmeans_1d(weight.reshape(-1)[alive].float(), 2 ** bits, init, iters=iters, seed=seed)
    if len(codebook) == 0:  # an empty layer: one zero centroid keeps the state well-formed
        codebook = torch.zeros(1)
    index = torch.zeros(weight.numel(), dtype=torch.int64)
    index[alive] = alive_index
    install(module, param, codebook, index.reshape(weight.shape))


def finalize(model: nn.Module) -> nn.Module:
    """Make weight sharing permanent: every shared layer gets back a plain Parameter (its quantized values)."""
    for name, module in shared_layers(model).items():
        param = split_name(name)[1]
        value = _effective(module, param).detach().clone()
        del module._parameters[param + CODEBOOK]
        del module._buffers[param + INDEX]
        module.__dict__[_HOOK].pop(param)
        delattr(module, param)
        module.register_parameter(param, nn.Parameter(value))
        if not module.__dict__[_HOOK]:
            for handle in module.__dict__.pop(_HANDLE):
                handle.remove()
    return model


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
    """Load a pruned and/or weight-shared ``state_dict`` into a fresh model of the same architecture."""
    from ..prune.masks import load_state_dict as load_pruned

    for key, codebook in state_dict.items():
        if key.endswith(CODEBOOK):
            name = key[: -len(CODEBOOK)]
            module = model.get_submodule(split_name(name)[0])
            index = state_dict[name + INDEX]
            if not isinstance(getattr(module, split_name(name)[1] + CODEBOOK, None), nn.Parameter):
                install(module, split_name(name)[1], codebook, index)
    result = load_pruned(model, state_dict, strict=strict)
    _refresh_all(model)
    return result


def _refresh_all(model: nn.Module) -> None:
    for module in set(shared_layers(model).values()):
        _refresh(module)
        _detach(module)
