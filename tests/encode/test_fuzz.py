"""The decoder treats every file as untrusted: only FormatError, never a crash, hang or huge allocation."""

import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import deepzip
from deepzip import FormatError, models
from deepzip.encode import ChecksumError, TruncatedFileError, UnsupportedVersionError, decode_bytes, encode_model
from deepzip.encode import container


def sample_file() -> bytes:
    model = models.build("lenet300_100", input_shape=(1, 8, 8), seed=0)
    deepzip.prune(model, sparsity=0.8)
    deepzip.quantize(model, bits=3)
    return encode_model(model, coding="1.1")[0]  # gap positions: the mutations below edit them


DATA = sample_file()


def repack(mutate) -> bytes:
    """Re-pack DATA with a mutated header and valid checksums: the checks after the CRCs must hold."""
    header, sections = container.unpack(DATA)
    header = json.loads(json.dumps(header))
    mutate(header, sections)
    header.pop("sections")
    return container.pack(header, sections)


def test_valid_file_decodes():
    header, state = decode_bytes(DATA)
    assert header["model"]["model"] == "lenet300_100" and "fc1.weight_codebook" in state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(DATA) - 1))
def test_truncated_files(cut):
    with pytest.raises(FormatError):
        decode_bytes(DATA[:cut])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(DATA) - 1), st.integers(1, 255))
def test_bit_flips(position, flip):
    corrupted = bytearray(DATA)
    corrupted[position] ^= flip
    with pytest.raises(FormatError):
        decode_bytes(bytes(corrupted))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(blob):
    with pytest.raises(FormatError):
        decode_bytes(blob)
    with pytest.raises(FormatError):
        decode_bytes(container.MAGIC + blob)


def test_specific_messages():
    with pytest.raises(FormatError, match="not a deepzip file"):
        decode_bytes(b"PK\x03\x04" + DATA[4:])
    newer = DATA[:8] + struct.pack("<HH", 2, 0) + DATA[12:]
    with pytest.raises(UnsupportedVersionError, match="version 2.0 is not supported; this deepzip reads 1.0 to 1.2"):
        decode_bytes(newer)
    with pytest.raises(TruncatedFileError):
        decode_bytes(DATA[:-1])
    flipped = bytearray(DATA)
    flipped[-20] ^= 1
    with pytest.raises(ChecksumError, match="file checksum mismatch"):
        decode_bytes(bytes(flipped))
    huge = DATA[:12] + struct.pack("<I", 1 << 30) + DATA[16:]
    with pytest.raises(FormatError, match="header length 1073741824 outside"):
        decode_bytes(huge)


def _set(path, value):
    def mutate(header, sections):
        target = header
        for key in path[:-1]:
            target = next(t for t in target if t["name"] == key) if isinstance(target, list) else target[key]
        target[path[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set(["tensors", "fc1.weight", "shape"], [-1, 3]), "shape must be a list"),
    (_set(["tensors", "fc1.weight", "shape"], [1 << 20, 1 << 20]), "exceed the limit"),
    (_set(["tensors", "fc1.bias", "name"], "fc1.weight"), "duplicate name"),
    (_set(["tensors", "fc1.weight", "encoding"], "zip"), "unknown encoding 'zip'"),
    (_set(["tensors", "fc1.weight", "indices", "count"], 10 ** 12), "declares 1000000000000 symbols"),
    (_set(["tensors", "fc1.weight", "indices", "section"], 999), "bad section number"),
    (_set(["tensors", "fc1.weight", "positions", "span_bits"], 40), "span_bits must be an integer in 1..24"),
    (_set(["tensors", "fc1.weight", "codebook", "size"], 2), "indices .* for .* positions and 2 values|codebook section"),
    (_set(["tensors", "fc1.weight", "shape"], [3, 3]), "beyond the tensor|symbols for a tensor"),
    (_set(["tensors", "fc1.bias", "dtype"], "f16"), "dense section has"),
    (_set(["tensors"], {"a": 1}), "must be a list"),
    (_set(["model"], 5), "must be an object or null"),
])
def test_consistent_checksums_but_bad_content(mutate, message):
    with pytest.raises(FormatError, match=message):
        decode_bytes(repack(mutate))


def test_sections_must_cover_the_data_exactly():
    header, sections = container.unpack(DATA)
    text = json.dumps({**header, "sections": header["sections"][:-1]}).encode()  # last section dropped
    with pytest.raises(FormatError, match="not covered by any section"):
        decode_bytes(container.frame(zlib.compress(text), sections))


@pytest.mark.parametrize("deflated, message", [
    (zlib.compress(b"[1, 2]"), "must be a JSON object"),
    (zlib.compress(b'{"tensors": NaN}'), "non-JSON constant NaN"),
    (zlib.compress(b'{"a": 1, "a": 2}'), "duplicate keys"),
    (zlib.compress(b"\xff\xfe"), "not valid UTF-8 JSON"),
    (b'{"tensors": []}', "not a valid zlib stream"),
    (zlib.compress(b"{}") + b"junk", "followed by extra bytes"),
    (zlib.compress(b"{}")[:-3], "incomplete"),
    (zlib.compress(b" " * (5 << 20)), "inflates to more than"),  # a 5 KB zip bomb of 5 MiB
])
def test_bad_headers(deflated, message):
    with pytest.raises(FormatError, match=message):
        decode_bytes(container.frame(deflated, []))


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        deepzip.load(tmp_path / "nope.dz")


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_garbage_streams_behind_valid_checksums(draw):
    """An attacker recomputes the CRCs: the stream decoders themselves must reject garbage."""
    header, sections = container.unpack(DATA)
    header = json.loads(json.dumps(header))
    header.pop("sections")
    sections = [bytearray(s) for s in sections]
    target = draw.draw(st.integers(0, len(sections) - 1))
    if sections[target]:
        for _ in range(draw.draw(st.integers(1, 6))):
            position = draw.draw(st.integers(0, len(sections[target]) - 1))
            sections[target][position] = draw.draw(st.integers(0, 255))
        sections[target] = sections[target][: draw.draw(st.integers(0, len(sections[target])))]
    try:
        decode_bytes(container.pack(header, [bytes(s) for s in sections]))
    except FormatError:
        pass  # rejected with a reason; decoding to *some* tensors of the right shapes is also allowed
