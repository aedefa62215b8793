"""A user's own data set: a map-style torch Dataset of (image, label) pairs, split three ways."""

import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset


class Digits(Dataset):
    """scikit-learn's 8x8 digits as float images in [0, 1]."""

    def __init__(self, indices):
        digits = load_digits()
        self.images = torch.tensor(digits.images, dtype=torch.float32)[indices].unsqueeze(1) / 16.0
        self.labels = torch.tensor(digits.target, dtype=torch.long)[indices]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def splits():
    """(train, validation, test): what `--dataset digits_data:splits` calls."""
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    return Digits(order[:1200]), Digits(order[1200:1400]), Digits(order[1400:])
