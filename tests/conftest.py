import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO.parent / "shared" / "data" / "mnist-t10k"

# Tests must never touch the network nor the user's download cache.
os.environ["DEEPZIP_OFFLINE"] = "1"
torch.set_num_threads(1)
# Without a GPU the Triton kernels (deepzip.runtime.triton_kernels, when Triton is installed) run in
# Triton's interpreter on CPU tensors; read when the kernels are defined, so set before deepzip loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def digits():
    from deepzip import data

    return data.load("digits", val_size=300)
