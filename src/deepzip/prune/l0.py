"""Learned sparsity: L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018).

Each gated weight w gets a gate z in [0, 1] with a learned location ``log_alpha``; the layer computes
with ``w * z``. While training z is sampled from the hard-concrete distribution,

    u ~ U(0, 1),  s = sigmoid((log u - log(1 - u) + log_alpha) / beta),  z = min(1, max(0, s (zeta - gamma) + gamma)),

so exact zeros have positive probability and the expected L0 norm is differentiable:

    P(z != 0) = sigmoid(log_alpha - beta log(-gamma / zeta)).

At test time the gate is deterministic, ``min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma))``.
The paper's constants: beta = 2/3, gamma = -0.1, zeta = 1.1; log_alpha starts at
``log(1 - droprate_init) - log(droprate_init)`` (+ N(0, 0.01) noise) and is kept in [-10, log 1e2]
(the reference's floor, log 1e-2, leaves a closed gate P(z != 0) = 4.7%: see `constrain`).

State (in the module, like the other compression state): for a gated ``weight`` the module holds
``weight_orig`` (the Parameter), ``weight_log_alpha`` (the gates' Parameter) and ``weight_gate_draws``
(an int64 buffer counting sampled forwards, so the gate noise of draw k is the same after a resume);
a forward pre-hook (`L0Gates`) sets ``module.weight`` to ``weight_orig * z`` (and 0 where a
``weight_mask`` says pruned) before each forward. `finish` turns the learned gates into ordinary
``weight_mask`` state: the positions whose test-time gate is open, or the top ``1 - sparsity`` by
log_alpha when a target is given (exact). Training with the penalty is a workflow (`deepzip.train`).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from . import criteria
from .masks import MASK_SUFFIX, DetachParams, apply_masks, get_masks
from .targets import find_targets, split_name

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
EPS = 1e-6  # uniform noise kept in [EPS, 1 - EPS] (the reference's epsilon)
LOG_ALPHA_RANGE = (-10.0, math.log(1e2))  # see `constrain`
ORIG, LOG_ALPHA, DRAWS = "_orig", "_log_alpha", "_gate_draws"


# ---- pure functions on tensors --------------------------------------------------------------------

def initial_log_alpha(droprate: float) -> float:
    """The log_alpha whose gates start with dropout rate ``droprate`` (the paper's ``droprate_init``)."""
    if not 0 < droprate < 1:
        raise ValueError(f"droprate must be in (0, 1), got {droprate}")
    return math.log(1 - droprate) - math.log(droprate)


def prob_nonzero(log_alpha: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """P(z != 0) per gate: the expected L0 norm's terms, sigmoid(log_alpha - beta log(-gamma / zeta))."""
    return torch.sigmoid(log_alpha - beta * math.log(-GAMMA / ZETA))


def sample_gates(log_alpha: torch.Tensor, uniform: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Hard-concrete gates for uniform noise ``uniform`` in (0, 1) (same shape): differentiable in log_alpha."""
    s = torch.sigmoid((torch.log(uniform) - torch.log1p(-uniform) + log_alpha) / beta)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def deterministic_gates(log_alpha: torch.Tensor) -> torch.Tensor:
    """The test-time gates, min(1, max(0, sigmoid(log_alpha) (zeta - gamma) + gamma))."""
    return (torch.sigmoid(log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def open_threshold() -> float:
    """The log_alpha above which the test-time gate is nonzero: sigmoid(la) > -gamma / (zeta - gamma)."""
    p = -GAMMA / (ZETA - GAMMA)
    return math.log(p) - math.log1p(-p)


# ---- gate state in the module ---------------------------------------------------------------------

class L0Gates:
    """The forward pre-hook of a gated module: sets each gated ``module.<param>`` to ``<param>_orig * z``
    (sampled gates in training mode, deterministic in eval mode; 0 where ``<param>_mask`` prunes).

    Kept in the module's own hook dict, so ``copy.deepcopy``, pickling and ``.to(device)`` keep it; it
    holds only parameter names, the temperature and a seed. The noise of a sampled forward comes from a
    generator seeded by (seed, layer, draw count), the count being a buffer, so a resumed run draws the
    same gates as an uninterrupted one."""

    def __init__(self, beta: float = BETA, seed: int = 0) -> None:
        self.params: dict[str, int] = {}  # gated parameter -> its stream number
        self.beta, self.seed = float(beta), int(seed)

    def __call__(self, module: nn.Module, _inputs=None) -> None:
        for param, stream in self.params.items():
            setattr(module, param, self.gated(module, param, stream, sample=module.training))

    def gated(self, module: nn.Module, param: str, stream: int, sample: bool) -> torch.Tensor:
        log_alpha = getattr(module, param + LOG_ALPHA)
        if sample:
            draws = getattr(module, param + DRAWS)
            generator = torch.Generator(device=log_alpha.device)
            generator.manual_seed((self.seed * 1_000_003 + stream) * 1_000_003 + int(draws))
            uniform = torch.rand(log_alpha.shape, generator=generator, device=log_alpha.device,
                                 dtype=log_alpha.dtype) * (1 - 2 * EPS) + EPS
            draws += 1
            gates = sample_gates(log_alpha, uniform, self.beta)
        else:
            gates = deterministic_gates(log_alpha)
        weight = getattr(module, param + ORIG) * gates.to(getattr(module, param + ORIG).dtype)
        mask = getattr(module, param + MASK_SUFFIX, None)
        # where(), not multiply: pruned positions stay +0.0 exactly, as everywhere in deepzip
        return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device)) \
            if mask is not None else weight


class DetachGates(DetachParams):
    """The matching forward hook: the attribute keeps a detached copy of the gated weight."""


def _gates_hook(module: nn.Module) -> L0Gates | None:
    return next((h for h in module._forward_pre_hooks.values() if isinstance(h, L0Gates)), None)


def gated_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{parameter name: owning module} for every gated parameter, in model order."""
    out = {}
    for module_name, module in model.named_modules():
        hook = _gates_hook(module)
        for param in hook.params if hook is not None else ():
            out[f"{module_name}.{param}" if module_name else param] = module
    return out


def install(module: nn.Module, param: str, log_alpha: torch.Tensor, beta: float = BETA, seed: int = 0,
            stream: int = 0) -> None:
    """Gate ``module.<param>`` with the given log_alpha (same shape): a pure state change, no training."""
    weight = getattr(module, param)
    if not isinstance(weight, nn.Parameter):
        raise ValueError(f"{param} of {type(module).__name__} is not a plain Parameter (already gated or "
                         f"weight-shared); gates go on an unquantized weight")
    if tuple(log_alpha.shape) != tuple(weight.shape):
        raise ValueError(f"log_alpha of shape {tuple(log_alpha.shape)} does not match {param} {tuple(weight.shape)}")
    hook = _gates_hook(module)
    if hook is not None and (hook.beta != float(beta) or hook.seed != int(seed)):
        raise ValueError(f"{type(module).__name__} is gated with temperature {hook.beta} and seed {hook.seed}; "
                         f"one module's gates share them")
    del module._parameters[param]
    module.register_parameter(param + ORIG, weight)  # the same Parameter object: its values and grad state
    module.register_parameter(param + LOG_ALPHA, nn.Parameter(log_alpha.detach().clone().float().to(weight.device)))
    module.register_buffer(param + DRAWS, torch.zeros((), dtype=torch.int64, device=weight.device))
    if hook is None:
        hook = L0Gates(beta, seed)
        module.register_forward_pre_hook(hook)
        module.register_forward_hook(DetachGates(hook))
    hook.params[param] = stream
    with torch.no_grad():
        setattr(module, param, hook.gated(module, param, stream, sample=False))


def refresh(model: nn.Module) -> None:
    """Set every gated weight attribute to its test-time value (after a load, before reading weights)."""
    with torch.no_grad():
        for name, module in gated_layers(model).items():
            hook, param = _gates_hook(module), split_name(name)[1]
            setattr(module, param, hook.gated(module, param, hook.params[param], sample=False))


def install_gates(model: nn.Module, names: list[str] | None = None, droprate_init: float = 0.5,
                  beta: float = BETA, seed: int = 0, extra=(), exclude=()) -> list[str]:
    """Gate every target weight (``names``, or the prunable weights found as `deepzip.prune` finds them),
    log_alpha drawn around `initial_log_alpha` (std 0.01, seeded). All or nothing. Returns the names."""
    targets = find_targets(model, extra, exclude)
    names = list(targets) if names is None else list(names)
    bad = [n for n in names if n not in targets]
    if bad:
        raise ValueError(f"cannot gate {', '.join(bad)}; prunable: {', '.join(targets)}")
    present = gated_layers(model)
    for name in names:
        if name in present or not isinstance(getattr(targets[name], split_name(name)[1]), nn.Parameter):
            raise ValueError(f"{name} is already gated or weight-shared; gates go on a plain weight")
    generator = torch.Generator().manual_seed(seed)
    mean = initial_log_alpha(droprate_init)
    for stream, name in enumerate(names):
        module, param = targets[name], split_name(name)[1]
        shape = getattr(module, param).shape
        log_alpha = mean + 0.01 * torch.randn(shape, generator=generator)
        install(module, param, log_alpha, beta, seed, stream)
    return names


def expected_l0(model: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """{gated parameter: (expected number of nonzero gates, number of gated positions)}, differentiable
    in log_alpha; positions a ``weight_mask`` already prunes count for neither."""
    out = {}
    for name, module in gated_layers(model).items():
        param = split_name(name)[1]
        hook = _gates_hook(module)
        p = prob_nonzero(getattr(module, param + LOG_ALPHA), hook.beta)
        mask = getattr(module, param + MASK_SUFFIX, None)
        if mask is not None:
            out[name] = (p[mask].sum(), int(mask.sum()))
        else:
            out[name] = (p.sum(), p.numel())
    return out


def log_alphas(model: nn.Module) -> list[nn.Parameter]:
    """The gate Parameters (their own optimizer trains them, see `deepzip.train`)."""
    return [getattr(m, split_name(n)[1] + LOG_ALPHA) for n, m in gated_layers(model).items()]


def constrain(model: nn.Module) -> None:
    """Keep every log_alpha in [-10, log 1e2] after each step. The reference clamps to [log 1e-2, log 1e2];
    at log 1e-2 a closed gate still has P(z != 0) = 4.7%, so the expected density could never fall below
    ~5% and a 95-98% target would stay out of reach; at -10 it is 2e-4."""
    with torch.no_grad():
        for log_alpha in log_alphas(model):
            log_alpha.clamp_(*LOG_ALPHA_RANGE)


def gate_masks(model: nn.Module, sparsity: float | Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """The keep-masks the learned gates give, nothing changed: where the test-time gate is open
    (``sparsity`` None), or exactly the top ``1 - sparsity`` by log_alpha, over all gated weights
    together (a number: the gates choose each layer's share) or per layer ({name: sparsity}).
    Positions an existing ``weight_mask`` prunes stay pruned."""
    layers = gated_layers(model)
    scores = {}
    for name, module in layers.items():
        param = split_name(name)[1]
        score = getattr(module, param + LOG_ALPHA).detach().float()
        mask = getattr(module, param + MASK_SUFFIX, None)
        scores[name] = score.masked_fill(~mask, -math.inf) if mask is not None else score
    if sparsity is None:
        return {n: (deterministic_gates(s) > 0) & torch.isfinite(s) for n, s in scores.items()}
    if isinstance(sparsity, Mapping):
        missing = [n for n in scores if n not in sparsity]
        if missing:
            raise ValueError(f"no target sparsity for gated layer(s) {', '.join(missing)}")
        return {n: _top(s, sparsity[n]) for n, s in scores.items()}
    flat = torch.cat([s.reshape(-1) for s in scores.values()]) if scores else torch.zeros(0)
    keep = _top(flat, sparsity).split([s.numel() for s in scores.values()])
    return {n: k.reshape(s.shape) for (n, s), k in zip(scores.items(), keep)}


def _top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    criteria.check_sparsity(sparsity)
    keep = min(criteria.kept_count(scores.numel(), sparsity), int(torch.isfinite(scores).sum()))
    return criteria.topk_mask(scores, keep)


def finish(model: nn.Module, sparsity: float | Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Turn the learned gates into masks, in place: each gated weight becomes a plain Parameter holding
    ``weight_orig * z`` (the test-time gate folded in; a kept position whose gate is closed keeps its
    weight unscaled, so no kept weight is zero) with ``weight_mask`` from `gate_masks`. Returns the masks."""
    masks = gate_masks(model, sparsity)
    for name, module in gated_layers(model).items():
        param = split_name(name)[1]
        with torch.no_grad():
            gates = deterministic_gates(getattr(module, param + LOG_ALPHA).detach())
            orig = getattr(module, param + ORIG).detach()
            value = orig * torch.where(gates > 0, gates, torch.ones_like(gates)).to(orig.dtype)
        uninstall(module, param, value)
    apply_masks(model, masks)
    return masks


def uninstall(module: nn.Module, param: str, value: torch.Tensor | None = None) -> None:
    """Remove the gates of ``module.<param>``: a plain Parameter again, holding ``value`` (default: the
    ungated ``<param>_orig``)."""
    hook = _gates_hook(module)
    orig = module._parameters.pop(param + ORIG)
    del module._parameters[param + LOG_ALPHA]
    del module._buffers[param + DRAWS]
    del hook.params[param]
    delattr(module, param)
    if value is not None:
        with torch.no_grad():
            orig.copy_(value)
    module.register_parameter(param, orig)
    if not hook.params:
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, (L0Gates, DetachGates))]:
                del hooks[key]


def saved_gates(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{gated parameter: saved log_alpha} of a ``state_dict`` holding gate state."""
    return {key[: -len(LOG_ALPHA)]: value for key, value in state_dict.items()
            if key.endswith(LOG_ALPHA) and key[: -len(LOG_ALPHA)] + ORIG in state_dict}


def load_gates(model: nn.Module, state_dict: Mapping[str, torch.Tensor], beta: float = BETA, seed: int = 0) -> None:
    """Install gates for every gated parameter of a saved state that the model does not gate yet (the
    values come with the following ``load_state_dict``). Used by `deepzip.load_state_dict`."""
    present = gated_layers(model)
    for stream, (name, log_alpha) in enumerate(saved_gates(state_dict).items()):
        if name not in present:
            module_name, param = split_name(name)
            install(model.get_submodule(module_name), param, log_alpha, beta, seed, stream)
