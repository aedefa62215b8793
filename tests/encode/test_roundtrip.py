from pathlib import Path

import pytest
import torch
from torch import nn

import deepzip
from deepzip import models
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.encode import decode_bytes, encode_model


def bit_identical(a: dict, b: dict) -> bool:
    if set(a) != set(b):
        return False
    for k in a:
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.is_floating_point():
            x, y = x.view(torch.int32) if x.dtype == torch.float32 else x, y.view(torch.int32) if y.dtype == torch.float32 else y
        if not torch.equal(x, y):
            return False
    return True


def round_trip(model, fresh, **kwargs):
    data, report = encode_model(model, **kwargs)
    _, state = decode_bytes(data)
    Q.load_state_dict(fresh, state)
    return data, report


class Zoo(nn.Module):
    """Every layer kind, to be pruned / shared in different ways."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 8)
        self.conv = nn.Conv1d(8, 6, 3)
        self.empty = nn.Linear(6, 5)
        self.single = nn.Linear(5, 4)
        self.dense_shared = nn.Linear(4, 4)
        self.plain = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)

    def forward(self, tokens):
        x = self.conv(self.embed(tokens).transpose(1, 2)).mean(-1)
        return self.norm(self.plain(self.dense_shared(self.single(self.empty(x)))))


def make_zoo(seed=0):
    torch.manual_seed(seed)
    model = Zoo()
    P.apply_masks(model, {"empty.weight": torch.zeros(5, 6, dtype=torch.bool),       # everything pruned
                          "embed.weight": torch.rand(40, 8) > 0.7,                    # sparse, not shared
                          "single.weight": torch.rand(4, 5) > 0.5,
                          "conv.weight": torch.ones(6, 8, 3, dtype=torch.bool)})      # a fully dense mask
    Q.share(model, "conv.weight", 3)
    Q.share(model, "empty.weight", 2)
    Q.install(model.single, "weight", torch.tensor([0.25]), torch.zeros(4, 5, dtype=torch.int64))  # one cluster
    Q.share(model, "dense_shared.weight", 2)  # shared, no mask
    return model


def test_every_layer_kind_bit_exact():
    model, fresh = make_zoo(0), make_zoo(1)
    model.norm.running_mean.fill_(0.3)
    model.norm.num_batches_tracked.fill_(7)
    round_trip(model, fresh)
    assert bit_identical(model.state_dict(), fresh.state_dict())
    tokens = torch.randint(0, 40, (2, 9))
    model.eval(), fresh.eval()
    assert torch.equal(model(tokens), fresh(tokens))


def test_deterministic_bytes_and_f16_storage():
    model = make_zoo(0)
    assert encode_model(model)[0] == encode_model(make_zoo(0))[0]
    small, _ = encode_model(model, float_dtype="f16", codebook_dtype="f16")
    assert len(small) < len(encode_model(model)[0])
    fresh = make_zoo(1)
    _, state = decode_bytes(small)
    Q.load_state_dict(fresh, state)
    assert fresh.plain.weight.dtype == torch.float32
    assert torch.equal(fresh.plain.weight, model.plain.weight.half().float())
    with pytest.raises(ValueError, match="float_dtype must be one of f32, f16"):
        encode_model(model, float_dtype="int4")


def test_public_api_rebuilds_registry_model_alone(tmp_path):
    model = models.build("lenet300_100", seed=0)
    deepzip.prune(model, sparsity=0.9)
    deepzip.quantize(model, bits={"fc": 4})
    report = deepzip.save(model, tmp_path / "m.dz")
    assert report["file_bytes"] == (tmp_path / "m.dz").stat().st_size
    assert report["compression"] > 20
    loaded = deepzip.load(tmp_path / "m.dz", keep_state=True)
    assert bit_identical(model.state_dict(), loaded.state_dict())
    with pytest.raises(ValueError, match="does not fit this model"):
        deepzip.load(tmp_path / "m.dz", model=models.build("lenet5"))


def test_transformer_encoder_round_trip(tmp_path):
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                    enable_nested_tensor=False)
    extra = [n for n, _ in encoder.named_parameters() if n.endswith("in_proj_weight")]
    deepzip.prune(encoder, sparsity=0.8, extra=extra)
    deepzip.quantize(encoder, bits=4, extra=extra)
    deepzip.save(encoder, tmp_path / "t.dz")
    fresh = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                  enable_nested_tensor=False)
    deepzip.load(tmp_path / "t.dz", model=fresh)
    x = torch.randn(2, 5, 16)
    encoder.eval(), fresh.eval()
    assert torch.equal(encoder(x), fresh(x))
    with pytest.raises(ValueError, match="records no registry model"):
        deepzip.load(tmp_path / "t.dz")


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    model = models.build("lenet300_100", seed=0)
    target = tmp_path / "m.dz"
    target.write_bytes(b"old")

    def crash(self, data):
        self.open("wb").write(data[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        deepzip.save(model, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.dz"]


def test_the_committed_benchmark_files_reencode_byte_identically():
    # The format and the encoder are stable: decoding the published files and encoding them again
    # (with the same metadata) in the 1.0 / 1.1 codings gives the very same bytes (a file not using the
    # 1.2 codings is what the 1.0 writer made).
    from pathlib import Path

    from deepzip.encode import encode_model, read

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    for name in ("lenet300_100", "lenet5"):
        path = results / f"{name}.dz"
        header, _ = read(path)
        data, _ = encode_model(deepzip.load(path, keep_state=True), metadata=header["metadata"], coding="1.1")
        assert data == path.read_bytes(), name
