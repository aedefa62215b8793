"""The `adaptive` stream coder (format 1.2): order-0 adaptive counts, no stored table.

Blocks of symbols (64, then an eighth of what came before) are coded with constriction's range coder
under ``Categorical(q)``, ``q_a = (2 c_a + 1) / (2 s + A)`` from the counts of the ``s`` symbols before
the block (the Krichevsky-Trofimov estimator): what a stored table costs (about 5.6% of LeNet-300-100's
fc1 gap stream) becomes about (A - 1) / 2 x log2(n) bits, and a reader decodes a block as one vector.
"""

from __future__ import annotations

import constriction
import numpy as np

from ..errors import FormatError

MAX_ALPHABET = 65_538  # a codebook of 65,536 values, the filler and the outlier symbol
MIN_BLOCK = 64


def block_bounds(count: int) -> list[int]:
    bounds = [0]
    while bounds[-1] < count:
        bounds.append(min(count, bounds[-1] + max(MIN_BLOCK, bounds[-1] // 8)))
    return bounds


def _probabilities(counts: np.ndarray, seen: int, alphabet: int) -> np.ndarray:
    return (2 * counts + 1) / float(2 * seen + alphabet)


def _model(counts: np.ndarray, seen: int, alphabet: int):
    return constriction.stream.model.Categorical(_probabilities(counts, seen, alphabet), perfect=False)


def code_length_bits(symbols: np.ndarray, alphabet: int) -> float:
    """The model's ideal code length, sum(-log2 q), in bits."""
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = np.zeros(alphabet, dtype=np.int64)
    bits = 0.0
    bounds = block_bounds(len(symbols))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        block = symbols[start:stop]
        bits += float(-np.log2(_probabilities(counts, start, alphabet)[block]).sum())
        counts += np.bincount(block, minlength=alphabet)
    return bits


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise ValueError(f"the adaptive coder takes alphabets of 1..{MAX_ALPHABET} symbols, got {alphabet}")
    symbols = np.asarray(symbols, dtype=np.int64)
    coder = constriction.stream.queue.RangeEncoder()
    counts = np.zeros(alphabet, dtype=np.int64)
    bounds = block_bounds(len(symbols))
    for start, stop in zip(bounds[:-1], bounds[1:]):
        block = symbols[start:stop]
        if alphabet > 1:  # a one-symbol alphabet carries no information
            coder.encode(block.astype(np.int32), _model(counts, start, alphabet))
        counts += np.bincount(block, minlength=alphabet)
    return coder.get_compressed().astype("<u4").tobytes()


def decode(payload: bytes, count: int, alphabet: int, what: str) -> np.ndarray:
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise FormatError(f"{what}: the adaptive coder takes alphabets of 1..{MAX_ALPHABET} symbols, got {alphabet}")
    if len(payload) % 4:
        raise FormatError(f"{what}: adaptive payload is not a whole number of 32-bit words")
    if alphabet == 1:
        if payload:
            raise FormatError(f"{what}: a one-symbol adaptive stream must have no words")
        return np.zeros(count, dtype=np.int64)
    symbols = np.empty(count, dtype=np.int64)
    counts = np.zeros(alphabet, dtype=np.int64)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        bounds = block_bounds(count)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            block = decoder.decode(_model(counts, start, alphabet), stop - start)
            symbols[start:stop] = block
            counts += np.bincount(block, minlength=alphabet)
    except Exception as exc:  # constriction reports invalid data with its own (and assertion) errors
        raise FormatError(f"{what}: adaptive decoding failed ({exc})") from None
    # a range decoder cannot always tell that words are left over: the payload must be the canonical one
    if encode(symbols, alphabet) != payload:
        raise FormatError(f"{what}: the adaptive payload is not the encoding of its symbols (words left over)")
    return symbols
