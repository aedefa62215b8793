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
        data.load("mnist", data_dir=tmp_path / "explicit")
    text = str(info.value)
    for expected in ("explicit", "env", "cache", "DEEPZIP_OFFLINE=1", "To get it"):
        assert expected in text


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
