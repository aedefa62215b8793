from pathlib import Path

import pytest

from deepzip import data
from deepzip.errors import DataNotFoundError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_digits_splits_are_disjoint_and_fixed(digits):
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1200, 300, 297)
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    again = data.load("digits", val_size=300)
    assert (again.val.x == digits.val.x).all()  # the validation split does not depend on anything


def test_offline_and_missing_gives_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPZIP_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        data.load("mnist")
    text = str(info.value)
    for expected in ("env", "cache", "DEEPZIP_OFFLINE=1", "To get it"):
        assert expected in text


def _write_idx(directory, stems):
    from tests.data.test_idx import idx_bytes
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        arr = np.full((4, 28, 28), 255, np.uint8) if "images" in stem else np.array([1, 2, 3, 4], np.uint8)
        (directory / stem).write_bytes(idx_bytes(arr))


@pytest.mark.parametrize("kind, fragment", [("missing", "does not exist"), ("file", "is not a directory"),
                                            ("empty", "lacks train-images-idx3-ubyte"),
                                            ("partial", "lacks train-images-idx3-ubyte, train-labels-idx1-ubyte")])
def test_explicit_dir_is_the_only_source(tmp_path, kind, fragment):
    explicit = tmp_path / "explicit"
    if kind == "file":
        explicit.write_text("x")
    elif kind == "empty":
        explicit.mkdir()
    elif kind == "partial":  # test split only: never completed from the system copy
        _write_idx(explicit, ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    with pytest.raises(DataNotFoundError, match=fragment):
        data.load("fashion-mnist", data_dir=explicit, val_size=0)


def test_splits_come_from_one_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPZIP_DATA", str(tmp_path / "env"))
    _write_idx(tmp_path / "env", ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])  # partial
    full = data.find_files("fashion-mnist")
    assert {p.parent for pair in full.values() for p in pair} != {tmp_path / "env"}
    assert len({p.parent for pair in full.values() for p in pair}) == 1


def test_digits_refuses_a_data_dir(tmp_path):
    with pytest.raises(DataNotFoundError, match="scikit-learn"):
        data.load("digits", data_dir=tmp_path, val_size=300)


def test_gz_inflation_is_capped_by_the_header(tmp_path):
    import gzip
    from deepzip.data import read_idx
    from deepzip.errors import DataError

    header = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big")
    (tmp_path / "bomb.gz").write_bytes(gzip.compress(header + bytes(50_000_000)))  # declares 10, inflates to 50 MB
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(tmp_path / "bomb.gz")
    (tmp_path / "huge.gz").write_bytes(gzip.compress(bytes([0, 0, 0x0E, 1]) + (1 << 30).to_bytes(4, "big")))
    with pytest.raises(DataError, match="at most"):
        read_idx(tmp_path / "huge.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_known_checksums_match_the_official_files():
    from deepzip.data.datasets import SOURCES, _sha256_ok

    for stem, digest in SOURCES["fashion-mnist"].sha256.items():
        assert _sha256_ok(FMNIST / f"{stem}.gz", digest)
        assert not _sha256_ok(FMNIST / f"{stem}.gz", "0" * 64)


def test_explicit_dir_wins(tmp_path):
    from tests.data.test_idx import idx_bytes
    import numpy as np

    for stem, arr in [("t10k-images-idx3-ubyte", np.full((4, 28, 28), 255, np.uint8)),
                      ("t10k-labels-idx1-ubyte", np.array([1, 2, 3, 4], np.uint8))]:
        (tmp_path / stem).write_bytes(idx_bytes(arr))
    split = data.load_split("fashion-mnist", "test", data_dir=tmp_path)
    assert split.y.tolist() == [1, 2, 3, 4] and float(split.x.mean()) == 1.0


def test_bad_names():
    with pytest.raises(ValueError, match="allowed: fashion-mnist, mnist, digits"):
        data.load("cifar")
    with pytest.raises(ValueError, match="val_size must be in"):
        data.load("digits", val_size=5000)


@pytest.mark.skipif(not FMNIST.exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_full():
    splits = data.load("fashion-mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.train.y.bincount().tolist() != [] and splits.test.y.bincount().tolist() == [1000] * 10
