import pytest
import torch
from torch import nn

from deepzip.calibrate import input_statistics

from .conftest import tiny_bert, token_batches


def test_linear_statistics_are_the_input_column_norms_and_gram():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    batches = [torch.randn(7, 5), torch.randn(3, 5)]
    stats = input_statistics(model, batches, gram=True)
    assert set(stats) == {"0.weight", "2.weight"}
    x = torch.cat(batches)
    assert stats["0.weight"].count == 10
    torch.testing.assert_close(stats["0.weight"].sq_norm, x.double().pow(2).sum(0))
    torch.testing.assert_close(stats["0.weight"].gram, x.T @ x, rtol=1e-5, atol=1e-5)
    hidden = torch.relu(model[0](x))
    torch.testing.assert_close(stats["2.weight"].sq_norm.float(), hidden.pow(2).sum(0), rtol=1e-5, atol=1e-6)
    assert stats["0.weight"].sq_norm.dtype == torch.float64


def test_names_select_layers_and_unknown_names_are_errors():
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3))
    stats = input_statistics(model, [torch.randn(2, 5)], names=["1"])
    assert list(stats) == ["1.weight"] and stats["1.weight"].gram is None
    with pytest.raises(ValueError, match="no Linear or Embedding layer 'fc'.*0.weight, 1.weight"):
        input_statistics(model, [torch.randn(2, 5)], names=["fc"])
    with pytest.raises(ValueError, match="no calibration batches"):
        input_statistics(model, [])
    with pytest.raises(TypeError, match="tensor or a dict of tensors"):
        input_statistics(model, [[1, 2]])


def test_padding_tokens_are_left_out_and_embedding_rows_are_counted():
    model = tiny_bert()
    batches = token_batches(count=2, batch=3, length=8)
    stats = input_statistics(model, batches, names=["embeddings.word_embeddings", "encoder.layer.0.output.dense"])
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    assert real == 2 * (3 * 8 - 4)
    assert stats["encoder.layer.0.output.dense.weight"].count == real
    emb = stats["embeddings.word_embeddings.weight"]
    assert emb.kind == "embedding" and emb.count == real  # padding lookups are not counted either
    ids = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in batches])
    torch.testing.assert_close(emb.sq_norm, torch.bincount(ids, minlength=100).double())
    assert model.training is False
