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
    try:
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
        ranks = coder.decode(_model(counts), count)
    except Exception as exc:  # constriction reports malformed input with its own exception types
        raise FormatError(f"{what}: rANS decoding failed ({exc})") from exc
    return used[np.asarray(ranks, dtype=np.int64)]
