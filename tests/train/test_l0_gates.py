"""Learned sparsity in training: the L0 penalty, prune_and_retrain with method l0, the budgeted pipeline."""

import copy

import pytest
import torch

from deepzip import models
from deepzip import prune as P
from deepzip.prune import l0
from deepzip.train import PruneConfig, QuantizeConfig, TrainConfig, prune_and_retrain, train
from deepzip.train.l0_gates import excess_density, train_gates

BASE = TrainConfig(dataset="digits", batch_size=32, epochs=5, val_size=300)


@pytest.fixture(scope="module")
def dense(digits):
    model = models.build("lenet300_100", (1, 8, 8), seed=0)
    result = train(model, digits, BASE, progress=False)
    return model, result.final["test_acc"]


def test_excess_density_forms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2))
    l0.install_gates(model)
    with torch.no_grad():
        model[0].weight_log_alpha.fill_(10.0)   # P(open) ~ 1
        model[1].weight_log_alpha.fill_(-10.0)  # P(open) ~ 0
    assert excess_density(model, None).item() == pytest.approx(20 / 30, abs=1e-3)
    assert excess_density(model, 0.5).item() == pytest.approx(20 / 30 - 0.5, abs=1e-3)
    assert excess_density(model, 0.2).item() == 0.0  # below the target: no push
    per_layer = excess_density(model, {"0.weight": 0.5, "1.weight": 0.5})
    assert per_layer.item() == pytest.approx(20 / 30 * 0.5, abs=1e-3)


def test_the_penalty_lowers_the_expected_l0(digits, dense):
    expected = {}
    for penalty in (0.0, 20.0):
        model = copy.deepcopy(dense[0])
        cfg = TrainConfig(dataset="digits", batch_size=32, epochs=2, val_size=300, lr=5e-4)
        train_gates(model, digits, P.L0(sparsity=None, penalty=penalty), cfg, progress=False)
        expected[penalty] = sum(float(e.detach()) for e, _ in l0.expected_l0(model).values()) / 50_200
    start = l0.prob_nonzero(torch.tensor(0.0)).item()  # droprate_init 0.5
    assert expected[20.0] < start - 0.3 and expected[20.0] < expected[0.0] - 0.3


def test_prune_and_retrain_with_l0_reaches_the_target(digits, dense, tmp_path):
    model = copy.deepcopy(dense[0])
    cfg = PruneConfig(method="l0", sparsity=0.9, steps=2, retrain_epochs=2, l0_penalty=20.0)
    records = prune_and_retrain(model, digits, cfg, BASE, run_dir=tmp_path, progress=False)
    assert [r["phase"] for r in records] == ["gates", "retrain"]
    assert records[0]["gates"]["open_gates"] < 0.5  # the gates closed most weights while training
    assert records[-1]["sparsity"] == pytest.approx(0.9, abs=1e-4)  # exact: 45,180 of 50,200 pruned
    assert P.sparsity_report(model)["nonzero"] == 50_200 - round(0.9 * 50_200)
    assert not l0.gated_layers(model) and set(P.get_masks(model)) == {"fc1.weight", "fc2.weight", "fc3.weight"}
    assert records[-1]["test_acc"] >= dense[1] - 0.06  # dense ~0.956 on these 297 test digits
    # Rerun: both phases are finished runs, so the same model comes back without training.
    again = copy.deepcopy(dense[0])
    assert prune_and_retrain(again, digits, cfg, BASE, run_dir=tmp_path, progress=False)[-1] == records[-1]
    assert torch.equal(again.fc1.weight, model.fc1.weight)


def test_prune_and_retrain_with_l0_per_layer_targets(digits, dense):
    model = copy.deepcopy(dense[0])
    cfg = PruneConfig(method="l0", layer_sparsity="fc1=0.95,fc2=0.9,fc3=0.5", steps=1, retrain_epochs=1)
    records = prune_and_retrain(model, digits, cfg, BASE, progress=False)
    kept = {l["layer"]: l["kept"] for l in records[-1]["layers"]}
    assert kept == pytest.approx({"fc1.weight": 0.05, "fc2.weight": 0.1, "fc3.weight": 0.5}, abs=1e-3)


def test_l0_prune_config_errors():
    with pytest.raises(ValueError, match="schedule='gradual' does not apply to method 'l0'"):
        PruneConfig(method="l0", schedule="gradual")
    with pytest.raises(ValueError, match="l0_penalty=2.0 does not apply to method 'global'"):
        PruneConfig(l0_penalty=2.0)
    with pytest.raises(ValueError, match="l0_droprate_init must be in"):
        PruneConfig(method="l0", l0_droprate_init=1.0)
    assert PruneConfig(method="l0", l0_lr=0.1, sparsity=0.95).method_config() == P.L0(sparsity=0.95, lr=0.1)
    assert PruneConfig(method="l0", layer_sparsity="fc=0.9").method_config().sparsity is None


def test_budgeted_pipeline_with_l0_meets_its_budget(tmp_path):
    from deepzip.pipeline import compress_to_budget
    from deepzip.train import BudgetConfig

    budget = BudgetConfig(target_ratio=25, budget_sparsities="0.5,0.9", budget_bits="3,5", budget_eval_size=200,
                          budget_prune_method="l0")
    train_cfg = TrainConfig(dataset="digits", val_size=300, epochs=2, batch_size=32)
    report = compress_to_budget(train_cfg, PruneConfig(steps=1, retrain_epochs=1), QuantizeConfig(finetune_epochs=1),
                                budget, tmp_path, progress=False)
    assert report["budget"]["met"] and report["compression"] >= 25
    from pathlib import Path

    prune_dir = Path(report["run_dir"]) / "prune"
    assert (prune_dir / "gates" / "summary.json").exists() and (prune_dir / "retrain" / "summary.json").exists()
    sparsity = dict(item.split("=") for item in report["budget"]["rounds"][-1]["layer_sparsity"].split(","))
    kept = {row["layer"]: row["kept"] for row in report["layers"]}
    for layer, s in sparsity.items():
        assert kept[f"{layer}.weight"] == pytest.approx(1 - float(s), abs=0.01)
    assert report["accuracy"]["decoded"] > 0.5
    with pytest.raises(ValueError, match="budget_prune_method='magnitude' is not allowed; choose from fraction, l0"):
        BudgetConfig(target_ratio=25, budget_prune_method="magnitude")
    with pytest.raises(ValueError, match="leave out prune option method.*budget_prune_method l0"):
        compress_to_budget(train_cfg, PruneConfig(method="l0"), QuantizeConfig(), budget, tmp_path, progress=False)
