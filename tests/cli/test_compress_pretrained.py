import json

import pytest

import deepzip
from deepzip.cli import main
from deepzip.data.text import read_passages, split_passages
from deepzip.models.pretrained import embed, load_pretrained, token_batches
from deepzip.prune import SparseGPT, Wanda
from deepzip.quantize import KMeans, WeightedKMeans, codebooks, outliers
from deepzip.train.pretrained import PretrainedConfig

from ..models.test_pretrained import save_tiny

pytest.importorskip("transformers")


def test_the_cli_builds_the_same_configs_and_refuses_options_that_do_not_apply():
    assert PretrainedConfig().method_config() == Wanda(sparsity=0.5)
    assert PretrainedConfig(method="sparsegpt", n=2, m=4, percdamp=0.05).method_config() == \
        SparseGPT(n=2, m=4, percdamp=0.05)
    with pytest.raises(ValueError, match="percdamp=0.05 does not apply to method wanda"):
        PretrainedConfig(percdamp=0.05)
    with pytest.raises(ValueError, match="method='magnitude' is not allowed; choose from wanda, sparsegpt, owl"):
        PretrainedConfig(method="magnitude")


def test_compress_pretrained_writes_a_dz_and_its_report(tmp_path, capsys):
    save_tiny(tmp_path / "tiny")
    text = tmp_path / "text.txt"
    words = ["in", "the", "beginning", "god", "created", "heaven", "and", "earth", "light"]
    text.write_text("\n".join(" ".join(words[(i + j) % 9] for j in range(8)) for i in range(120)) + "\n")
    out = tmp_path / "tiny.dz"
    code = main(["compress-pretrained", str(tmp_path / "tiny"), "--calibration", str(text), "--out", str(out),
                 "--method", "sparsegpt", "--sparsity", "0.5", "--distill-steps", "3", "--bits", "6", "--quiet"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "tiny.dz.json").read_text())
    assert report["evaluation_passages"] == 10 and 0.3 < report["sparsity"] < 0.5 and report["ratio_vs_fp32"] > 2
    assert out.stat().st_size == report["bytes"] and "held-out passages" in capsys.readouterr().out
    assert main(["compress-pretrained", str(tmp_path / "tiny"), "--calibration", str(text), "--limit", "0.1"]) == 2
    assert "--limit: 0.1 does not apply to method wanda" in capsys.readouterr().err


def test_the_weight_sharing_options_build_the_registry_configs_and_refuse_what_does_not_apply():
    assert PretrainedConfig().quantize_config() is None
    assert PretrainedConfig(bits=6).quantize_config() == KMeans(bits={"fc": 6, "conv": 6, "embedding": 6, "other": 6})
    cfg = PretrainedConfig(sparsity=0.0, bits=3, embedding_bits=4, quantize="weighted", outliers=0.005,
                           error_feedback=True, importance="fisher")
    assert not cfg.prunes and cfg.quantize_config() == WeightedKMeans(
        bits={"fc": 3, "conv": 3, "embedding": 4, "other": 3}, importance="fisher", outliers=0.005, error_feedback=True)
    with pytest.raises(ValueError, match="outliers=0.01 does not apply to quantize kmeans; its options: bits, "
                                         "embedding_bits, quantize"):
        PretrainedConfig(bits=4, outliers=0.01)
    with pytest.raises(ValueError, match="quantize='weighted' does not apply to no weight sharing"):
        PretrainedConfig(quantize="weighted")
    with pytest.raises(ValueError, match="granularity='col' is not allowed; choose from layer, row"):
        PretrainedConfig(bits=4, quantize="weighted", granularity="col")


@pytest.mark.parametrize("options", [
    ["--quantize", "weighted", "--bits", "3", "--embedding-bits", "4", "--outliers", "0.01",
     "--error-feedback", "true", "--sparsity", "0"],
    ["--method", "wanda", "--quantize", "weighted", "--importance", "fisher", "--granularity", "layer", "--bits", "4"],
])
def test_weight_shared_dz_decodes_bit_exactly_into_a_fresh_model(tmp_path, capsys, options):
    save_tiny(tmp_path / "tiny")
    text = tmp_path / "text.txt"
    words = ["in", "the", "beginning", "god", "created", "heaven", "and", "earth", "light"]
    text.write_text("\n".join(" ".join(words[(i * 7 + j * j) % 9] for j in range(8)) for i in range(120)) + "\n")
    out = tmp_path / "tiny.dz"
    code = main(["compress-pretrained", str(tmp_path / "tiny"), "--calibration", str(text), "--out", str(out),
                 "--quiet", *options])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "tiny.dz.json").read_text())
    assert report["decoded_bit_exact"] is True
    # a fresh instance of the Hugging Face model, filled from the file: every weight is the compressed one
    fresh, tokenizer = load_pretrained(tmp_path / "tiny")
    deepzip.load(out, fresh, keep_state=True)
    shared = codebooks(fresh)
    assert "embeddings.word_embeddings.weight" in shared and "encoder.layer.0.output.dense.weight" in shared
    embedding_bits = 4 if "--embedding-bits" in options else int(options[options.index("--bits") + 1])
    assert shared["embeddings.word_embeddings.weight"][0].shape[-1] <= 2 ** embedding_bits
    row_codebooks = shared["encoder.layer.0.output.dense.weight"][0]
    assert row_codebooks.dim() == (2 if "layer" not in options else 1)
    if "--outliers" in options:
        assert "encoder.layer.0.output.dense.weight" in outliers(fresh)
    evaluation = split_passages(read_passages(text), "evaluation")
    batches = token_batches(tokenizer, evaluation, 64)
    original, _ = load_pretrained(tmp_path / "tiny")
    cosine = float((embed(original, batches) * embed(fresh, batches)).sum(1).mean())
    assert cosine == pytest.approx(report["cosine"], abs=1e-6) and 0.5 < cosine < 1.0
    assert report["ratio_vs_fp32"] > 2.5  # per-row codebooks of 32-wide rows cost as much as their indices
