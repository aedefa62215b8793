"""Data sets by name, found locally first, split into train / validation / test.

An explicit ``data_dir`` is the only source: the data set must be there (or in ``data_dir/<name>``),
all four files in one directory, or `DataNotFoundError` says what is missing; nothing else is tried.
Without one, the look-up order is (the first directory holding all four files wins, so the
train and test splits always come from the same directory):
  2. ``$DEEPZIP_DATA`` (or ``$DEEPZIP_DATA/<name>``),
  3. the Debian package's directory (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST),
  4. deepzip's download cache (``~/.cache/deepzip/<name>``),
  5. a download from the data set's official mirror into that cache, unless ``DEEPZIP_OFFLINE=1``;
     each file is checked against its known SHA-256 (of the inflated IDX bytes) before it is kept.
When all fail, `DataNotFoundError` says where it looked and how to get the data.

The validation split is carved out of the training set with a fixed seed, so early stopping and
model selection never see the test set, and every run sees the same validation images.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from .. import imports
from ..errors import DataError, DataNotFoundError
from ..imports import is_import_path
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
    sha256: dict | None = None  # file stem -> SHA-256 of the inflated IDX bytes; no download without it


SOURCES = {
    "fashion-mnist": IdxSource(
        system_dir="/usr/share/datasets/fashion-mnist",
        mirror="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        how_to_get="install Debian's package: sudo apt-get install dataset-fashion-mnist",
        # The official files' content (computed from Debian's dataset-fashion-mnist; Debian recompressed
        # the .gz, so the check is on the inflated bytes, which every official copy shares).
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
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
    """One split held as tensors: inputs (N, ...) and targets (N,), e.g. images as float32 (N, C, H, W)
    in [0, 1] and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]

    def targets(self) -> torch.Tensor:
        return self.y

    def nbytes(self) -> int:
        return self.x.numel() * self.x.element_size() + self.y.numel() * self.y.element_size()

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


class DatasetSplit:
    """Any map-style ``torch.utils.data.Dataset`` of (input, target) pairs as a split: each batch is
    collated on demand from the items the training order picks (nothing is loaded up front)."""

    def __init__(self, dataset: Dataset):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"a split must be a map-style Dataset (with __getitem__ and __len__), "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.dataset[int(i)] for i in idx]
        if not items or not isinstance(items[0], (tuple, list)) or len(items[0]) != 2:
            raise TypeError("each item of a data set must be an (input, target) pair")
        x, y = default_collate(items)
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("a data set's inputs and targets must be tensors or numbers (collated into a batch "
                            f"tensor), got {type(items[0][0]).__name__} and {type(items[0][1]).__name__}")
        return x, y

    def targets(self) -> torch.Tensor:
        return torch.as_tensor([self.dataset[i][1] for i in range(len(self.dataset))])

    def nbytes(self) -> int:
        return 0

    def to(self, device: torch.device) -> "DatasetSplit":
        return self  # batches move to the device as they are made


def as_split(source: Any) -> Split | DatasetSplit:
    """A split from what a user has: a `Split`, an (inputs, targets) pair of tensors, a TensorDataset of
    two tensors (kept as tensors), any map-style Dataset, or a DataLoader (its dataset)."""
    if isinstance(source, (Split, DatasetSplit)):
        return source
    if isinstance(source, DataLoader):
        source = source.dataset
    if isinstance(source, (tuple, list)) and len(source) == 2 and all(isinstance(t, torch.Tensor) for t in source):
        x, y = source
    elif isinstance(source, TensorDataset) and len(source.tensors) == 2:
        x, y = source.tensors
    else:
        return DatasetSplit(source)
    if len(x) != len(y):
        raise ValueError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
    return Split(x, y)


@dataclass(frozen=True)
class DataSplits:
    name: str
    train: Split | DatasetSplit
    val: Split | DatasetSplit
    test: Split | DatasetSplit

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.batch([0])[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.train.targets().max(), self.test.targets().max())) + 1

    def user_datasets(self) -> dict[str, Any]:
        """{"the train data set": dataset, ...}: the user's own Dataset objects (tensor splits left out),
        which a Ray executor must pickle; `deepzip.distributed.check_picklable` names one that cannot be."""
        return {f"the {name} data set {self.name!r}": split.dataset for name, split in
                (("train", self.train), ("val", self.val), ("test", self.test)) if isinstance(split, DatasetSplit)}


def _user_splits(path: str, data_dir) -> DataSplits:
    if data_dir is not None:
        raise DataNotFoundError(f"data set {path!r} is the user's own code: a data directory ({data_dir}) does not "
                                f"apply to it")
    made = imports.call(path, "data set")
    if isinstance(made, dict):
        missing = [k for k in ("train", "val", "test") if k not in made]
        if missing:
            raise ValueError(f"data set {path!r} returned a dict without {', '.join(missing)}; it needs train, val, test")
        made = (made["train"], made["val"], made["test"])
    if not isinstance(made, (tuple, list)) or len(made) != 3:
        raise ValueError(f"data set {path!r} must return (train, val, test) Datasets or a dict with those keys, "
                         f"got {type(made).__name__}")
    return from_datasets(*made, name=path)


def from_datasets(train: Any, val: Any, test: Any, name: str = "custom") -> DataSplits:
    """The user's own data as splits for every deepzip workflow: each of ``train`` / ``val`` / ``test``
    is a Dataset, a DataLoader, a TensorDataset or an (inputs, targets) pair (see `as_split`)."""
    splits = {k: as_split(v) for k, v in (("train", train), ("val", val), ("test", test))}
    if len(splits["train"]) == 0:
        raise ValueError("the training split is empty")
    return DataSplits(name, **splits)


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:  # explicit: the only place looked at
        return [Path(data_dir), Path(data_dir) / name]
    roots = [Path(os.environ["DEEPZIP_DATA"])] if os.environ.get("DEEPZIP_DATA") else []
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


def _find_dir_files(name: str, data_dir, splits=tuple(IDX_FILES)) -> dict[str, tuple[Path, Path]] | None:
    """The splits' files from the first directory holding all of them (never a mix of two directories)."""
    for directory in _candidate_dirs(name, data_dir):
        found = {split: tuple(_find_file(directory, stem) for stem in IDX_FILES[split]) for split in splits}
        if all(all(pair) for pair in found.values()):
            return found
    return None


def _explicit_dir_error(name: str, data_dir, splits) -> DataNotFoundError:
    root = Path(data_dir)
    wanted = [stem for split in splits for stem in IDX_FILES[split]]
    if not root.exists():
        problem = "does not exist"
    elif not root.is_dir():
        problem = "is not a directory"
    else:
        best = max((root, root / name), key=lambda d: sum(
            _find_file(d, stem) is not None for stem in wanted) if d.is_dir() else -1)
        missing = [stem for stem in wanted if _find_file(best, stem) is None]
        problem = f"lacks {', '.join(missing)} (.gz or raw)" + (f" in {best}" if best != root else "")
    return DataNotFoundError(
        f"data directory {data_dir} {problem}; it must hold {name}'s IDX files {', '.join(wanted)} "
        f"in one directory (or leave the data directory out to use the default look-up)")


def _sha256_ok(path: Path, expected: str) -> bool:
    try:
        with gzip.open(path, "rb") as f:
            digest = hashlib.sha256()
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                if f.tell() > 1 << 30:  # a bomb: the official files inflate to 47 MB at most
                    return False
    except (OSError, EOFError):
        return False
    return digest.hexdigest() == expected


def _download(name: str) -> dict[str, tuple[Path, Path]] | None:
    """Both splits from the official mirror into the cache, each file verified against its SHA-256."""
    source = SOURCES[name]
    if os.environ.get("DEEPZIP_OFFLINE") == "1" or not source.sha256:
        return None
    target = cache_dir(name)
    target.mkdir(parents=True, exist_ok=True)
    for stems in IDX_FILES.values():
        for stem in stems:
            path = target / f"{stem}.gz"
            if path.is_file() and _sha256_ok(path, source.sha256[stem]):
                continue
            tmp = path.with_suffix(".gz.tmp")
            try:
                with urllib.request.urlopen(source.mirror + stem + ".gz", timeout=15) as response, \
                        open(tmp, "wb") as out:
                    out.write(response.read(_MAX_DOWNLOAD + 1))
                if tmp.stat().st_size > _MAX_DOWNLOAD or not _sha256_ok(tmp, source.sha256[stem]):
                    raise OSError(f"{stem}.gz does not match its known SHA-256")
            except (urllib.error.URLError, OSError, TimeoutError):
                tmp.unlink(missing_ok=True)
                return None
            os.replace(tmp, path)  # atomic: never a half-downloaded or unverified file under the real name
    return {split: (target / f"{stems[0]}.gz", target / f"{stems[1]}.gz") for split, stems in IDX_FILES.items()}


_MAX_DOWNLOAD = 64 << 20  # bytes per downloaded .gz (the largest official file is 26 MB)


def _not_found(name: str, split: str, data_dir) -> DataNotFoundError:
    looked = "\n  ".join(str(d) for d in _candidate_dirs(name, data_dir))
    offline = " (skipped: DEEPZIP_OFFLINE=1)" if os.environ.get("DEEPZIP_OFFLINE") == "1" else ""
    return DataNotFoundError(
        f"{name} ({split} split) not found. Looked for all of "
        f"{', '.join(stem for stems in IDX_FILES.values() for stem in stems)} (.gz or raw) in one of:\n  "
        f"{looked}\nand could not download it from {SOURCES[name].mirror}{offline}"
        f"{'' if SOURCES[name].sha256 else ' (no known checksum: never downloaded)'}.\n"
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
    return _read_split(find_files(name, data_dir, (split,))[split])


def _read_split(files: tuple[Path, Path]) -> Split:
    images, labels = read_idx_pair(*files)
    if images.dtype != np.uint8:
        raise DataError(f"{files[0]}: expected uint8 pixels, got {images.dtype}")
    return _to_split(images, labels)


def find_files(name: str, data_dir: str | os.PathLike | None = None,
               splits: tuple[str, ...] = tuple(IDX_FILES)) -> dict[str, tuple[Path, Path]]:
    """{split: (images, labels)} of an IDX data set, all from one directory; raises DataNotFoundError."""
    files = _find_dir_files(name, data_dir, splits)
    if files is None and data_dir is not None:
        raise _explicit_dir_error(name, data_dir, splits)
    files = files or _download(name)
    if files is None:
        raise _not_found(name, " and ".join(splits), data_dir)
    return files


def data_identity(name: str, data_dir: str | os.PathLike | None) -> str | None:
    """What a run's identity records about its data: None for the default look-up (run names stay as
    they were), else the resolved directory the files come from, so other data means another run."""
    if data_dir is None:
        return None
    if name == "digits":
        return None
    return str(Path(find_files(name, data_dir)["train"][0]).resolve().parent)


def _digits() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits  # dev dependency: fast unit tests only

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test_idx, train_idx = order[:297], order[297:]  # 1797 images: 1500 train+val, 297 test
    return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx])


def load(name: str, data_dir: str | os.PathLike | None = None, val_size: int = 5000) -> DataSplits:
    """Load a data set by name with a held-out validation split of ``val_size`` training images; or call a
    user's ``package.module:function`` returning its (train, val, test) Datasets, as a tuple or a dict with
    those keys (``val_size`` and ``data_dir`` do not apply to it)."""
    if is_import_path(name):
        return _user_splits(name, data_dir)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}, or an import path "
                         f"package.module:function returning (train, val, test)")
    if name == "digits":
        if data_dir is not None:
            raise DataNotFoundError(f"digits comes with scikit-learn; a data directory ({data_dir}) cannot "
                                    f"hold it: leave the data directory out, or use fashion-mnist or mnist")
        train, test = _digits()
    else:
        if name not in SOURCES:
            raise ValueError(f"unknown IDX data set {name!r}; allowed: {', '.join(SOURCES)}")
        files = find_files(name, data_dir)  # both splits from one directory
        train, test = _read_split(files["train"]), _read_split(files["test"])
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
