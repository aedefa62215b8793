"""rANS entropy coding through the maintained `constriction` library (close to the entropy bound).

The symbol model is stored as a table of counts over the used symbols; encoder and decoder both build
``Categorical(counts / counts.sum(), perfect=False)`` from it, which constriction quantizes
deterministically.
"""

from __future__ import annotations

import constriction
import numpy as np

from ..errors import FormatError
from .bits import read_table, write_table

SLACK_BITS = 96  # the coder's state words and rounding of the bound
CHUNK = 1 << 20  # symbols decoded per call into constriction


def _model(counts: np.ndarray):
    probabilities = counts.astype(np.float64) / float(counts.sum())
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = np.bincount(symbols, minlength=alphabet)
    used = np.flatnonzero(counts)
    out = bytearray()
    if len(used) == 0:
        write_table(np.zeros(0, np.int64), np.zeros(0, np.int64), out, value_as_byte=False)
        return bytes(out)
    write_table(used, counts[used], out, value_as_byte=False)
    rank = np.zeros(alphabet, dtype=np.int32)
    rank[used] = np.arange(len(used), dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder()
    if len(used) > 1:  # a single symbol carries no information: no words at all
        coder.encode_reverse(rank[symbols], _model(counts[used]))
    out += coder.get_compressed().astype("<u4").tobytes()
    return bytes(out)


def decode(payload: bytes, count: int, alphabet: int, what: str) -> np.ndarray:
    used, counts, pos = read_table(payload, alphabet, value_as_byte=False, what=what)
    if len(used) == 0:
        if count or pos != len(payload):
            raise FormatError(f"{what}: empty rANS table for a stream of {count} symbols")
        return np.zeros(0, dtype=np.int64)
    if (counts < 1).any() or int(counts.sum()) != count:
        raise FormatError(f"{what}: rANS table counts sum to {int(counts.sum())}, stream declares {count}")
    words = payload[pos:]
    if len(words) % 4:
        raise FormatError(f"{what}: rANS payload is not a whole number of 32-bit words")
    if len(used) == 1:
        if words:
            raise FormatError(f"{what}: single-symbol rANS stream must have no words")
        return np.full(count, used[0], dtype=np.int64)
    check_payload_holds(counts, len(words), what)
    return used[_decode_ranks(np.frombuffer(words, dtype="<u4").astype(np.uint32), counts, what)]


def information_bits(counts: np.ndarray) -> float:
    """The least number of bits any code needs for a sequence with these symbol counts."""
    counts = counts.astype(np.float64)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def check_payload_holds(counts: np.ndarray, n_words: int, what: str) -> None:
    """The declared symbols must carry no more information than the words can hold (plus the coder's
    64-bit state): bounds the count by the payload before anything of that size is allocated."""
    need = information_bits(counts)
    if need > 32 * n_words + SLACK_BITS:
        raise FormatError(f"{what}: {int(counts.sum())} symbols with these counts need {need:.0f} bits; "
                          f"the stream holds {32 * n_words}")


def _decode_ranks(words: np.ndarray, counts: np.ndarray, what: str) -> np.ndarray:
    """Decode in chunks, so the coder never allocates more than a chunk of output itself."""
    count = int(counts.sum())
    ranks = np.empty(count, dtype=np.int64)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        model = _model(counts)
        for start in range(0, count, CHUNK):
            stop = min(count, start + CHUNK)
            ranks[start:stop] = coder.decode(model, stop - start)
    except Exception as exc:  # constriction reports malformed input with its own exception types
        raise FormatError(f"{what}: rANS decoding failed ({exc})") from exc
    return ranks
