"""Conv-2/4/6 of the Lottery Ticket paper (Frankle & Carbin 2019, Figure 2), for 1-channel 28x28.

VGG-like: pairs of 3x3 convolutions (64, 128, 256 filters) each followed by 2x2 max-pooling, then
fully connected 256-256-classes. The paper's CIFAR-10 versions differ only in input size.
"""

from __future__ import annotations

from torch import nn

from .registry import MODELS


class ConvNet(nn.Module):
    def __init__(self, pairs: int, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for widths in (64, 128, 256)[:pairs]:
            layers += [nn.Conv2d(channels, widths, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(widths, widths, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = widths, height // 2, width // 2
        if min(height, width) < 1:
            raise ValueError(f"input {input_shape} is too small for {pairs} conv pairs")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * height * width, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


for _pairs in (1, 2, 3):
    def _builder(input_shape=(1, 28, 28), num_classes=10, _pairs=_pairs):
        return ConvNet(_pairs, input_shape, num_classes)

    MODELS.register(f"conv{2 * _pairs}")(_builder)
