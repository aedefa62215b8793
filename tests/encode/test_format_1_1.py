"""Format 1.1: per-row codebooks and exact outliers in shared records; 1.0 files still read."""

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import deepzip
from deepzip import FormatError
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.encode import decode_bytes, encode_model
from deepzip.encode import container

transformers = pytest.importorskip("transformers")
OLD_FILE = Path(__file__).parents[2] / "benchmarks" / "results" / "lenet300_100.dz"


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    return transformers.BertModel(config).eval()


def compressed_bert(prune=0.0):
    model = tiny_bert()
    if prune:
        P.prune(model, prune)
    Q.quantize(model, Q.WeightedKMeans(bits=3, importance="none", outliers=0.01))
    return model


IDS = torch.randint(0, 100, (3, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("prune", [0.0, 0.6])
def test_per_row_codebooks_and_outliers_round_trip_exactly(tmp_path, prune):
    model = compressed_bert(prune)
    path = tmp_path / "bert.dz"
    deepzip.save(model, path, coding="1.1")  # the 1.1 codings only: a 1.1 file
    assert struct.unpack_from("<HH", path.read_bytes(), 8) == (1, 1)
    fresh = deepzip.load(path, model=tiny_bert(seed=1), keep_state=True)
    assert torch.equal(fresh(IDS).last_hidden_state, model(IDS).last_hidden_state)
    for name, (mask, values) in Q.outliers(model).items():
        got_mask, got_values = Q.outliers(fresh)[name]
        assert torch.equal(got_mask, mask) and torch.equal(got_values, values)  # outliers exact after decode
    for name, (codebook, index) in Q.codebooks(model).items():
        assert torch.equal(Q.codebooks(fresh)[name][0], codebook)
        assert torch.equal(Q.codebooks(fresh)[name][1].long(), index.long())
    assert Q.codebooks(fresh)["encoder.layer.0.intermediate.dense.weight"][0].shape == (64, 8)
    header = json.loads(json.dumps(decode_bytes(path.read_bytes())[0]))
    record = next(r for r in header["tensors"] if r["name"] == "encoder.layer.0.intermediate.dense.weight")
    assert record["codebook"]["rows"] == 64 and record["outliers"]["count"] == round(0.01 * (1 - prune) * 64 * 32)
    assert encode_model(model)[0] == encode_model(fresh)[0]  # rewriting the decoded model gives the same bytes
    assert encode_model(model, coding="1.1")[0] == path.read_bytes()


def test_files_without_new_features_stay_version_1_0_and_old_files_read():
    model = tiny_bert()
    Q.quantize(model, 4)
    assert struct.unpack_from("<HH", encode_model(model, coding="1.1")[0], 8) == (1, 0)
    data = OLD_FILE.read_bytes()  # a committed file written by the 1.0 writer
    assert struct.unpack_from("<HH", data, 8) == (1, 0)
    header, state = decode_bytes(data)
    assert "fc1.weight_codebook" in state and state["fc1.weight_codebook"].dim() == 1
    loaded = deepzip.load(OLD_FILE)
    assert loaded(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


DATA = encode_model(compressed_bert(0.6), coding="1.1")[0]  # a 1.1 file (gap positions)


def repack(mutate, version=None) -> bytes:
    header, sections = container.unpack(DATA)
    header = json.loads(json.dumps(header))
    mutate(header, sections)
    header.pop("sections")
    data = container.pack(header, sections)
    if version is not None:  # re-frame with another version in the preamble
        import zlib
        text = json.dumps({**header, "sections": [[len(s), zlib.crc32(s)] for s in sections]}).encode()
        data = container.frame(zlib.compress(text), sections, version)
    return data


def record(header, name="encoder.layer.0.intermediate.dense.weight"):
    return next(r for r in header["tensors"] if r["name"] == name)


def _set(path, value, name="encoder.layer.0.intermediate.dense.weight"):
    def mutate(header, sections):
        target = record(header, name)
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(header, sections):
        target = record(header)
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set(["codebook", "rows"], 63), "63 codebook rows for a tensor of 64 rows"),
    (_set(["codebook", "rows"], 0), r"codebook rows must be an integer in 1\.\.2147483647"),
    (_set(["codebook", "rows"], -5), "codebook rows must be an integer"),
    (_set(["codebook", "rows"], "64"), "codebook rows must be an integer"),
    (_set(["rows"], 64, name="pooler.dense.bias"), "unknown key"),
    (_set(["codebook", "size"], 9), r"codebook section has .* bytes for 64 x 9"),
    (_set(["outliers", "count"], 10 ** 12), "outliers count must be an integer in 0..2048"),
    (_set(["outliers", "count"], 3), "outliers section has .* bytes for 3 f32 values"),
    (_set(["outliers", "dtype"], "f64"), "outliers dtype must be one of f32, f16"),
    (_set(["outliers", "section"], 10 ** 6), "bad section number"),
    (_set(["outliers", "extra"], 1), r"outliers has unknown key\(s\) 'extra'"),
    (_set(["outliers"], None), "outliers must be an object"),
    (_set(["indices", "alphabet"], 9), "alphabet must be 10"),
    (_delete(["outliers"]), "alphabet must be 9"),
    (_delete(["codebook", "rows"]), r"codebook section has .* bytes for 1 x 8"),
])
def test_hostile_new_fields_behind_valid_checksums(mutate, message):
    with pytest.raises(FormatError, match=message):
        decode_bytes(repack(mutate))


def test_outlier_count_must_match_the_decoded_symbols():
    def mutate(header, sections):
        spec = record(header)["outliers"]
        spec["count"] -= 1
        sections[spec["section"]] = sections[spec["section"]][:-4]
    with pytest.raises(FormatError, match="outlier symbols for .* declared outliers"):
        decode_bytes(repack(mutate))


def test_a_1_0_file_may_not_use_1_1_keys():
    with pytest.raises(FormatError, match=r"codebook has unknown key\(s\) 'rows'|unknown key\(s\) 'outliers'"):
        decode_bytes(repack(lambda h, s: None, version=(1, 0)))
    with pytest.raises(FormatError, match="version 1.3 is not supported; this deepzip reads 1.0 to 1.2"):
        decode_bytes(repack(lambda h, s: None, version=(1, 3)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(DATA) - 1), st.integers(1, 255))
def test_bit_flips(position, flip):
    corrupted = bytearray(DATA)
    corrupted[position] ^= flip
    with pytest.raises(FormatError):
        decode_bytes(bytes(corrupted))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_garbage_sections_behind_valid_checksums(draw):
    """Codebook rows, outlier values and index streams rewritten with recomputed CRCs: a FormatError or
    tensors of the declared shapes, never a crash."""
    header, sections = container.unpack(DATA)
    header = json.loads(json.dumps(header))
    header.pop("sections")
    sections = [bytearray(s) for s in sections]
    target = draw.draw(st.integers(0, len(sections) - 1))
    if sections[target]:
        for _ in range(draw.draw(st.integers(1, 6))):
            sections[target][draw.draw(st.integers(0, len(sections[target]) - 1))] = draw.draw(st.integers(0, 255))
        sections[target] = sections[target][: draw.draw(st.integers(0, len(sections[target])))]
    try:
        _, state = decode_bytes(container.pack(header, [bytes(s) for s in sections]))
    except FormatError:
        return
    for r in header["tensors"]:
        if r["encoding"] == "shared":
            assert list(state[r["name"] + "_index"].shape) == r["shape"]
            if "outliers" in r:
                assert int(state[r["name"] + "_outlier_mask"].sum()) == len(state[r["name"] + "_outliers"])
