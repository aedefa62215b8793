import pytest

from deepzip.prune import allocate as A


def overall(numels, alloc):
    return sum(alloc[n] * numels[n] for n in numels) / sum(numels.values())


def test_uniform_with_half_rate_and_exclusion():
    numels = {"a": 1000, "b": 1000, "c": 100, "d": 50}
    alloc = A.uniform(numels, 0.5, {"c": 0.5, "d": 0.0})
    assert alloc["d"] == 0 and alloc["c"] == pytest.approx(alloc["a"] / 2)
    assert overall(numels, alloc) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="cannot reach sparsity"):
        A.uniform({"a": 10, "b": 10}, 0.9, {"a": 0.0})


def test_erk_makes_small_layers_denser_and_meets_target():
    shapes = {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "fc1": (500, 800), "fc2": (10, 500)}
    alloc = A.erk(shapes, 0.9)
    numels = {n: __import__("math").prod(s) for n, s in shapes.items()}
    assert overall(numels, alloc) == pytest.approx(0.9)
    assert alloc["conv1"] == 0.0  # ERK would exceed density 1 there: dense
    # density ratio = (sum of dims / numel) ratio: fc1 1300/400000, conv2 80/25000
    assert (1 - alloc["fc1"]) / (1 - alloc["conv2"]) == pytest.approx((1300 / 400000) / (80 / 25000))
    assert alloc["conv2"] > alloc["fc1"] > alloc["fc2"]


def test_sensitivity_prunes_robust_layers_more():
    numels = {"robust": 100, "fragile": 100}
    curves = {"robust": [(0.0, 0.9), (0.5, 0.9), (0.9, 0.89)], "fragile": [(0.0, 0.9), (0.5, 0.85), (0.9, 0.5)]}
    alloc = A.sensitivity(numels, curves, 0.45, base_accuracy=0.9)
    assert alloc == {"robust": pytest.approx(0.9), "fragile": pytest.approx(0.0)}
    alloc = A.sensitivity(numels, curves, 0.6, base_accuracy=0.9)
    assert alloc["robust"] == pytest.approx(0.9) and alloc["fragile"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="reach at most 0.9000"):
        A.sensitivity(numels, curves, 0.95, base_accuracy=0.9)
