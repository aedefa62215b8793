"""A user's own CNN: nothing deepzip-specific in it."""

from torch import nn


def small_cnn() -> nn.Module:
    """For 1x8x8 inputs (scikit-learn's digits), 10 classes."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10),
    )
