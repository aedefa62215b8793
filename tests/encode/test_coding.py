import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepzip.encode import canonical_codes, code_lengths, decode_stream, encode_stream, positions_from_gaps, relative_indices
from deepzip.encode.bits import pack_fixed, unpack_fixed
from deepzip.errors import FormatError


def test_seed_example_filler_zero():
    # Kept weights at 1, 4, 15 with a 3-bit span: the gap of 11 needs one filler at 12 (span 8).
    symbols, filler = relative_indices(np.array([1, 4, 15]), 3)
    assert (symbols + 1).tolist() == [2, 3, 8, 3] and filler.tolist() == [False, False, True, False]
    assert positions_from_gaps(symbols).tolist() == [1, 4, 12, 15]


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=200), st.integers(1, 12))
def test_positions_round_trip(positions, span_bits):
    positions = np.array(sorted(positions), dtype=np.int64)
    symbols, filler = relative_indices(positions, span_bits)
    assert symbols.max(initial=0) < 1 << span_bits
    assert positions_from_gaps(symbols)[~filler].tolist() == positions.tolist()


def test_huffman_lengths_and_canonical_codes():
    lengths = code_lengths(np.array([5, 2, 1, 1, 0]))
    assert lengths.tolist() == [1, 2, 3, 3, 0]
    assert canonical_codes(lengths).tolist()[:4] == [0b0, 0b10, 0b110, 0b111]
    assert code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]  # one symbol still costs one bit


def test_huffman_length_limit_on_fibonacci_counts():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = code_lengths(np.array(fib))
    assert lengths.max() <= 24 and np.sum(2.0 ** -lengths) <= 1.0
    symbols = np.repeat(np.arange(40), 1)
    stream = encode_stream(symbols, 40, coders=("huffman",))
    assert decode_stream(stream.payload, "huffman", 40, 40, "t").tolist() == symbols.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.lists(st.integers(0, 299), max_size=400), st.sampled_from(["raw", "huffman", "rans"]))
def test_every_coder_round_trips(alphabet, values, coder):
    symbols = np.array([v % alphabet for v in values], dtype=np.int64)
    stream = encode_stream(symbols, alphabet, coders=(coder,))
    assert decode_stream(stream.payload, coder, len(symbols), alphabet, "t").tolist() == symbols.tolist()


def test_auto_picks_smallest_and_rans_approaches_entropy():
    rng = np.random.default_rng(0)
    symbols = rng.choice(16, size=20000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    stream = encode_stream(symbols, 16)
    assert len(stream.payload) == min(stream.sizes.values())
    assert stream.sizes["rans"] < stream.sizes["huffman"] < stream.sizes["raw"]
    assert len(stream.payload) * 8 < 1.01 * stream.entropy_bits + 200


def test_fixed_width_packing():
    assert pack_fixed(np.array([1, 2, 3]), 2) == bytes([0b111001])
    assert unpack_fixed(bytes([0b111001]), 3, 2).tolist() == [1, 2, 3]
    with pytest.raises(FormatError, match="need 1"):
        unpack_fixed(b"\x00\x00", 3, 2)


def test_corrupt_huffman_payloads_are_format_errors():
    stream = encode_stream(np.array([0, 1, 2, 3] * 10), 4, coders=("huffman",))
    with pytest.raises(FormatError, match="ends before"):
        decode_stream(stream.payload[:-3], "huffman", 40, 4, "t")
    with pytest.raises(FormatError, match="trailing bytes"):
        decode_stream(stream.payload + b"\x00", "huffman", 40, 4, "t")
    with pytest.raises(FormatError, match="table lists 4 symbols, alphabet has 2"):
        decode_stream(stream.payload, "huffman", 40, 2, "t")
    with pytest.raises(FormatError, match="unknown coder"):
        decode_stream(stream.payload, "lzma", 40, 4, "t")
