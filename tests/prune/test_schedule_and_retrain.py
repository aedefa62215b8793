import copy

import pytest
import torch

from deepzip import models
from deepzip import prune as P
from deepzip.train import L1Regularization, PruneConfig, TrainConfig, prune_and_retrain, train

BASE = TrainConfig(dataset="digits", batch_size=32, epochs=5, val_size=300)


def test_iterative_and_polynomial_sparsities():
    steps = P.iterative_sparsities(0.92, 3)
    assert steps[-1] == pytest.approx(0.92) and steps[0] == pytest.approx(1 - 0.08 ** (1 / 3))
    assert P.polynomial_sparsity(0, 0.9, 0, 100) == 0.0
    assert P.polynomial_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 - 0.9 * 0.125)
    assert P.polynomial_sparsity(150, 0.9, 0, 100) == 0.9


@pytest.fixture(scope="module")
def dense(digits):
    model = models.build("lenet300_100", (1, 8, 8), seed=0)
    result = train(model, digits, BASE, progress=False)
    return model, result.final["test_acc"]


@pytest.mark.parametrize("schedule", ["oneshot", "iterative", "gradual"])
def test_prune_and_retrain_reaches_target_and_keeps_accuracy(digits, dense, schedule, tmp_path):
    model = copy.deepcopy(dense[0])
    cfg = PruneConfig(sparsity=0.9, schedule=schedule, retrain_epochs=3)
    records = prune_and_retrain(model, digits, cfg, BASE, run_dir=tmp_path, progress=False)
    assert records[-1]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert records[-1]["test_acc"] >= dense[1] - 0.05
    # Rerun: every step is finished, so nothing is retrained and the same model comes back.
    again = copy.deepcopy(dense[0])
    assert prune_and_retrain(again, digits, cfg, BASE, run_dir=tmp_path, progress=False)[-1]["test_acc"] == records[-1]["test_acc"]
    assert torch.equal(again.fc1.weight, model.fc1.weight)


def test_l1_proximal_step_shrinks_toward_zero():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.001]]))
    L1Regularization(strength=0.1, lr=0.1)(model, None, 1)
    assert model[0].weight.tolist() == [[pytest.approx(0.49), 0.0]]


def test_sensitivity_curves_leave_model_unchanged(digits, dense):
    model = copy.deepcopy(dense[0])
    before = model.fc1.weight.clone()
    curves = P.sensitivity_curves(model, lambda m: 0.0 + float(m.fc1.weight.count_nonzero()), [0.0, 0.5], progress=False)
    assert curves["fc1.weight"] == [(0.0, 64 * 300), (0.5, 64 * 150)]
    assert torch.equal(model.fc1.weight, before)


def test_bad_config():
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        PruneConfig(sparsity=1.2)
    with pytest.raises(ValueError, match="N:M needs N <= M, got 5:4"):
        PruneConfig(method="nm", n=5, m=4)
    with pytest.raises(ValueError, match="prune option n=5 does not apply to method 'global'; its options: "
                                         "exclude, round_to, sparsity"):
        PruneConfig(n=5)
    with pytest.raises(ValueError, match="prune option sparsity=0.5 does not apply to method 'nm'"):
        PruneConfig(method="nm", sparsity=0.5)
    with pytest.raises(ValueError, match="retrain_lr must be a finite number > 0, got inf"):
        PruneConfig(retrain_lr=float("inf"))
    assert PruneConfig(method="random", layer_sparsity="fc=0.5").method_config() == P.RandomPruning(
        layer_sparsity={"fc": 0.5})
    assert PruneConfig(method="structured").method_config().exclude is None  # keeps the output layer
    with pytest.raises(ValueError, match="bad layer spec item"):
        PruneConfig(quality="fc=big")


def test_sensitivity_method_measures_curves_once_and_resumes_with_them(digits, dense, tmp_path):
    model = copy.deepcopy(dense[0])
    cfg = PruneConfig(method="sensitivity", sparsity=0.8, steps=2, retrain_epochs=1)
    records = prune_and_retrain(model, digits, cfg, BASE, run_dir=tmp_path, progress=False)
    assert records[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    saved = (tmp_path / "sensitivity.json").read_text()
    assert '"base_accuracy"' in saved and '"fc1.weight"' in saved
    # The saved curves drive the rerun: same per-layer allocation, nothing measured again.
    again = copy.deepcopy(dense[0])
    rerun = prune_and_retrain(again, digits, cfg, BASE, run_dir=tmp_path, progress=False)
    assert [l["nonzero"] for l in rerun[-1]["layers"]] == [l["nonzero"] for l in records[-1]["layers"]]
    assert (tmp_path / "sensitivity.json").read_text() == saved


def test_an_iterative_schedule_steps_every_layer_of_a_fraction_to_its_own_target():
    from deepzip.train.prune_retrain import _targets

    cfg = PruneConfig(method="fraction", layer_sparsity="fc1=0.9,fc2=0.5,fc3=0", steps=2)
    steps = [s.layer_sparsity for s in _targets(cfg, cfg.method_config())]
    assert steps[0] == pytest.approx({"fc1": 1 - 0.1 ** 0.5, "fc2": 1 - 0.5 ** 0.5, "fc3": 0.0})
    assert steps[1] == pytest.approx({"fc1": 0.9, "fc2": 0.5, "fc3": 0.0})
    one_shot = PruneConfig(method="fraction", layer_sparsity="0.8", schedule="oneshot")
    assert [s.layer_sparsity for s in _targets(one_shot, one_shot.method_config())] == [0.8]
