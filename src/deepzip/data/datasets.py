"""Data sets by name, found locally first, split into train / validation / test.

Look-up order for IDX data sets (the first directory holding all four files wins):
  1. an explicit ``data_dir`` (or ``data_dir/<name>``),
  2. ``$DEEPZIP_DATA`` (or ``$DEEPZIP_DATA/<name>``),
  3. the Debian package's directory (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST),
  4. deepzip's download cache (``~/.cache/deepzip/<name>``),
  5. a download from the data set's official mirror into that cache, unless ``DEEPZIP_OFFLINE=1``.
When all fail, `DataNotFoundError` says where it looked and how to get the data.

The validation split is carved out of the training set with a fixed seed, so early stopping and
model selection never see the test set, and every run sees the same validation images.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, DataNotFoundError
from .idx import read_idx_pair

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    system_dir: str | None
    mirror: str
    how_to_get: str


SOURCES = {
    "fashion-mnist": IdxSource(
        system_dir="/usr/share/datasets/fashion-mnist",
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        how_to_get="install Debian's package: sudo apt-get install dataset-fashion-mnist",
    ),
    "mnist": IdxSource(
        system_dir=None,
        mirror="https://ossci-datasets.s3.amazonaws.com/mnist/",
        how_to_get="download the four *-ubyte.gz files of MNIST and pass --data-dir or set DEEPZIP_DATA",
    ),
}
DATASETS = (*SOURCES, "digits")
SPLIT_SEED = 20160101  # fixed: the validation split never depends on a run's seed


@dataclass(frozen=True)
class Split:
    """One split: images as float32 (N, C, H, W) in [0, 1] and int64 labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: Split
    val: Split
    test: Split

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.train.y.max(), self.test.y.max())) + 1


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    roots = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    if os.environ.get("DEEPZIP_DATA"):
        roots.append(Path(os.environ["DEEPZIP_DATA"]))
    dirs = [d for root in roots for d in (root, root / name)]
    if SOURCES[name].system_dir:
        dirs.append(Path(SOURCES[name].system_dir))
    dirs.append(cache_dir(name))
    return dirs


def cache_dir(name: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepzip" / name


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_split_files(name: str, split: str, data_dir) -> tuple[Path, Path] | None:
    for directory in _candidate_dirs(name, data_dir):
        found = [_find_file(directory, stem) for stem in IDX_FILES[split]]
        if all(found):
            return found[0], found[1]
    return None


def _download(name: str, split: str) -> tuple[Path, Path] | None:
    if os.environ.get("DEEPZIP_OFFLINE") == "1":
        return None
    target = cache_dir(name)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in IDX_FILES[split]:
        url = SOURCES[name].mirror + stem + ".gz"
        path = target / f"{stem}.gz"
        tmp = path.with_suffix(".gz.tmp")
        try:
            with urllib.request.urlopen(url, timeout=15) as response, open(tmp, "wb") as out:
                out.write(response.read())
        except (urllib.error.URLError, OSError, TimeoutError):
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, path)  # atomic: never a half-downloaded file under the real name
        paths.append(path)
    return paths[0], paths[1]


def _not_found(name: str, split: str, data_dir) -> DataNotFoundError:
    looked = "\n  ".join(str(d) for d in _candidate_dirs(name, data_dir))
    offline = " (skipped: DEEPZIP_OFFLINE=1)" if os.environ.get("DEEPZIP_OFFLINE") == "1" else ""
    return DataNotFoundError(
        f"{name} ({split} split) not found. Looked for {' and '.join(IDX_FILES[split])} (.gz or raw) in:\n  "
        f"{looked}\nand could not download it from {SOURCES[name].mirror}{offline}.\n"
        f"To get it: {SOURCES[name].how_to_get}"
    )


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)))


def load_split(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Split:
    """Load one raw split ('train' or 'test') of an IDX data set, finding or downloading it."""
    if name not in SOURCES:
        raise ValueError(f"unknown IDX data set {name!r}; allowed: {', '.join(SOURCES)}")
    if split not in IDX_FILES:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(IDX_FILES)}")
    files = _find_split_files(name, split, data_dir) or _download(name, split)
    if files is None:
        raise _not_found(name, split, data_dir)
    images, labels = read_idx_pair(*files)
    if images.dtype != np.uint8:
        raise DataError(f"{files[0]}: expected uint8 pixels, got {images.dtype}")
    return _to_split(images, labels)


def _digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits  # dev dependency: fast unit tests only

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test_idx, train_idx = order[:297], order[297:]  # 1797 images: 1500 train+val, 297 test
    return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])


def load(name: str, data_dir: str | os.PathLike | None = None, val_size: int = 5000) -> DataSplits:
    """Load a data set by name with a held-out validation split of ``val_size`` training images."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    if name == "digits":
        train, test = _digits()
    else:
        train, test = load_split(name, "train", data_dir), load_split(name, "test", data_dir)
    if not 0 <= val_size < len(train):
        raise ValueError(f"val_size must be in [0, {len(train)}) for {name}, got {val_size}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return DataSplits(
        name=name,
        train=Split(train.x[train_idx], train.y[train_idx]),
        val=Split(train.x[val_idx], train.y[val_idx]),
        test=test,
    )
