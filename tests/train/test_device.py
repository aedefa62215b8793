import pytest
import torch

from deepzip.train import device
from deepzip.train.device import resolve_device


def test_resolve_device_names_what_is_available():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown device 'gpu'; use auto"):
        resolve_device("gpu")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available here"):
            resolve_device("cuda:0")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available here"):
            resolve_device("mps")


def test_make_deterministic_warms_mkl_vector_math_once(monkeypatch):
    """Each VML function's first call in the process is a 1-element one, made before training's split ones:
    MKL 2024.2 can run one thread's chunk of a first call made by two threads at once through a low-accuracy
    kernel (pytorch/pytorch#188792), which made one of two identical lottery runs train differently."""
    calls = []
    for name in device.VML_OPS:
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda x, _real=real, _name=name: calls.append((_name, x.dtype, x.numel()))
                            or _real(x))
    device.warm_vml.cache_clear()  # (as in a fresh process)
    device.make_deterministic(torch.device("cpu"))
    device.make_deterministic(torch.device("cpu"))  # once a process
    assert sorted(calls, key=str) == sorted(((n, d, 1) for n in device.VML_OPS for d in (torch.float32, torch.float64)),
                                            key=str)
