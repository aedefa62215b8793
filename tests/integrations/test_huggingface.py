"""deepzip callbacks inside a Hugging Face Trainer, on a tiny randomly initialised BERT (no download)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from deepzip import prune as P  # noqa: E402
from deepzip.integrations.huggingface import DeepzipCallback  # noqa: E402
from deepzip.train.callbacks import PruneOnSchedule  # noqa: E402


class TinyText(torch.utils.data.Dataset):
    def __init__(self, n=64, length=12, vocab=100):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, vocab, (n, length), generator=generator)
        self.labels = (self.ids[:, 0] > vocab // 2).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def test_gradual_pruning_inside_trainer(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    linear_only = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    schedule = PruneOnSchedule.gradual(P.GlobalMagnitude(sparsity=0.6, exclude=linear_only), begin=2, end=12, every=2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=16, per_device_train_batch_size=8,
                                          learning_rate=1e-3, weight_decay=0.01, report_to=[], save_strategy="no", use_cpu=True,
                                          logging_strategy="no", disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TinyText(),
                                   callbacks=[DeepzipCallback(schedule)])
    trainer.train()
    report = P.sparsity_report(model, )
    linear = [l for l in report["layers"] if l["kind"] == "fc"]
    kept = sum(l["nonzero"] for l in linear) / sum(l["total"] for l in linear)
    assert kept == pytest.approx(0.4, abs=2e-3)
    assert [s for s, _ in schedule.history] == [2, 4, 6, 8, 10, 12]
    for name, mask in P.get_masks(model).items():  # AdamW with weight decay kept every pruned weight at zero
        assert dict(model.named_parameters())[name].detach()[~mask].eq(0).all(), name
    with pytest.raises(TypeError, match="takes deepzip.train.callbacks objects"):
        DeepzipCallback(object())
