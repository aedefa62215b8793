import pytest
import torch


def tiny_bert(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(config).eval()


def token_batches(count: int = 4, batch: int = 4, length: int = 12, seed: int = 1, pad: bool = True):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(1, 100, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        if pad:
            mask[0, length // 2:] = 0  # one padded sequence per batch
            ids[0, length // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out
