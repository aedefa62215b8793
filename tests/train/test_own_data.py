"""Training on the user's own data, model, loss and metric; devices and mixed precision."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from deepzip import data
from deepzip import prune as P
from deepzip.train import PruneConfig, TrainConfig, evaluate, prune_and_retrain, train


class Blobs(Dataset):
    """A user Dataset that makes its items on demand (not tensors): two Gaussian blobs in 5-D."""

    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=generator)
        self.x = torch.randn(n, 5, generator=generator) + 2.0 * self.y[:, None]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def user_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))


CFG = TrainConfig(dataset="digits", epochs=3, batch_size=16, lr=0.01, val_size=0)


def test_train_and_prune_on_a_user_dataset_and_model(tmp_path):
    splits = data.from_datasets(Blobs(400, 0), DataLoader(Blobs(100, 1), batch_size=7), Blobs(200, 2))
    assert isinstance(splits.train, data.DatasetSplit) and splits.input_shape == (5,) and splits.num_classes == 2
    model = user_model()
    result = train(model, splits, CFG, run_dir=tmp_path / "dense", progress=False)
    assert result.final["test_acc"] > 0.9
    records = prune_and_retrain(model, splits, PruneConfig(sparsity=0.5, steps=2, retrain_epochs=1), CFG,
                                run_dir=tmp_path / "prune", progress=False)
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert records[-1]["test_acc"] > 0.85


def test_tensor_datasets_stay_tensors_and_train_identically():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=generator), torch.randint(0, 2, (300,), generator=generator)
    as_pair = data.from_datasets((x, y), (x[:50], y[:50]), (x[:100], y[:100]))
    as_dataset = data.from_datasets(TensorDataset(x, y), TensorDataset(x[:50], y[:50]), TensorDataset(x[:100], y[:100]))
    as_items = data.from_datasets(_Items(x, y), _Items(x[:50], y[:50]), _Items(x[:100], y[:100]))
    assert isinstance(as_pair.train, data.Split) and isinstance(as_dataset.train, data.Split)
    models = [user_model() for _ in range(3)]
    for model, splits in zip(models, (as_pair, as_dataset, as_items)):
        train(model, splits, CFG, progress=False)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)
    for a, b in zip(models[0].parameters(), models[2].parameters()):  # collated one by one: same batches
        assert torch.allclose(a, b, atol=1e-6)


class _Items(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_custom_loss_and_metric():
    splits = data.from_datasets(Blobs(200, 0), Blobs(50, 1), Blobs(50, 2))
    model = user_model()

    def hinge(outputs, targets):
        return F.multi_margin_loss(outputs, targets)

    def error_rate(outputs, targets):
        return (outputs.argmax(1) != targets).float().mean().item()

    result = train(model, splits, CFG, loss=hinge, metric=error_rate, progress=False)
    assert result.final["test_acc"] < 0.15  # the metric column holds the error rate here
    assert evaluate(model, splits.test, metric=error_rate)[1] == pytest.approx(result.final["test_acc"])


def test_bf16_autocast_trains_on_the_cpu_too():
    splits = data.from_datasets(Blobs(200, 0), Blobs(50, 1), Blobs(50, 2))
    model = user_model()
    result = train(model, splits, TrainConfig(dataset="digits", epochs=3, batch_size=16, lr=0.01, val_size=0,
                                              amp="bf16"), progress=False)
    assert result.final["test_acc"] > 0.85
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 weights


def test_bad_splits_are_clear_errors():
    with pytest.raises(TypeError, match="a split must be a map-style Dataset"):
        data.from_datasets(iter([]), Blobs(1, 0), Blobs(1, 0))
    with pytest.raises(ValueError, match="inputs and targets differ in length: 3 vs 2"):
        data.from_datasets((torch.zeros(3, 5), torch.zeros(2)), Blobs(1, 0), Blobs(1, 0))
    assert TrainConfig(device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        TrainConfig(device="gpu")
