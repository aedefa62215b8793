import gzip
import struct

import numpy as np
import pytest

from deepzip.data import parse_idx, read_idx, read_idx_pair, load_split
from deepzip.errors import DataError
from tests.conftest import MNIST_T10K


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_parses_hand_made_uint8_and_int32():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(images)), images)
    ints = np.array([-5, 7, 1 << 20], dtype=np.int32)
    parsed = parse_idx(idx_bytes(ints, 0x0C))
    assert parsed.tolist() == [-5, 7, 1 << 20] and parsed.dtype == np.int32


def test_reads_gzip_and_raw_files(tmp_path):
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "raw").write_bytes(idx_bytes(labels))
    (tmp_path / "z.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    assert read_idx(tmp_path / "raw").tolist() == [3, 1, 4, 1, 5]
    assert read_idx(tmp_path / "z.gz").tolist() == [3, 1, 4, 1, 5]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "truncated IDX header"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "bad IDX magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x07", "unknown IDX type code 0x7"),
        (b"\x00\x00\x08\x00", "declares 0 dimensions"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "truncated: shape (5,) needs 13 bytes, file has 10"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x01\x02", "has trailing bytes"),
    ],
)
def test_rejects_malformed_bytes_with_reason(data, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(data, name="f.idx")


def test_error_names_the_file_for_corrupt_gzip(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 4, 4), np.uint8)))[:30])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)


def test_pair_count_mismatch(tmp_path):
    (tmp_path / "x").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "y").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match="has 3 images but .* has 4 labels"):
        read_idx_pair(tmp_path / "x", tmp_path / "y")


@pytest.mark.skipif(not MNIST_T10K.exists(), reason="shared MNIST t10k not present")
def test_real_mnist_test_set():
    split = load_split("mnist", "test", data_dir=MNIST_T10K)
    assert split.x.shape == (10000, 1, 28, 28)
    assert split.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # MNIST's well-known first labels
    assert np.bincount(split.y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 0.0 == split.x.min() and split.x.max() == 1.0
