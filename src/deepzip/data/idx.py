"""Reader for the IDX format of (Fashion-)MNIST, raw or gzip-compressed.

Layout (big-endian): two zero bytes, a type code, the number of dimensions `ndim`, then `ndim`
uint32 sizes, then the data. We validate the magic, the type, every size and the payload length
before building the array, and name the file in every error.
"""

from __future__ import annotations

import gzip
import os
import zlib
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
_MAX_INFLATED = 1 << 30  # bytes a .gz may inflate to (Fashion-MNIST's largest file: 47 MB)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return _inflate_capped(gzip.GzipFile(fileobj=f), path)
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip raises these for truncated/corrupt streams
        raise DataError(f"{path}: cannot read IDX file ({exc})") from exc


def _inflate_capped(stream, path: Path) -> bytes:
    """Inflate a gzip stream no further than its IDX header says the file is (plus one byte to notice more).

    A small .gz can inflate to gigabytes (a "zip bomb"); here the header is read first, and the
    stream is read only up to the size it declares, so memory stays bounded by a plausible data set.
    """
    head = stream.read(4)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or not 1 <= head[3] <= _MAX_DIMS or head[2] not in _DTYPES:
        return head + stream.read(64)  # parse_idx names the problem; never inflate an unknown format far
    dims = stream.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return head + dims
    count = 1
    for s in np.frombuffer(dims, dtype=">u4"):
        count *= int(s)
    if count > _MAX_ELEMENTS:
        return head + dims  # parse_idx: implausibly large
    declared = count * _DTYPES[head[2]].itemsize
    if declared > _MAX_INFLATED:
        raise DataError(f"{path}: IDX header declares {declared:,} bytes of data; a .gz may inflate to at most "
                        f"{_MAX_INFLATED:,}")
    body = stream.read(declared + 1)  # one extra byte: parse_idx reports trailing data
    return head + dims + body


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
