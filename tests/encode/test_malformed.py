"""Regression tests for the reliability campaign's nine decoder findings: tiny crafted files with
recomputed checksums; each must give one FormatError naming the field, fast and without a big allocation."""

import json
import resource
import struct
import zlib

import pytest
import torch
from torch import nn

import deepzip
from deepzip import FormatError, models
from deepzip.encode import ModelFitError, decode_bytes, encode_model
from deepzip.encode import container
from deepzip.encode.bits import varint


def crafted(tensors, sections, model=None) -> bytes:
    return container.pack({"writer": "test", "model": model, "metadata": {}, "tensors": tensors}, sections)


def shared(name, shape, k, indices, positions=None, codebook_section=0):
    return {"name": name, "shape": shape, "encoding": "shared",
            "codebook": {"dtype": "f32", "size": k, "section": codebook_section},
            "positions": positions, "indices": indices}


def codebook(*values) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_valid_crafted_file_decodes():
    """The helpers make valid files: each test below changes one thing."""
    data = crafted([shared("w", [4], 2, {"section": 1, "coder": "raw", "count": 4, "alphabet": 2})],
                   [codebook(1, 2), bytes([0b0101])])
    _, state = decode_bytes(data)
    assert state["w_index"].tolist() == [1, 0, 1, 0]


# 1. a shared record without "positions" (one header bit flip of the key does the same)
def test_shared_record_without_positions():
    record = shared("w", [4], 2, {"section": 1, "coder": "raw", "count": 4, "alphabet": 2})
    del record["positions"]
    with pytest.raises(FormatError, match=r"tensor 'w' lacks the key\(s\) 'positions'"):
        decode_bytes(crafted([record], [codebook(1, 2), bytes([5])]))
    flipped = shared("w", [4], 2, {"section": 1, "coder": "raw", "count": 4, "alphabet": 2})
    flipped["positionr"] = flipped.pop("positions")
    with pytest.raises(FormatError, match="'positions'"):
        decode_bytes(crafted([flipped], [codebook(1, 2), bytes([5])]))


# 2. an integer of thousands of digits (Python's json refuses it with a ValueError of its own)
def test_integer_of_5000_digits():
    text = json.dumps({"writer": "test", "model": None, "metadata": {"n": 0}, "sections": [], "tensors": []})
    text = text.replace('"n": 0', '"n": ' + "9" * 5000)
    with pytest.raises(FormatError, match="integer of 5000 digits"):
        decode_bytes(container.frame(zlib.compress(text.encode()), []))


# 3. a dtype that is a list (unhashable)
def test_dtype_that_is_a_list():
    record = {"name": "b", "shape": [2], "encoding": "dense", "dtype": ["f32"], "section": 0}
    with pytest.raises(FormatError, match="tensor 'b': dtype must be one of"):
        decode_bytes(crafted([record], [b"\0" * 8]))


# 4. a shape of 0 elements whose other dimension overflows int64
def test_shape_zero_times_huge():
    record = {"name": "b", "shape": [0, 10 ** 19], "encoding": "dense", "dtype": "f32", "section": 0}
    with pytest.raises(FormatError, match=r"tensor 'b': shape .*a size exceeds the limit"):
        decode_bytes(crafted([record], [b""]))


# 5. a one-symbol rANS stream whose count alone would set the allocation
@pytest.mark.parametrize("n", [1 << 26, (1 << 31) - 1])
def test_rans_one_symbol_huge_count(n):
    before = peak_mb()
    record = shared("w", [n], 1, {"section": 1, "coder": "rans", "count": n, "alphabet": 1})
    with pytest.raises(FormatError, match=r"header 'tensors': \d+ elements in all exceed the limit"):
        decode_bytes(crafted([record], [codebook(1), varint(1) + varint(1) + varint(n)]))
    assert peak_mb() - before < 50


def test_rans_one_symbol_within_the_limit_decodes():
    n = 1 << 20
    record = shared("w", [n], 1, {"section": 1, "coder": "rans", "count": n, "alphabet": 1})
    _, state = decode_bytes(crafted([record], [codebook(1), varint(1) + varint(1) + varint(n)]))
    assert state["w_index"].shape == (n,) and not state["w_index"].any()


# 6. a two-symbol rANS stream with a count the payload cannot hold (constriction aborted the process)
@pytest.mark.parametrize("n", [(1 << 31) - 1, 1 << 21])
def test_rans_two_symbols_count_beyond_the_payload(n):
    table = varint(2) + varint(1) + varint(n // 2) + varint(1) + varint(n - n // 2)
    record = shared("w", [n], 2, {"section": 1, "coder": "rans", "count": n, "alphabet": 2})
    message = "exceed the limit" if n > 1 << 24 else r"tensor 'w' indices: 2097152 symbols .* need 2097152 bits"
    with pytest.raises(FormatError, match=message):
        decode_bytes(crafted([record], [codebook(1, 2), table + b"\x01\0\0\0"]))


# 7. a sparse record of 2^31-1 elements with empty streams; a valid file with one dimension edited
def test_sparse_record_of_2g_elements_with_empty_streams():
    before = peak_mb()
    record = {"name": "w", "shape": [(1 << 31) - 1], "encoding": "sparse", "dtype": "f32", "values": 1,
              "positions": {"span_bits": 1, "stream": {"section": 0, "coder": "raw", "count": 0, "alphabet": 2}}}
    with pytest.raises(FormatError, match="elements in all exceed the limit"):
        decode_bytes(crafted([record], [b"", b""]))
    assert peak_mb() - before < 50


def small_pruned_model() -> nn.Module:
    model = models.build("lenet300_100", input_shape=(1, 8, 8), seed=0)
    deepzip.prune(model, sparsity=0.8)
    deepzip.quantize(model, bits=3)
    return model


def repacked(data: bytes, mutate) -> bytes:
    header, sections = container.unpack(data)
    header = json.loads(json.dumps(header))
    header.pop("sections")
    mutate(header)
    return container.pack(header, sections)


def record_of(header, name):
    return next(r for r in header["tensors"] if r["name"] == name)


def test_one_dimension_edited_to_16m():
    data, _ = encode_model(small_pruned_model())
    before = peak_mb()
    edited = repacked(data, lambda h: record_of(h, "fc1.weight")["shape"].__setitem__(0, 16_777_216))
    with pytest.raises(FormatError, match="elements in all exceed the limit"):
        decode_bytes(edited)
    assert peak_mb() - before < 50


# 8. load(path, model=m): names the model lacks, mismatched kinds or shapes: "does not fit", before decoding
@pytest.fixture
def bn_file(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))
    deepzip.prune(model, sparsity=0.5, extra=["0.weight"])
    path = tmp_path / "bn.dz"
    deepzip.save(model, path)
    return path


def fresh_bn():
    return nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4))


def test_fresh_model_loads(bn_file):
    deepzip.load(bn_file, model=fresh_bn())


@pytest.mark.parametrize("mutate, message", [
    (lambda h: record_of(h, "0.weight").__setitem__("name", "0.weigjt"), "'0.weigjt' does not fit this model: the model has no such"),
    (lambda h: record_of(h, "0.bias").__setitem__("name", "7.bias"), "'7.bias' does not fit this model"),
    (lambda h: record_of(h, "1.running_mean").__setitem__("name", "0.weight_codebook"), "'0.weight_codebook' does not fit"),
])
def test_names_the_model_lacks(bn_file, tmp_path, mutate, message):
    path = tmp_path / "bad.dz"
    path.write_bytes(repacked(bn_file.read_bytes(), mutate))
    with pytest.raises(ModelFitError, match=message):
        deepzip.load(path, model=fresh_bn())


def test_a_tensor_the_file_lacks(bn_file, tmp_path):
    header, sections = container.unpack(bn_file.read_bytes())
    last = header["tensors"].pop()
    assert last["name"] == "1.num_batches_tracked" and last["section"] == len(sections) - 1
    header.pop("sections")
    path = tmp_path / "bad.dz"
    path.write_bytes(container.pack(header, sections[:-1]))
    with pytest.raises(ModelFitError, match="does not fit this model: it lacks '1.num_batches_tracked'"):
        deepzip.load(path, model=fresh_bn())


def test_a_sparse_record_for_a_buffer_is_a_kind_mismatch(tmp_path):
    record = {"name": "1.running_var", "shape": [4], "encoding": "sparse", "dtype": "f32", "values": 1,
              "positions": {"span_bits": 1, "stream": {"section": 0, "coder": "raw", "count": 0, "alphabet": 2}}}
    path = tmp_path / "k.dz"
    path.write_bytes(crafted([record], [b"", b""]))
    with pytest.raises(ModelFitError, match="'1.running_var' does not fit this model: a sparse record needs a floating"):
        deepzip.load(path, model=fresh_bn())


def test_shapes_must_match(bn_file):
    with pytest.raises(ModelFitError, match="'0.weight' does not fit this model: shape"):
        deepzip.load(bn_file, model=nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(4)))


def test_kind_mismatch_shared_record_for_an_integer_buffer(tmp_path):
    record = shared("num", [4], 2, {"section": 1, "coder": "raw", "count": 4, "alphabet": 2})
    path = tmp_path / "k.dz"
    path.write_bytes(crafted([record], [codebook(1, 2), bytes([5])]))
    model = nn.Module()
    model.register_buffer("num", torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ModelFitError, match="'num' does not fit this model: a shared record needs a floating-point parameter"):
        deepzip.load(path, model=model)


# 9. load(path) trusts the header's model description: checked, and compared with the records first
@pytest.fixture
def lenet_file(tmp_path):
    path = tmp_path / "l.dz"
    deepzip.save(models.build("lenet300_100", seed=0), path)
    return path


@pytest.mark.parametrize("description, message", [
    ({"model": "lenet300_100", "input_shape": [1, 100000, 100000], "num_classes": 10}, "'input_shape' must be"),
    ({"model": "lenet300_100", "input_shape": "abc", "num_classes": 10}, "'input_shape' must be"),
    ({"model": "lenet300_100", "input_shape": [1, 28, 28], "num_classes": 2_000_000}, "'num_classes' must be"),
    ({"model": "lenet300_100", "input_shape": [1, 28, 28], "num_classes": True}, "'num_classes' must be"),
    ({"model": "resnet9000"}, "'model': unknown model"),
    ({"model": "conv6", "input_shape": [1, 3000, 3000], "num_classes": 10}, "has 9217212874 elements, more than"),
    ({"model": "conv6", "input_shape": [1, 4, 4], "num_classes": 10}, "'input_shape' .* does not suit conv6"),
    ({"model": "lenet300_100", "input_shape": [1, 28, 28], "num_classes": 11}, "'fc3.weight' does not fit this model: shape"),
    ({"model": "conv6", "input_shape": [1, 28, 28], "num_classes": 10}, "'fc1.weight' does not fit this model"),
])
def test_model_description_checked_before_building(lenet_file, tmp_path, description, message):
    path = tmp_path / "bad.dz"
    path.write_bytes(repacked(lenet_file.read_bytes(), lambda h: h.__setitem__("model", description)))
    before = peak_mb()
    with pytest.raises(FormatError, match=message):
        deepzip.load(path)
    assert peak_mb() - before < 50


def test_an_empty_shape_whose_other_sizes_overflow_strides():
    # found by the fuzz campaign (stacked edits on a huffman-coded shared embedding): numel 0, yet
    # reshaping to [0, 2^31-1, 2^31-1, 2^31-1] overflowed torch's stride calculation (RuntimeError)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    data, _ = encode_model(model)
    big = 2**31 - 1
    bad = repacked(data, lambda h: record_of(h, "0.bias").__setitem__("shape", [0, big, big, big]))
    with pytest.raises(FormatError, match=r"'0.bias': shape \[0, 2147483647, .*nonzero sizes multiply to more than"):
        decode_bytes(bad)
