"""Sparse-training configs (defaults, validation, registry) and the pure mask-update core."""

import math

import pytest
import torch

from deepzip.registry import METHODS
from deepzip.sparse import SET, SNFS, SRSTE, RigL, Static, core, distribution, method_names, resolve


def test_registry_family_and_paper_defaults():
    assert method_names() == ["static", "set", "rigl", "snfs", "srste"]
    assert METHODS.build("sparse", "rigl") == RigL()
    r = RigL()
    assert (r.sparsity, r.distribution, r.update_interval, r.drop_fraction, r.drop_schedule, r.end_fraction) == \
        (0.9, "erk", 100, 0.3, "cosine", 0.75)
    s = SET()
    assert (s.distribution, s.drop_fraction, s.drop_schedule, s.end_fraction) == ("er", 0.3, "constant", 1.0)
    n = SNFS()
    assert (n.distribution, n.drop_fraction, n.drop_schedule, n.momentum, n.redistribution) == \
        ("uniform", 0.5, "cosine", 0.9, "momentum")
    assert (SRSTE().n, SRSTE().m, SRSTE().decay, SRSTE().sparsity) == (2, 4, 2e-4, 0.5)
    assert resolve("set", sparsity=0.8) == SET(sparsity=0.8)
    assert resolve(RigL(sparsity=0.95)).sparsity == 0.95


@pytest.mark.parametrize("make, error, message", [
    (lambda: RigL(sparsity=1.0), ValueError, "sparsity must be in [0.0, 1.0), got 1.0"),
    (lambda: RigL(distribution="random"), ValueError, "distribution='random' is not allowed; choose from uniform, er, erk"),
    (lambda: SET(drop_schedule="linear"), ValueError, "drop_schedule='linear' is not allowed; choose from constant, cosine"),
    (lambda: RigL(update_interval=0), ValueError, "update_interval must be >= 1, got 0"),
    (lambda: RigL(end_fraction=1.5), ValueError, "end_fraction must be in [0.0, 1.0], got 1.5"),
    (lambda: SNFS(redistribution="magnitude"), ValueError, "redistribution='magnitude' is not allowed; choose from momentum, none"),
    (lambda: SRSTE(n=5, m=4), ValueError, "N:M needs N <= M, got 5:4"),
    (lambda: Static(dense_first="yes"), TypeError, "dense_first must be true or false, got 'yes'"),
    (lambda: RigL(seed=-1), ValueError, "seed must be >= 0, got -1"),
    (lambda: METHODS.build("sparse", "srste", sparsity=0.9), TypeError, "sparse method 'srste' takes no option 'sparsity'"),
    (lambda: METHODS.build("sparse", "magnitude"), ValueError, "unknown sparse method 'magnitude'; allowed: static, set, rigl, snfs, srste"),
])
def test_bad_configs_raise_with_allowed_values(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert message in str(info.value)


def test_drop_fraction_schedule_values():
    # cosine: alpha/2 (1 + cos(pi t / T_end)); 0 from T_end on
    assert core.drop_fraction(0.3, 0, 750, "cosine") == pytest.approx(0.3)
    assert core.drop_fraction(0.3, 375, 750, "cosine") == pytest.approx(0.15)
    assert core.drop_fraction(0.3, 250, 750, "cosine") == pytest.approx(0.225)
    assert core.drop_fraction(0.3, 500, 750, "cosine") == pytest.approx(0.075)
    assert core.drop_fraction(0.3, 750, 750, "cosine") == 0.0
    assert core.drop_fraction(0.5, 600, 750, "constant") == 0.5
    with pytest.raises(ValueError, match="choose from constant, cosine"):
        core.drop_fraction(0.3, 1, 10, "step")


def test_drop_and_grow_by_hand():
    w = torch.tensor([[0.5, -0.1, 0.0, 0.9], [0.0, -0.3, 0.2, 0.0]])
    mask = w != 0
    dropped = core.drop(w, mask, 2)          # the two smallest active magnitudes: -0.1 and 0.2
    assert dropped.tolist() == [[True, False, False, True], [False, True, False, False]]
    scores = torch.tensor([[9.0, 1.0, 5.0, 0.0], [7.0, 8.0, 0.5, 6.0]])
    grown = core.grow(dropped, scores, 2)    # highest scores among the inactive: 7.0 (1,0) and 6.0 (1,3)
    assert grown.tolist() == [[True, False, False, True], [True, True, False, True]]
    assert core.drop_count(mask, 0.3) == 2   # round(0.3 * 5)
    with pytest.raises(ValueError, match="cannot drop 6 of 5 active weights"):
        core.drop(w, mask, 6)
    with pytest.raises(ValueError, match="only 3 positions are inactive"):
        core.grow(mask, scores, 4)


def test_snfs_redistribution_by_mean_momentum_with_caps():
    # 300 dropped in total; momentum 3:1:0 -> 225 / 75 / 0, but layer a has only 200 free positions
    counts = core.redistribute({"a": 100, "b": 100, "c": 100}, {"a": 3.0, "b": 1.0, "c": 0.0},
                               {"a": 200, "b": 1000, "c": 1000})
    assert counts == {"a": 200, "b": 100, "c": 0}
    assert core.redistribute({"a": 5, "b": 5}, {"a": 1.0, "b": 2.0}, {"a": 50, "b": 50}) == {"a": 3, "b": 7}
    with pytest.raises(ValueError, match="every layer is full"):
        core.redistribute({"a": 5}, {"a": 1.0}, {"a": 2})


def test_distributions():
    shapes = {"fc1": (300, 784), "fc2": (100, 300), "fc3": (10, 100)}
    numels = {n: math.prod(s) for n, s in shapes.items()}
    for dist in ("uniform", "er", "erk"):
        sp = distribution.layer_sparsities(shapes, 0.9, dist)
        assert sum(sp[n] * numels[n] for n in shapes) / sum(numels.values()) == pytest.approx(0.9)
    assert distribution.layer_sparsities(shapes, 0.9, "uniform") == pytest.approx({n: 0.9 for n in shapes})
    erk = distribution.layer_sparsities(shapes, 0.9, "erk")
    # ERK density is proportional to sum(shape)/prod(shape); fc3 would exceed density 1, so it is dense
    assert erk["fc3"] == 0.0
    assert (1 - erk["fc2"]) / (1 - erk["fc1"]) == pytest.approx((400 / 30000) / (1084 / 235200))
    dense_last = distribution.layer_sparsities(shapes, 0.9, "uniform", dense=["fc3"])
    # 26,620 weights kept in all; fc3 keeps its 1,000, the other 265,200 share 25,620
    assert dense_last["fc3"] == 0.0 and dense_last["fc1"] == dense_last["fc2"] == pytest.approx(1 - 25620 / 265200)
    conv = {"conv": (20, 1, 5, 5), "fc": (10, 320)}
    er, erk = distribution.layer_sparsities(conv, 0.5, "er"), distribution.layer_sparsities(conv, 0.5, "erk")
    assert er != erk  # ER ignores the kernel dimensions, ERK counts them
    with pytest.raises(ValueError, match="the dense layers \\(fc1\\) alone hold more than"):
        distribution.layer_sparsities(shapes, 0.5, "uniform", dense=["fc1"])
