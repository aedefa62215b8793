import pytest
import torch

from deepzip import models


@pytest.mark.parametrize("name, params", [("lenet300_100", 266_610), ("lenet5", 431_080),
                                          ("conv2", 3_317_450), ("conv4", 1_933_258), ("conv6", 1_802_698)])
def test_parameter_counts_and_output_shape(name, params):
    model = models.build(name, seed=0)
    assert models.count_parameters(model) == params
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_seeded_build_is_deterministic_and_glorot():
    a, b = models.build("lenet300_100", seed=1), models.build("lenet300_100", seed=1)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, models.build("lenet300_100", seed=2).fc1.weight)
    # Glorot normal: std = sqrt(2 / (fan_in + fan_out)) = sqrt(2 / 1084) ~ 0.0430
    assert abs(a.fc1.weight.std().item() - (2 / 1084) ** 0.5) < 1e-3
    assert a.fc1.bias.abs().sum() == 0


def test_unknown_model_lists_allowed():
    with pytest.raises(ValueError, match="unknown model 'vgg'; allowed: .*lenet5"):
        models.build("vgg")


def test_lenet5_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="at least 16x16"):
        models.build("lenet5", input_shape=(1, 8, 8))
