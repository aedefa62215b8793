import pytest
import torch

import deepzip
from deepzip import models
from deepzip import prune as P


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-2),
])
def test_pruned_weights_stay_exactly_zero_through_steps(make_optimizer):
    torch.manual_seed(0)
    model = models.build("lenet300_100", seed=0)
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for step in range(6):
        if step == 3:  # prune mid-training: momentum exists for soon-pruned entries
            P.prune(model, 0.8)
            P.mask_optimizer_state(optimizer, model)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for name, mask in P.get_masks(model).items():
        weight = dict(model.named_parameters())[name]
        assert (weight[~mask] == 0).all()
        assert (weight[mask] != 0).all()


def test_masks_in_state_dict_load_into_fresh_model_and_remove():
    model = models.build("lenet5", seed=0)
    P.prune(model, 0.9)
    state = model.state_dict()
    assert {k for k in state if k.endswith("_mask")} == {"conv1.weight_mask", "conv2.weight_mask",
                                                         "fc1.weight_mask", "fc2.weight_mask"}
    fresh = models.build("lenet5", seed=1)
    deepzip.load_state_dict(fresh, state)
    assert torch.equal(fresh.fc1.weight, model.fc1.weight) and P.sparsity_report(fresh)["sparsity"] == pytest.approx(0.9, abs=1e-5)
    P.remove(fresh)
    assert not P.is_pruned(fresh) and "fc1.weight_mask" not in fresh.state_dict()
    assert P.sparsity_report(fresh)["nonzero"] == P.sparsity_report(model)["nonzero"]
    fresh.fc1.weight.sum().backward()  # no gradient hook left behind
    assert (fresh.fc1.weight.grad == 1).all()


def test_failed_apply_leaves_model_unchanged():
    model = models.build("lenet300_100", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = torch.zeros(300, 784, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"mask for fc2.weight must be a tensor of shape \(100, 300\)"):
        P.apply_masks(model, {"fc1.weight": good, "fc2.weight": torch.ones(3, 3)})
    assert not P.is_pruned(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="sparsity must be in"):
        P.prune(model, 1.0)
    assert not P.is_pruned(model)


def test_repruning_only_tightens():
    model = models.build("lenet300_100", seed=0)
    P.prune(model, 0.5)
    first = {k: v.clone() for k, v in P.get_masks(model).items()}
    P.prune(model, 0.8, method="random", seed=3)  # random positions, but pruned stays pruned
    for name, mask in P.get_masks(model).items():
        assert not (mask & ~first[name]).any()
