
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
