"""Masks as explicit module state, like ``torch.nn.utils.prune`` but keeping ``weight`` a plain Parameter.

For a pruned parameter ``weight`` the owning module carries a bool buffer ``weight_mask`` (so it is in
``state_dict``). Pruned entries are zero in ``weight``, their gradients are zeroed by a tensor hook that
a forward pre-hook (`MaskGradients`, kept in the module's own hook dict) installs on whichever Parameter
object the module holds, and `mask_optimizer_state` zeroes their momentum; with zero weight, gradient and state, SGD
(momentum, weight decay) and Adam/AdamW leave them exactly zero. `remove` makes pruning permanent.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Mapping

import torch
from torch import nn

from .targets import split_name

MASK_SUFFIX = "_mask"


class MaskGradients:
    """Masks the gradients of a module's pruned Parameters, so no optimizer step revives a pruned weight.

    Installed as a forward pre-hook, i.e. in the module's own hook dict, which ``copy.deepcopy``, pickling,
    ``.to(device)`` and wrappers such as DistributedDataParallel keep. Before each forward it makes sure
    each masked Parameter *object* carries a gradient hook: a deep copy or a ``load_state_dict(assign=True)``
    makes new Parameter objects, which get theirs at their first forward. The gradient hook reads the
    mask buffer at call time, so in-place mask updates take effect at once.
    """

    def __init__(self) -> None:
        self._hooked: dict[str, tuple[weakref.ref, Any]] = {}  # param name -> (that Parameter, its hook handle)
        self.dense: dict[str, torch.Tensor] | None = None  # see `capture_dense_gradients`

    def __call__(self, module: nn.Module, _inputs: Any = None) -> None:
        for buffer in module._buffers:
            if not buffer.endswith(MASK_SUFFIX):
                continue
            name = buffer[: -len(MASK_SUFFIX)]
            param = module._parameters.get(name)
            hooked = self._hooked.get(name)
            if param is None or (hooked is not None and hooked[0]() is param):
                continue  # weight-shared (the codebook forward applies the mask), or already hooked
            handle = param.register_hook(functools.partial(_masked_gradient, module, buffer))
            self._hooked[name] = (weakref.ref(param), handle)

    def release(self, name: str) -> None:
        hooked = self._hooked.pop(name, None)
        if hooked is not None:
            hooked[1].remove()

    def __getstate__(self) -> dict:
        # A copy starts with no hooked Parameters (its own Parameters are new objects) and captures nothing.
        return {"_hooked": {}, "dense": None}


class DetachParams:
    """A forward hook for a pre-hook that sets computed parameters (``source.params``) on its module: after
    the forward the graph holds the computed tensor, the attribute keeps a detached copy, so the module stays
    deep-copyable and does not pin the graph. Each mechanism subclasses it, so it removes only its own."""

    def __init__(self, source) -> None:
        self.source = source

    def __call__(self, module: nn.Module, _inputs=None, _output=None) -> None:
        for param in self.source.params:
            setattr(module, param, getattr(module, param).detach())


def _masked_gradient(module: nn.Module, buffer: str, grad: torch.Tensor) -> torch.Tensor:
    hook = _mask_hook(module)
    if hook is not None and getattr(hook, "dense", None) is not None:  # capturing: keep the dense gradient before masking it
        name = buffer[: -len(MASK_SUFFIX)]
        hook.dense[name] = grad.detach().clone() if name not in hook.dense else hook.dense[name] + grad.detach()
    return grad.masked_fill(~module._buffers[buffer], 0.0)


def capture_dense_gradients(model: nn.Module, on: bool = True) -> None:
    """A switch for sparse training (RigL's regrowth needs the dense gradient at its update steps).

    While on, each backward also keeps every masked parameter's gradient from *before* masking (summed
    over backwards), read with `captured_gradients`; ``.grad`` stays masked, so no optimizer sees the
    dense values. Switching on starts empty; ``on=False`` stops capturing and drops what was kept."""
    for module in model.modules():
        hook = _mask_hook(module)
        if hook is not None:
            hook.dense = {} if on else None


def captured_gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    """The dense gradients captured so far (see `capture_dense_gradients`), keyed by parameter name."""
    out: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        hook = _mask_hook(module)
        if hook is not None and hook.dense:
            out.update({f"{module_name}.{k}" if module_name else k: v for k, v in hook.dense.items()})
    return out


def _mask_hook(module: nn.Module) -> MaskGradients | None:
    return next((h for h in module._forward_pre_hooks.values() if isinstance(h, MaskGradients)), None)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, param_name = split_name(name)
    module = model.get_submodule(module_name)
    if not isinstance(getattr(module, param_name, None), torch.Tensor):
        raise ValueError(f"{name!r} is not a parameter of the model")
    return module, param_name


def _is_shared(module: nn.Module, param_name: str) -> bool:
    """Weight-shared (deepzip.quantize): the weight is derived from a codebook, not a Parameter."""
    return not isinstance(getattr(module, param_name), nn.Parameter)


def _install(module: nn.Module, param_name: str, mask: torch.Tensor) -> None:
    buffer = param_name + MASK_SUFFIX
    if buffer in module._buffers:
        module._buffers[buffer].copy_(mask)
    else:
        module.register_buffer(buffer, mask.clone())
    hook = _mask_hook(module)
    if hook is None:
        hook = MaskGradients()
        module.register_forward_pre_hook(hook)
    hook(module)
    with torch.no_grad():
        # masked_fill, not multiply: a pruned negative weight must become +0.0, not -0.0, so that
        # every stage (and the .dz decoder) agrees on its bits.
        getattr(module, param_name).masked_fill_(~getattr(module, buffer), 0.0)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Install (or tighten) the given masks, keyed by parameter name. All are checked before any is applied,
    so a bad mask leaves the model as it was."""
    checked = {}
    for name, mask in masks.items():
        module, param_name = _owner(model, name)
        weight = getattr(module, param_name)
        if not isinstance(mask, torch.Tensor) or mask.shape != weight.shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask for {name} must be a tensor of shape {tuple(weight.shape)}, got {got}")
        checked[name] = (module, param_name, mask.to(dtype=torch.bool, device=weight.device))
    for module, param_name, mask in checked.values():
        _install(module, param_name, mask)


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every installed mask, keyed by the parameter name it masks."""
    masks = {}
    for module_name, module in model.named_modules():
        for buffer, value in module._buffers.items():
            if buffer.endswith(MASK_SUFFIX) and isinstance(getattr(module, buffer[: -len(MASK_SUFFIX)], None), torch.Tensor):
                param = buffer[: -len(MASK_SUFFIX)]
                masks[f"{module_name}.{param}" if module_name else param] = value
    return masks


def is_pruned(model: nn.Module) -> bool:
    return bool(get_masks(model))


def mask_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Zero the optimizer state (momentum, Adam moments) of pruned entries, after masks change."""
    masks = {id(getattr(*_owner(model, name))): mask for name, mask in get_masks(model).items()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            mask = masks.get(id(param))
            if mask is None:
                continue
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.masked_fill_(~mask, 0.0)


def enforce(model: nn.Module) -> None:
    """Re-zero every pruned entry (for weights changed outside training, e.g. loaded or rewound)."""
    with torch.no_grad():
        for name, mask in get_masks(model).items():
            module, param_name = _owner(model, name)
            getattr(module, param_name).masked_fill_(~mask, 0.0)


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: drop masks and hooks; the pruned weights stay zero."""
    shared = [n for n in get_masks(model) if _is_shared(*_owner(model, n))]
    if shared:
        raise ValueError(f"{', '.join(shared)} are weight-shared: call deepzip.quantize.finalize(model) first")
    enforce(model)
    for name in list(get_masks(model)):
        module, param_name = _owner(model, name)
        del module._buffers[param_name + MASK_SUFFIX]
        hook = _mask_hook(module)
        if hook is not None:
            hook.release(param_name)
    for module in model.modules():
        if not any(b.endswith(MASK_SUFFIX) for b in module._buffers):
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, MaskGradients):
                    del module._forward_pre_hooks[key]
    return model


def _has_tensor(model: nn.Module, name: str) -> bool:
    try:
        _owner(model, name)
        return True
    except (ValueError, AttributeError):
        return False


def saved_masks(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks a saved ``state_dict`` holds for this model's tensors, keyed by the parameter they mask."""
    return {key[: -len(MASK_SUFFIX)]: value for key, value in state_dict.items()
            if key.endswith(MASK_SUFFIX) and _has_tensor(model, key[: -len(MASK_SUFFIX)])}
