import pytest
import torch

from deepzip.prune import criteria as C


def test_topk_keeps_largest_and_breaks_ties_by_position():
    scores = torch.tensor([0.5, 2.0, 0.5, 1.0, 0.5])
    assert C.topk_mask(scores, 3).tolist() == [True, True, False, True, False]


def test_fraction_mask_exact_counts():
    w = torch.arange(-50, 50, dtype=torch.float32).reshape(10, 10)
    mask = C.fraction_mask(w, 0.9)
    assert mask.sum() == 10
    assert w[mask].abs().min() >= 45  # the ten largest magnitudes: |-50|..|-46| and 45..49
    assert C.kept_count(1000, 0.92) == 80 and C.kept_count(1000, 0.92, round_to=8) == 80
    assert C.kept_count(1000, 0.93, round_to=8) == 72 and C.kept_count(100, 0.99, round_to=8) == 8


def test_std_threshold_hand_example():
    w = torch.tensor([1.0, -1.0, 0.1, -0.1, 3.0])
    std = w.std().item()  # ~1.50
    mask = C.std_threshold_mask(w, quality=0.5)
    assert mask.tolist() == [abs(x) >= 0.5 * std for x in w.tolist()] == [True, True, False, False, True]


def test_random_mask_count_and_determinism():
    a = C.random_mask((30, 40), 0.75, torch.Generator().manual_seed(1))
    b = C.random_mask((30, 40), 0.75, torch.Generator().manual_seed(1))
    assert a.sum() == 300 and torch.equal(a, b)


def test_two_of_four_and_remainder_groups():
    w = torch.tensor([[1.0, 4.0, 3.0, 2.0, 9.0, 0.5, 7.0]])
    assert C.nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, False, True]]
    conv = torch.randn(8, 4, 3, 3)
    mask = C.nm_mask(conv, 2, 4).reshape(8, -1)
    assert (mask.reshape(8, 9, 4).sum(-1) == 2).all()


@pytest.mark.parametrize("n, m", [(3, 2), (0, 4)])
def test_bad_nm(n, m):
    with pytest.raises(ValueError, match="0 < N <= M"):
        C.nm_mask(torch.ones(4, 4), n, m)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_range(bad):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        C.fraction_mask(torch.ones(4), bad)


def test_structured_by_norm():
    w = torch.tensor([[1.0, 1.0], [3.0, 0.0], [0.1, 0.1], [-2.0, -2.0]])
    assert C.unit_norms(w, "l1").tolist() == [2.0, 3.0, pytest.approx(0.2), 4.0]
    assert C.structured_mask(w, 0.5, "l1").tolist() == [False, True, False, True]
    assert C.structured_mask(w, 0.5, "l2").tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="allowed: l1, l2"):
        C.unit_norms(w, "linf")
