
import pytest
import torch
from torch import nn

from deepzip import models
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.train import TrainConfig, train


def test_centroid_gradient_is_the_sum_over_its_cluster():
    # The paper's Figure 3 on a 2x2 layer: out = W x, loss = sum(out), so dL/dW_ij = x_j.
    layer = nn.Linear(2, 2, bias=False)
    Q.install(layer, "weight", torch.tensor([0.5, -1.0]), torch.tensor([[0, 0], [1, 0]]))
    assert layer(torch.ones(1, 2)).tolist() == [[1.0, -0.5]]
    layer(torch.tensor([[1.0, 10.0]])).sum().backward()
    # dL/dW = [[1, 10], [1, 10]]; cluster 0 holds (0,0), (0,1), (1,1): 1 + 10 + 10; cluster 1 holds (1,0): 1
    assert layer.weight_codebook.grad.tolist() == [21.0, 1.0]


def test_pruned_positions_stay_zero_and_are_not_a_cluster():
    model = models.build("lenet300_100", seed=0)
    P.prune(model, 0.9)
    Q.quantize(model, bits=2)
    for name, (codebook, index) in Q.codebooks(model).items():
        mask = P.get_masks(model)[name]
        weight = dict(model.named_modules())[name.rsplit(".", 1)[0]].weight
        assert len(codebook) <= 4 and (codebook != 0).all()
        assert (weight[~mask] == 0).all() and (weight[mask] != 0).all()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    optimizer.step()
    model(torch.zeros(1, 1, 28, 28))
    assert (model.fc1.weight[~P.get_masks(model)["fc1.weight"]] == 0).all()


def test_paper_bits_and_per_kind_bits():
    model = models.build("lenet5", seed=0)
    assert Q.resolve_bits(model, None) == {"conv1.weight": 8, "conv2.weight": 8, "fc1.weight": 5, "fc2.weight": 5}
    assert Q.resolve_bits(model, {"conv": 4, "fc": 3, "fc2": 6})["fc2.weight"] == 6
    with pytest.raises(ValueError, match="bits of conv1.weight must be an integer in 1..16, got 17"):
        Q.resolve_bits(model, 17)
    with pytest.raises(ValueError, match=r"bits\['fc1'\] must be an integer in 1..16, got 2.7"):
        Q.quantize(model, {"fc1": 2.7})
    with pytest.raises(TypeError, match="quantize method 'uniform' takes no option 'init'; its options: exclude, extra, bits"):
        Q.quantize(model, 4, "uniform", init="density")
    assert not Q.shared_layers(model)
    with pytest.raises(ValueError, match="bits: unknown layer"):
        Q.resolve_bits(model, {"fc9": 3})


def test_state_dict_round_trip_and_finalize_are_exact():
    model = models.build("lenet5", seed=0)
    P.prune(model, 0.8)
    Q.quantize(model, {"conv": 8, "fc": 5}, init="density")
    x = torch.randn(4, 1, 28, 28)
    expected = model(x)
    fresh = models.build("lenet5", seed=1)
    Q.load_state_dict(fresh, model.state_dict())
    assert torch.equal(fresh(x), expected)
    Q.finalize(fresh)
    assert isinstance(fresh.fc1.weight, nn.Parameter) and torch.equal(fresh(x), expected)
    assert len(torch.unique(fresh.fc1.weight)) <= 32 + 1  # 32 centroids and the pruned zeros
    with pytest.raises(ValueError, match="already weight-shared"):
        Q.quantize(model, 4)
    with pytest.raises(ValueError, match="finalize"):
        P.remove(model)


def test_empty_layer_and_fully_dense_layer():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    P.apply_masks(model, {"0.weight": torch.zeros(3, 4, dtype=torch.bool)})
    Q.quantize(model, 3)
    assert (model[0].weight == 0).all() and model(torch.randn(2, 4)).shape == (2, 2)
    assert len(Q.codebooks(model)["1.weight"][0]) == 6  # 6 distinct dense weights, 8 allowed


def test_allocate_bits_for_size_and_accuracy_budgets():
    curves = {"a": [(1, 0.5), (2, 0.88), (3, 0.9)], "b": [(1, 0.89), (2, 0.9), (3, 0.9)]}
    assert Q.allocate_bits(curves, 0.9, {"a": 10, "b": 10}, max_drop=0.0) == {"a": 3, "b": 2}
    assert Q.allocate_bits(curves, 0.9, {"a": 10, "b": 10}, max_drop=0.02) == {"a": 2, "b": 1}
    assert Q.allocate_bits(curves, 0.9, {"a": 10, "b": 10}, budget_bits=2.0) == {"a": 3, "b": 1}
    with pytest.raises(ValueError, match="exactly one"):
        Q.allocate_bits(curves, 0.9, {"a": 1, "b": 1})


def test_fine_tuning_centroids_recovers_accuracy(digits):
    base = TrainConfig(dataset="digits", batch_size=32, epochs=5, val_size=300)
    model = models.build("lenet300_100", (1, 8, 8), seed=0)
    train(model, digits, base, progress=False)
    from deepzip.train import evaluate

    Q.quantize(model, bits=1, method="uniform")
    before = evaluate(model, digits.test)[1]
    codebook_before = model.fc1.weight_codebook.detach().clone()
    index_before = model.fc1.weight_index.clone()
    result = train(model, digits, TrainConfig(dataset="digits", batch_size=32, epochs=3, val_size=300, lr=1e-3),
                   progress=False)
    assert result.final["test_acc"] > before + 0.05
    assert torch.equal(model.fc1.weight_index, index_before)  # indices stay fixed
    assert not torch.equal(model.fc1.weight_codebook, codebook_before)
