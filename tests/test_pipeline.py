
import pytest

import deepzip
from deepzip import prune as P
from deepzip.pipeline import compress, inspect
from deepzip.train import PruneConfig, QuantizeConfig, TrainConfig

TRAIN = TrainConfig(dataset="digits", val_size=300, epochs=3, batch_size=32)
PRUNE = PruneConfig(sparsity=0.9, steps=2, retrain_epochs=3)
QUANT = QuantizeConfig(bits_fc=4, finetune_epochs=2, finetune_lr=3e-4)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    return runs, compress(TRAIN, PRUNE, QUANT, runs, progress=False)


def test_pipeline_report_and_decoded_accuracy(compressed):
    runs, report = compressed
    acc = report["accuracy"]
    assert acc["decoded"] == acc["quantized"]  # the file decodes to exactly the quantized model
    assert acc["dense"] > 0.9 and acc["decoded"] > acc["dense"] - 0.05
    assert report["file_bytes"] == (runs / report["dz"].split(str(runs) + "/")[1]).stat().st_size
    assert report["compression"] > 15
    fc1 = next(l for l in report["layers"] if l["layer"] == "fc1.weight")
    assert fc1["weight_bits_pq"] == 4 and 0.05 < fc1["kept"] < 0.2
    for stream in report["streams"]:
        assert stream["bytes"] * 8 >= stream["entropy_bytes"] * 8 - 1e-6 or stream["count"] == 0
    model = deepzip.load(report["dz"])
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.9, abs=0.01)


def test_pipeline_resumes_by_skipping_finished_stages(compressed, monkeypatch):
    runs, report = compressed
    import deepzip.pipeline as pipeline

    def fail(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(pipeline, "prune_and_retrain", fail)
    monkeypatch.setattr(pipeline, "quantize", fail)
    again = compress(TRAIN, PRUNE, QUANT, runs, progress=False)
    assert again["file_bytes"] == report["file_bytes"] and again["accuracy"] == report["accuracy"]


def test_inspect_reads_the_file_alone(compressed):
    _, report = compressed
    info = inspect(report["dz"])
    assert info["model"] == "lenet300_100"
    assert [l["layer"] for l in info["layers"]] == [l["layer"] for l in report["layers"]]
    assert info["compression"] == report["compression"]
    assert info["metadata"]["train_config"]["dataset"] == "digits"


def test_cli_inspect_evaluate_decompress(compressed, tmp_path, capsys):
    from deepzip.cli import main
    from deepzip.checkpoint import load_model_file

    _, report = compressed
    assert main(["inspect", report["dz"]]) == 0
    assert "compress rate (P+Q+H)" in capsys.readouterr().out
    assert main(["evaluate", report["dz"]]) == 0
    assert f"test accuracy {report['accuracy']['decoded']:.2%}" in capsys.readouterr().out
    out = tmp_path / "dense.safetensors"
    assert main(["decompress", report["dz"], "-o", str(out)]) == 0
    state, description = load_model_file(out)
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    assert description["model"] == "lenet300_100"
    assert main(["inspect", str(out)]) == 2
    assert "not a deepzip file" in capsys.readouterr().err


# --- compression to a size budget -------------------------------------------------------------------

BUDGET_TRAIN = TrainConfig(dataset="digits", val_size=300, epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory):
    from deepzip.pipeline import compress_to_budget
    from deepzip.train import BudgetConfig

    runs = tmp_path_factory.mktemp("budget")
    budget = BudgetConfig(target_ratio=25, budget_sparsities="0.5,0.9", budget_bits="3,5", budget_eval_size=200)
    report = compress_to_budget(BUDGET_TRAIN, PruneConfig(steps=2, retrain_epochs=1),
                                QuantizeConfig(finetune_epochs=1), budget, runs, progress=False)
    return runs, budget, report


def test_a_budget_is_met_by_the_real_file(budgeted):
    runs, budget, report = budgeted
    target = report["budget"]
    assert target["budget_bytes"] == int(report["dense_bytes"] / 25)
    assert target["met"] and report["file_bytes"] <= target["budget_bytes"] and report["compression"] >= 25
    chosen = target["rounds"][-1]
    assert chosen["file_bytes"] == report["file_bytes"]
    # every layer at one of the candidate settings, and the file holds what was chosen
    sparsity = dict(item.split("=") for item in chosen["layer_sparsity"].split(","))
    assert set(sparsity) == {"fc1", "fc2", "fc3"} and set(sparsity.values()) <= {"0.5", "0.9"}
    kept = {row["layer"]: row["kept"] for row in report["layers"]}
    for layer, s in sparsity.items():
        assert kept[f"{layer}.weight"] == pytest.approx(1 - float(s), abs=0.01)
    bits = dict(item.split("=") for item in chosen["bits"].split(","))
    assert {row["layer"]: row["weight_bits_pq"] for row in report["layers"] if row["layer"].endswith("weight")} == \
        {f"{layer}.weight": int(b) for layer, b in bits.items()}
    # the prediction from per-layer measurements is close to the real file (retraining moves it a little)
    assert abs(chosen["predicted_bytes"] - chosen["file_bytes"]) < 0.1 * chosen["file_bytes"]
    assert "Size budget 25x" in (runs / report["run_dir"].split(str(runs) + "/")[1] / "report.md").read_text()


def test_a_budgeted_rerun_measures_and_trains_nothing(budgeted, monkeypatch):
    import deepzip.pipeline as pipeline
    from deepzip.pipeline import compress_to_budget

    runs, budget, report = budgeted
    for name in ("layer_options", "prune_and_retrain", "quantize"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: pytest.fail("a finished step ran again"))
    again = compress_to_budget(BUDGET_TRAIN, PruneConfig(steps=2, retrain_epochs=1), QuantizeConfig(finetune_epochs=1),
                               budget, runs, progress=False)
    assert again["file_bytes"] == report["file_bytes"] and again["budget"]["rounds"] == report["budget"]["rounds"]


def test_budget_errors_name_what_to_change(tmp_path):
    from deepzip.pipeline import compress_to_budget
    from deepzip.train import BudgetConfig

    with pytest.raises(ValueError, match="leave out prune option sparsity, quantize option bits_fc"):
        compress_to_budget(BUDGET_TRAIN, PruneConfig(sparsity=0.8), QuantizeConfig(bits_fc=3),
                           BudgetConfig(target_ratio=20), tmp_path, progress=False)
    with pytest.raises(ValueError, match="needs target_ratio or max_bytes"):
        compress_to_budget(BUDGET_TRAIN, PruneConfig(), QuantizeConfig(), BudgetConfig(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="not both"):
        BudgetConfig(target_ratio=20, max_bytes=1000)
    with pytest.raises(ValueError, match="budget_sparsities must list values in"):
        BudgetConfig(budget_sparsities="0.5,1.5")
    # a budget no candidate can meet: the smallest options' size is given
    with pytest.raises(ValueError, match="no choice of the measured options fits"):
        compress_to_budget(BUDGET_TRAIN, PruneConfig(steps=1, retrain_epochs=1), QuantizeConfig(finetune_epochs=1),
                           BudgetConfig(max_bytes=500, budget_sparsities="0.5", budget_bits="8"), tmp_path,
                           progress=False)


def test_other_candidates_are_measured_again_never_reused(budgeted):
    import deepzip.pipeline as pipeline
    from deepzip import data
    from deepzip.train import BudgetConfig

    runs, budget, _ = budgeted
    splits = data.load("digits", val_size=300)
    _, identity, dense = pipeline._dense(BUDGET_TRAIN, runs, None, splits, progress=False)
    before = set(runs.glob("budget_*/options.json"))
    other = BudgetConfig(target_ratio=25, budget_sparsities="0.5,0.9", budget_bits="4", budget_eval_size=200)
    options, _ = pipeline._measured_options(dense, splits, other, [], runs, identity, BUDGET_TRAIN, "f32", "f32",
                                            progress=False)
    assert {o.settings["bits"] for layer in options.values() for o in layer} == {4}
    assert len(set(runs.glob("budget_*/options.json")) - before) == 1
