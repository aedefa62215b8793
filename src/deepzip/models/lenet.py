"""LeNet-300-100 and the Caffe LeNet-5 used by Deep Compression (Han et al. 2016, Table 2/3)."""

from __future__ import annotations

import math

from torch import nn
import torch.nn.functional as F

from .registry import MODELS


@MODELS.register("lenet300_100")
class LeNet300100(nn.Module):
    """784-300-100-10 fully connected with ReLU (266,610 parameters on 28x28 input)."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@MODELS.register("lenet5")
class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20 5x5, pool, conv 50 5x5, pool, fc 500, fc 10 (431,080 parameters)."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < 16:
            raise ValueError(f"lenet5 needs inputs of at least 16x16 pixels, got {height}x{width}")
        self.conv1 = nn.Conv2d(channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        flat = 50 * (((height - 4) // 2 - 4) // 2) * (((width - 4) // 2 - 4) // 2)
        self.fc1 = nn.Linear(flat, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))
