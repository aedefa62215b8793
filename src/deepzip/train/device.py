"""Which torch device work runs on (``--device auto|cpu|cuda|cuda:N|mps``), and the settings that make
it repeat: same seed, same device, same result."""

from __future__ import annotations

import functools
import os

import torch

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda, cuda:N or mps"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device ``spec`` names, checked to exist here; a ValueError says what is available."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string ({DEVICE_HELP}), got {type(spec).__name__}")
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {spec!r}: no CUDA GPU is available here (this torch build: "
                             f"{torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {spec!r}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {spec!r}: MPS is not available here; use --device cpu")
        return device
    raise ValueError(f"unsupported device {spec!r}; use {DEVICE_HELP}")


def device_name(spec: str) -> str:
    """``spec`` checked for form (not availability: a saved config may name a GPU this machine lacks),
    with ``auto`` resolved to what this machine has."""
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string ({DEVICE_HELP}), got {type(spec).__name__}")
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; use {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {spec!r}; use {DEVICE_HELP}")
    return spec


# The float32 / float64 unary ops torch hands to MKL's vector math (VML) in this build (found with a debugger
# on vm[sd]* calls): Adam's sqrt among them. VML picks each function's kernel on its first call in a process;
# in MKL 2024.2 (torch 2.x wheels) a first call made by several threads at once can run one thread's chunk
# through a low-accuracy kernel (pytorch/pytorch#188792, fixed in torch by the same 1-element warm-up:
# pytorch/pytorch#188791), so one run in many, under load, trains on a slightly different first Adam step.
VML_OPS = ("acos", "asin", "atan", "cos", "erf", "erfc", "erfinv", "exp", "log", "log10", "log2", "sin", "sqrt",
           "tan", "tanh", "trunc")


@functools.cache
def warm_vml() -> None:
    """Make each VML function's first call in this process a 1-element one (on one thread); once (cached)."""
    for dtype in (torch.float32, torch.float64):
        x = torch.full((1,), 0.5, dtype=dtype)
        for name in VML_OPS:
            getattr(torch, name)(x)


def make_deterministic(device: torch.device) -> None:
    """Deterministic kernels on CUDA (cuBLAS workspace, cuDNN), so a rerun repeats bit for bit.

    torch then raises for an op that has no deterministic CUDA kernel instead of silently varying (the
    gpu-marked tests check that a training run repeats bit for bit; they have not yet run on a GPU). On the
    CPU deepzip's training is deterministic at any thread count once MKL's vector math is warmed (`warm_vml`).
    """
    warm_vml()
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
