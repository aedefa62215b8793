"""SR-STE (N:M from scratch): valid N:M masks every step, the straight-through update, and an exported
model that is an ordinary deepzip N:M pruned model (.dz save/load, runtime)."""

import copy

import pytest
import torch
import torch.nn.functional as F

import deepzip
from deepzip import models, runtime
from deepzip import prune as P
from deepzip.prune import criteria
from deepzip.sparse import SRSTE, SparseTraining


def groups_ok(weight, n, m):
    rows = weight.detach().reshape(weight.shape[0], -1)
    pad = (-rows.shape[1]) % m
    rows = torch.cat([rows, torch.zeros(rows.shape[0], pad)], 1)
    return int((rows.reshape(rows.shape[0], -1, m) != 0).sum(-1).max()) <= n


def train_srste(model, x, y, config, steps=30):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sparse = SparseTraining(model, opt, config, total_steps=steps, example=x[:1])
    for step in range(steps):
        idx = torch.arange(step * 16, step * 16 + 16) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        sparse.step()
        for name, w in sparse.weights().items():  # every forward sees an N:M weight
            assert groups_ok(w, config.n, config.m), name
            assert torch.equal(sparse.masks()[name], criteria.nm_mask(sparse.rule.dense[name], config.n, config.m))
    return sparse


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_masks_are_valid_nm_and_follow_the_dense_weights(digits, n, m):
    model = models.build("lenet300_100", input_shape=(1, 8, 8), seed=0)
    sparse = train_srste(model, digits.train.x, digits.train.y, SRSTE(n=n, m=m))
    # widths 64, 300, 100: a last, shorter group keeps min(n, its length) (4:8 on width 300 keeps 37 * 4 + 4)
    kept = {w: (w // m) * n + min(n, w % m) for w in (64, 300, 100)}
    assert sparse.densities() == pytest.approx({"fc1.weight": kept[64] / 64, "fc2.weight": kept[300] / 300,
                                                "fc3.weight": kept[100] / 100})
    # the dense weights behind the mask keep training (the STE): pruned positions are not all zero there
    dense = sparse.rule.dense["fc1.weight"]
    assert (dense[~sparse.masks()["fc1.weight"]] != 0).float().mean() > 0.9
    # FLOPs per step: forward and input-gradient at n/m, weight gradient dense
    if (n, m) != (4, 8):
        assert sparse.flops_ratio() == pytest.approx((2 * n / m + 1) / 3)


def test_sr_ste_update_is_the_sparse_refined_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -0.5, 0.25, 2.0]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sparse = SparseTraining(model, opt, SRSTE(decay=0.5), total_steps=5)
    assert model[0].weight.tolist() == [[1.0, 0.0, 0.0, 2.0]]   # the forward weight: 2 of 4 by magnitude
    model(torch.tensor([[1.0, 1.0, 1.0, 1.0]])).sum().backward()  # dL/dW~ = 1 everywhere, pruned included
    sparse.step()
    # W <- W - 0.1 (g + 0.5 * (1 - M) * W): kept entries -0.1; pruned -0.1 - 0.05 * W
    expected = torch.tensor([[0.9, -0.5 - 0.1 + 0.025, 0.25 - 0.1 - 0.0125, 1.9]])
    assert torch.allclose(sparse.rule.dense["0.weight"], expected)
    assert torch.equal(model[0].weight, torch.tensor([[0.9, 0.0, 0.0, 1.9]]))


def test_exported_model_is_an_nm_pruned_model_through_dz_and_runtime(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    model = models.build("lenet5", seed=0)
    sparse = train_srste(model, x, y, SRSTE(), steps=8)
    sparse.finish()
    masks = P.get_masks(model)
    assert list(masks) == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    for name, w in sparse.weights().items():  # exactly what deepzip.prune's nm method gives for these weights
        assert torch.equal(masks[name], criteria.nm_mask(w, 2, 4))
    # conv1's input width is 1 x 5 x 5 = 25: six groups keep 2, the last (1 weight) keeps it: 13 of 25
    assert [round(float(m.float().mean()), 4) for m in masks.values()] == [0.52, 0.5, 0.5, 0.5]
    expected = model(x[:1])
    deepzip.save(model, tmp_path / "srste.dz")
    loaded = deepzip.load(tmp_path / "srste.dz", model=models.build("lenet5"), keep_state=True)
    assert torch.equal(loaded(x[:1]), expected)
    assert all(torch.equal(P.get_masks(loaded)[n], m) for n, m in masks.items())
    fast = runtime.convert(copy.deepcopy(model), example=x[:1], mode="sparse")
    assert torch.allclose(fast(x[:1]), expected, atol=1e-4)
    assert [d["kernel"] for d in runtime.decisions(fast)] == ["sparse"] * 4
