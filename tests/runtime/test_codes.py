"""The dense weight-shared kernels (runtime.codes) against a dense matmul, and their place in convert/load."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import runtime
from deepzip.quantize import codebooks, install
from deepzip.runtime import CodedLinear, CodedMatrix, panels
from deepzip.runtime.codes import pack, row_blocks


def close(a, b):  # fp32 reassociation: the kernels sum in another order than the BLAS
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item())), (a - b).abs().max()


def state(rows, width, k, per_row=False, pruned=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn((rows, k) if per_row else (k,), generator=g)
    index = torch.randint(0, k, (rows, width), generator=g)
    mask = torch.rand(rows, width, generator=g) >= pruned if pruned else None
    weight = codebook[index] if not per_row else torch.gather(codebook, 1, index)
    if mask is not None:
        weight = torch.where(mask, weight, torch.zeros(()))
    return codebook, index, mask, weight


@pytest.mark.parametrize("rows, width", [(7, 13), (40, 64), (6, 1), (33, 384)])
@pytest.mark.parametrize("k, bits", [(4, 4), (16, 4), (32, 8), (255, 8)])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 9])
def test_codes_match_dense(rows, width, k, bits, per_row, batch):
    codebook, index, _, weight = state(rows, width, k, per_row)
    bias = torch.randn(rows)
    layer = CodedLinear(CodedMatrix.from_index(codebook, index), bias)
    assert layer.matrix.bits == bits and layer.matrix.per_row == int(per_row and rows > 1)
    assert torch.equal(layer.matrix.to_dense(), weight)  # the codes decode to exactly the shared weight
    x = torch.randn(batch, width)
    close(layer(x), F.linear(x, weight, bias))
    close(layer(x.reshape(batch, 1, width)), F.linear(x, weight, bias).reshape(batch, 1, rows))  # leading dims
    close(layer(x[:, None].expand(batch, 2, width)), F.linear(x, weight, bias)[:, None].expand(batch, 2, rows))


def test_4bit_codes_are_half_a_byte_and_pruned_weights_cost_one_code():
    codebook, index, mask, weight = state(64, 384, 15, pruned=0.1)
    matrix = CodedMatrix.from_index(codebook, index, mask)
    assert matrix.bits == 4 and matrix.codes.nbytes == 64 * 192  # 15 values + the pruned zero fit 4 bits
    assert torch.equal(matrix.to_dense(), weight) and (matrix.to_dense()[~mask] == 0).all()
    assert CodedMatrix.from_index(*state(64, 384, 16, pruned=0.1)[:3]).bits == 8  # 16 + zero: 17 codes
    with pytest.raises(ValueError, match="at most 256"):
        CodedMatrix.from_index(*state(4, 8, 256, pruned=0.5)[:3])
    assert not CodedMatrix.eligible(torch.zeros(300), False) and not CodedMatrix.eligible(torch.zeros(16), True)


def test_pack_layout_and_row_blocks():
    index = np.arange(10, dtype=np.uint8).reshape(2, 5) % 16  # width 5: half 3, the last high nibble is padding
    packed = pack(index, 4)
    assert packed.shape == (2, 3) and packed[0].tolist() == [0 | 3 << 4, 1 | 4 << 4, 2]
    assert row_blocks(10, 2).tolist() == [0, 4, 10] and row_blocks(3, 4).tolist()[-1] == 3


def test_parallel_kernels_agree_with_serial():
    codebook, index, _, weight = state(1000, 384, 16)
    matrix = CodedMatrix.from_index(codebook, index)
    x = torch.randn(4, 384)
    torch.set_num_threads(2)
    try:
        two = (matrix.matmul(x.numpy(), np.zeros(0, np.float32)), matrix.matvec(x[0].numpy(), np.zeros(0, np.float32)))
    finally:
        torch.set_num_threads(1)
    one = (matrix.matmul(x.numpy(), np.zeros(0, np.float32)), matrix.matvec(x[0].numpy(), np.zeros(0, np.float32)))
    assert np.array_equal(two[0], one[0]) and np.array_equal(two[1], one[1])
    close(torch.from_numpy(one[0]), F.linear(x, weight))


def shared_mlp(per_row=False, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    for name, layer in (("0", model[0]), ("2", model[2])):
        codebook, index, _, _ = state(layer.out_features, layer.in_features, 16, per_row, seed=int(name))
        install(layer, "weight", codebook, index)
    return model


@pytest.mark.parametrize("per_row", [False, True])
def test_convert_and_load_run_shared_layers_from_their_codes(tmp_path, per_row):
    model = shared_mlp(per_row)
    x = torch.randn(3, 48)
    expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode="codes")
    assert [d["kernel"] for d in runtime.decisions(fast)] == ["codes", "codes"]
    # one codebook of 16: the panel kernels; a codebook per row: row tables (48 inputs: 4 blocks of 8 bytes a
    # row, 64 tables of 16 fp32); without AVX-512 the row kernels (+ the pair table with one codebook)
    if panels.available():
        kernel, codes_bytes = ("row tables", 64 * 32 + 64 * 16 * 4) if per_row else ("panels fp32", 64 * 24 + 16 * 4)
    else:
        kernel, codes_bytes = "rows", 64 * 24 + 16 * 4 * (64 if per_row else 1) + (0 if per_row else 2048)
    assert runtime.decisions(fast)[0]["codes_kernel"] == kernel
    assert runtime.decisions(fast)[0]["codes_bytes"] == codes_bytes
    close(fast(x), expected)
    deepzip.save(model, tmp_path / "m.dz")
    loaded = runtime.load(tmp_path / "m.dz", shared_mlp(seed=1), mode="codes")
    assert [d["kernel"] for d in runtime.decisions(loaded)] == ["codes", "codes"]
    close(loaded(x), expected)
    # without a sample input, small layers stay dense (table lookups only pay off on weights from memory)
    assert [d["kernel"] for d in runtime.decisions(runtime.convert(copy.deepcopy(model)))] == ["dense", "dense"]


def test_calibration_races_the_faster_compact_form(monkeypatch):
    import importlib

    convert_module = importlib.import_module("deepzip.runtime.convert")
    monkeypatch.setattr(convert_module, "_calibrate_in_model", lambda model, fast, dense, example: [(1.0, 2.0)] * 3)
    model = shared_mlp()
    fast = runtime.convert(model, example=torch.randn(1, 48))
    for d in runtime.decisions(fast):
        assert d["raced"] == min(("sparse", "codes"), key=lambda kind: d[f"{kind}_s"])
        assert d["kernel"] == d["raced"] and {"sparse_s", "codes_s", "dense_s"} <= set(d)
    with pytest.raises(ValueError, match="mode 'codes' is the CPU runtime's"):
        runtime.convert(shared_mlp(), mode="codes", device="cuda")
    assert codebooks(shared_mlp())  # the helper really builds shared layers
