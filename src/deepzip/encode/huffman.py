"""Canonical Huffman coding (the paper's entropy coder), code lengths in the stream.

`code_lengths` builds optimal lengths from counts (limited to 24 bits by halving counts, which is
only ever needed for pathological distributions); codes are canonical, so lengths alone define them.
Decoding walks the canonical code one bit at a time per length (<= 24 steps a symbol), compiled
with numba, and stops at the declared symbol count: it cannot run away on bad input.
"""

from __future__ import annotations

import heapq

import numba
import numpy as np

from ..errors import FormatError
from .bits import read_table, write_table

MAX_LENGTH = 24


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for unused symbols; 1 if only one symbol is used)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) <= 1:
        lengths[used] = 1
        return lengths
    work = counts[used].copy()
    while True:
        heap = [(int(c), int(i), (int(i),)) for i, c in enumerate(work)]  # (count, tiebreak, leaves)
        heapq.heapify(heap)
        depth = np.zeros(len(used), dtype=np.int64)
        tiebreak = len(heap)
        while len(heap) > 1:
            c1, _, a = heapq.heappop(heap)
            c2, _, b = heapq.heappop(heap)
            depth[list(a + b)] += 1
            heapq.heappush(heap, (c1 + c2, tiebreak, a + b))
            tiebreak += 1
        if depth.max() <= MAX_LENGTH:
            lengths[used] = depth
            return lengths
        work = (work + 1) // 2


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical code of each symbol: sorted by (length, symbol), consecutive integers per length."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        previous = int(lengths[symbol])
        codes[symbol] = code
        code += 1
    return codes


def coded_bits(counts: np.ndarray) -> int:
    """Bits of the Huffman bit stream alone (no table) for these symbol counts."""
    return int((np.asarray(counts) * code_lengths(counts)).sum())


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    symbols = np.asarray(symbols, dtype=np.int64)
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    out = bytearray()
    used = np.flatnonzero(lengths)
    write_table(used, lengths[used], out, value_as_byte=True)
    if len(symbols):
        sym_len, sym_code = lengths[symbols], codes[symbols]
        total = int(sym_len.sum())
        starts = np.cumsum(sym_len) - sym_len
        owner = np.repeat(np.arange(len(symbols)), sym_len)
        shift = np.repeat(sym_len, sym_len) - 1 - (np.arange(total) - starts[owner])
        bits = (np.repeat(sym_code, sym_len) >> shift) & 1
        out += np.packbits(bits.astype(np.uint8)).tobytes()
    return bytes(out)


@numba.njit(cache=True)
def _decode(bits_bytes, count, first_code, first_index, length_count, ordered):
    out = np.empty(count, dtype=np.int64)
    total_bits = len(bits_bytes) * 8
    pos = 0
    for i in range(count):
        code = 0
        found = False
        for length in range(1, len(first_code)):
            if pos >= total_bits:
                return out, -1  # truncated
            code = (code << 1) | ((bits_bytes[pos >> 3] >> (7 - (pos & 7))) & 1)
            pos += 1
            offset = code - first_code[length]
            if length_count[length] > 0 and 0 <= offset < length_count[length]:
                out[i] = ordered[first_index[length] + offset]
                found = True
                break
        if not found:
            return out, -2  # no code matches
    return out, pos


def decode(payload: bytes, count: int, alphabet: int, what: str) -> np.ndarray:
    used, lengths, pos = read_table(payload, alphabet, value_as_byte=True, what=what)
    if len(used) == 0:
        if count or pos != len(payload):
            raise FormatError(f"{what}: empty Huffman table for a stream of {count} symbols")
        return np.zeros(0, dtype=np.int64)
    if (lengths < 1).any() or (lengths > MAX_LENGTH).any():
        raise FormatError(f"{what}: Huffman code lengths must be 1..{MAX_LENGTH}")
    if len(used) > 1 and float(np.sum(2.0 ** -lengths)) > 1.0:
        raise FormatError(f"{what}: Huffman code lengths violate the Kraft inequality")
    order = sorted(range(len(used)), key=lambda i: (lengths[i], used[i]))
    ordered = used[order]
    sorted_lengths = lengths[order]
    length_count = np.bincount(sorted_lengths, minlength=MAX_LENGTH + 1).astype(np.int64)
    first_code = np.zeros(MAX_LENGTH + 1, dtype=np.int64)
    first_index = np.zeros(MAX_LENGTH + 1, dtype=np.int64)
    code, index = 0, 0
    for length in range(1, MAX_LENGTH + 1):
        code <<= 1
        first_code[length], first_index[length] = code, index
        code += length_count[length]
        index += length_count[length]
    if count > 8 * (len(payload) - pos):
        raise FormatError(f"{what}: {count} symbols cannot fit in {len(payload) - pos} bytes of Huffman bits")
    out, status = _decode(np.frombuffer(payload, dtype=np.uint8, offset=pos), count, first_code, first_index,
                          length_count, ordered)
    if status == -1:
        raise FormatError(f"{what}: Huffman bit stream ends before {count} symbols")
    if status == -2:
        raise FormatError(f"{what}: invalid Huffman code in the bit stream")
    if -(-status // 8) != len(payload) - pos:
        raise FormatError(f"{what}: {len(payload) - pos - -(-status // 8)} trailing bytes after the Huffman stream")
    return out
