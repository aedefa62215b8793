"""Reader for the IDX format of (Fashion-)MNIST, raw or gzip-compressed.

Layout (big-endian): two zero bytes, a type code, the number of dimensions `ndim`, then `ndim`
uint32 sizes, then the data. We validate the magic, the type, every size and the payload length
before building the array, and name the file in every error.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian numpy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_DIMS = 8
_MAX_ELEMENTS = 1 << 32  # far more than any IDX data set; protects against absurd headers


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return gzip.GzipFile(fileobj=f).read()
            return f.read()
    except (OSError, EOFError) as exc:  # gzip raises these for truncated/corrupt streams
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a native-endian numpy array, validating the header against the size."""
    if len(data) < 4:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need at least 4)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad IDX magic {data[:4].hex()} (the first two bytes must be zero)")
    type_code, ndim = data[2], data[3]
    if type_code not in _DTYPES:
        allowed = ", ".join(hex(c) for c in _DTYPES)
        raise DataError(f"{name}: unknown IDX type code {type_code:#x} (allowed: {allowed})")
    if not 1 <= ndim <= _MAX_DIMS:
        raise DataError(f"{name}: IDX declares {ndim} dimensions (allowed: 1..{_MAX_DIMS})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, need {header_len})")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = 1
    for s in shape:
        count *= s
    if count > _MAX_ELEMENTS:
        raise DataError(f"{name}: IDX shape {shape} is implausibly large")
    dtype = _DTYPES[type_code]
    expected = header_len + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{name}: IDX file {what}: shape {shape} needs {expected} bytes, file has {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header_len).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), name=str(path))


def read_idx_pair(images: str | os.PathLike, labels: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an images/labels pair and check they agree: 3-D uint8 images, 1-D labels, same count."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise DataError(f"{images}: expected 3-D images (count, rows, cols), got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels}: expected 1-D labels, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(
            f"{images} has {len(x)} images but {labels} has {len(y)} labels; they must match"
        )
    return x, y
