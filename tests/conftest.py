import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO.parent / "shared" / "data" / "mnist-t10k"

# Tests must never touch the network nor the user's download cache.
os.environ["DEEPZIP_OFFLINE"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from deepzip import data

    return data.load("digits", val_size=300)
