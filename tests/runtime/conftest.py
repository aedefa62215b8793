"""Shared by the GPU runtime's tests: ``device='cuda'`` where the kernels run, and a small pruned,
weight-shared MLP to convert."""

import pytest
import torch
from torch import nn

from deepzip import prune as P
from deepzip import quantize as Q

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def gpu_here(monkeypatch):
    """device='cuda' runs where the kernels run: on the GPU, or on the CPU through the interpreter."""
    if DEVICE == "cpu":
        from deepzip.runtime import gpu

        monkeypatch.setattr(gpu, "check_device", lambda device: torch.device("cpu"))


def small_model(seed=0):
    """24 -> 40 -> 16 -> 5, the first two layers 85% pruned, all 4-bit weight-shared; in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 5))
    P.prune(model, 0.85, "uniform", exclude=["4"])
    Q.quantize(model, 4)
    return model.eval()
