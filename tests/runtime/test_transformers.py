"""Transformer coverage: a Hugging Face encoder's Linear layers run through deepzip.runtime, the rest stays PyTorch."""

import copy

import pytest
import torch

import deepzip
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip import runtime
from deepzip.runtime import CodedLinear, SparseLinear, rowtables

transformers = pytest.importorskip("transformers")
IDS = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
LINEAR = [f"encoder.layer.{i}.{part}" for i in range(2) for part in (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "intermediate.dense", "output.dense")] + ["pooler.dense"]


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


def close(a, b):
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()


def outputs(model, ids=IDS):
    with torch.no_grad():
        out = model(ids)
    return out.last_hidden_state, out.pooler_output


@pytest.mark.parametrize("mode, kernel", [("codes", CodedLinear), ("sparse", SparseLinear)])
def test_bert_linear_layers_load_from_a_dz_and_match(tmp_path, mode, kernel):
    model = tiny_bert()
    Q.quantize(model, 4)  # embeddings too: those stay PyTorch, materialised from their codebooks
    deepzip.save(model, tmp_path / "bert.dz")
    fast = runtime.load(tmp_path / "bert.dz", tiny_bert(seed=1), mode=mode)
    assert [d["layer"] for d in runtime.decisions(fast)] == LINEAR
    assert all(isinstance(fast.get_submodule(name), kernel) for name in LINEAR)
    assert isinstance(fast.embeddings.word_embeddings, torch.nn.Embedding)
    for got, expected in zip(outputs(fast), outputs(model)):  # [batch, seq, hidden] through every layer
        close(got, expected)


def test_bert_convert_with_calibration_lists_a_decision_per_layer():
    model = tiny_bert()
    P.prune(model, 0.5)
    Q.quantize(model, Q.WeightedKMeans(bits=3, importance="none", outliers=0.01))  # per-row codebooks + outliers
    expected = outputs(model)
    fast = runtime.convert(copy.deepcopy(model), example=IDS[:1])
    decisions = runtime.decisions(fast)
    assert [d["layer"] for d in decisions] == LINEAR
    # outliers: dense codes only in row tables (AVX-512), offered to calibration with sparse and dense
    if rowtables.available():
        assert all(d["codes_kernel"] == "row tables + outliers" and "codes_s" in d for d in decisions)
    else:
        assert all(d["kernel"] in ("sparse", "dense") and "codes_bytes" not in d for d in decisions)
    for got, want in zip(outputs(fast), expected):
        close(got, want)
    per_row = tiny_bert()
    Q.quantize(per_row, Q.WeightedKMeans(bits=4, importance="none"))  # per-row codebooks, no outliers
    coded = runtime.convert(copy.deepcopy(per_row), mode="codes")
    assert all(runtime.decisions(coded)[i]["kernel"] == "codes" for i in range(len(LINEAR)))
    assert coded.get_submodule(LINEAR[0]).matrix.per_row == 1
    for got, want in zip(outputs(coded), outputs(per_row)):
        close(got, want)
