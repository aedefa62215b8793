import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from deepzip.quantize import assign, kmeans_1d, uniform_quantize_1d


def sse(w, codebook, index):
    return float(((codebook[index] - w) ** 2).sum())


def brute_force_sse(values, k):
    """Exact optimum by trying every split of the sorted values into k contiguous groups."""
    v = np.sort(values)
    best = np.inf
    for cuts in itertools.combinations(range(1, len(v)), k - 1):
        groups = np.split(v, cuts)
        best = min(best, sum(((g - g.mean()) ** 2).sum() for g in groups))
    return best


def test_two_obvious_clusters_every_init():
    w = torch.tensor([-1.0, -1.1, -0.9, 2.0, 2.1, 1.9])
    for init in ("linear", "density", "random", "optimal"):
        codebook, index = kmeans_1d(w, 2, init)
        assert codebook.tolist() == pytest.approx([-1.0, 2.0]), init
        assert index.tolist() == [0, 0, 0, 1, 1, 1]


def test_linear_init_without_iterations_is_uniform_quantization():
    w = torch.tensor([0.0, 0.1, 0.45, 0.55, 1.0])
    codebook, index = uniform_quantize_1d(w, 1)
    assert codebook.tolist() == [0.0, 1.0] and index.tolist() == [0, 0, 0, 1, 1]
    codebook, index = uniform_quantize_1d(torch.tensor([0.0, 0.3, 0.4, 1.0]), 2)
    assert codebook.tolist() == pytest.approx([0.0, 1 / 3, 1.0])  # the level at 2/3 is unused and dropped
    assert index.tolist() == [0, 1, 1, 2]


def test_degenerate_inputs():
    codebook, index = kmeans_1d(torch.full((10,), 0.5), 4)
    assert codebook.tolist() == [0.5] and index.tolist() == [0] * 10
    codebook, index = kmeans_1d(torch.tensor([1.0, 2.0, 3.0]), 256)  # k > distinct values
    assert codebook.tolist() == [1.0, 2.0, 3.0] and index.tolist() == [0, 1, 2]
    codebook, index = kmeans_1d(torch.zeros(0), 8)
    assert codebook.numel() == 0 and index.numel() == 0


@pytest.mark.parametrize("k, error", [(1, ValueError), (True, ValueError), (2.5, ValueError)])
def test_bad_k(k, error):
    with pytest.raises(error, match="k must be an integer >= 2"):
        kmeans_1d(torch.randn(10), k)


def test_bad_input_and_init():
    with pytest.raises(TypeError, match="1-D tensor"):
        kmeans_1d(torch.randn(3, 3), 4)
    with pytest.raises(ValueError, match="allowed: linear, density, random, optimal"):
        kmeans_1d(torch.randn(3), 4, "kmeans++")


def test_deterministic_under_seed():
    w = torch.randn(5000, generator=torch.Generator().manual_seed(0))
    a, b = kmeans_1d(w, 16, "random", seed=3), kmeans_1d(w, 16, "random", seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_optimal_beats_or_ties_lloyd():
    w = torch.randn(3000, generator=torch.Generator().manual_seed(1)) ** 3
    best = sse(w, *kmeans_1d(w, 8, "optimal"))
    for init in ("linear", "density", "random"):
        assert best <= sse(w, *kmeans_1d(w, 8, init)) + 1e-6


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=4, max_size=9, unique=True),
       st.integers(2, 3))
def test_optimal_matches_brute_force(values, k):
    w = torch.tensor(values, dtype=torch.float32)
    codebook, index = kmeans_1d(w, k, "optimal")
    assert sse(w.double(), codebook.double(), index) == pytest.approx(brute_force_sse(np.array(values, np.float32).astype(np.float64), k), rel=1e-4, abs=1e-6)


def test_assign_nearest_with_unsorted_codebook():
    assert assign(torch.tensor([0.9, -3.0, 0.2]), torch.tensor([1.0, -2.0, 0.0])).tolist() == [0, 1, 2]
