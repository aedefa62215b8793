import pytest
import torch

from deepzip import models
from deepzip import prune as P


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5", "conv2"])
def test_structured_then_shrink_keeps_outputs_and_removes_params(name):
    model = models.build(name, seed=0)
    dense_params = models.count_parameters(model)
    P.prune(model, 0.5, "structured", norm="l2")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        masked = model(x)
        P.shrink(model)
        shrunk = model(x)
    assert torch.allclose(masked, shrunk, atol=1e-5, rtol=1e-5)
    assert not P.is_pruned(model)
    assert models.count_parameters(model) < 0.6 * dense_params


def test_lenet300_shrink_exact_sizes():
    model = models.build("lenet300_100", seed=0)
    P.prune(model, 0.5, "structured")
    P.shrink(model)
    assert (model.fc1.out_features, model.fc2.in_features, model.fc2.out_features, model.fc3.in_features) == (150, 150, 50, 50)
    assert models.count_parameters(model) == 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10


def test_find_pairs_through_flatten():
    assert P.find_pairs(models.build("lenet5")) == [("conv1", "conv2"), ("conv2", "fc1"), ("fc1", "fc2")]
