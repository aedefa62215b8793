"""Symbol streams: code with raw, Huffman, rANS and (1.2) adaptive, keep the smallest; decode by the recorded coder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from . import adaptive, ans, huffman
from .bits import pack_fixed, unpack_fixed, width

CODERS = ("raw", "huffman", "rans", "adaptive")
CODERS_1_0 = ("raw", "huffman", "rans")  # what a 1.0 / 1.1 file may use


@dataclass(frozen=True)
class CodedStream:
    coder: str
    payload: bytes
    count: int
    alphabet: int
    entropy_bits: float  # order-0 Shannon bound: count x H(symbols)
    sizes: dict  # bytes each coder produced
    bound_bits: float = 0.0  # the bound of the chosen coder's model (adaptive: its ideal code length)

    @property
    def fixed_bits(self) -> int:
        return self.count * width(self.alphabet)


def entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    counts = np.bincount(np.asarray(symbols, dtype=np.int64), minlength=alphabet)
    p = counts[counts > 0] / max(len(symbols), 1)
    return max(0.0, float(-(counts[counts > 0] * np.log2(p)).sum())) if len(symbols) else 0.0


def encode_stream(symbols: np.ndarray, alphabet: int, coders=CODERS) -> CodedStream:
    """Code ``symbols`` (ints in [0, alphabet)) with each coder; keep the smallest (ties: the first)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    payloads = {}
    for coder in coders:
        if coder == "raw":
            payloads[coder] = pack_fixed(symbols, width(alphabet))
        elif coder == "huffman":
            payloads[coder] = huffman.encode(symbols, alphabet)
        elif coder == "rans":
            payloads[coder] = ans.encode(symbols, alphabet)
        elif coder == "adaptive":
            if alphabet <= adaptive.MAX_ALPHABET:
                payloads[coder] = adaptive.encode(symbols, alphabet)
        else:
            raise ValueError(f"unknown coder {coder!r}; allowed: {', '.join(CODERS)}")
    best = min(payloads, key=lambda c: len(payloads[c]))
    order0 = entropy_bits(symbols, alphabet)
    return CodedStream(best, payloads[best], len(symbols), alphabet, order0, {c: len(p) for c, p in payloads.items()},
                       model_bound_bits(symbols, alphabet, best, order0))


def model_bound_bits(symbols: np.ndarray, alphabet: int, coder: str, order0: float | None = None) -> float:
    """The bound a stream is reported against: its adaptive model's ideal code length, or (raw, Huffman,
    rANS: a model of the stream's own counts) the order-0 bound."""
    if coder == "adaptive":
        return adaptive.code_length_bits(symbols, alphabet)
    return entropy_bits(symbols, alphabet) if order0 is None else order0


def decode_stream(payload: bytes, coder: str, count: int, alphabet: int, what: str) -> np.ndarray:
    if coder == "raw":
        symbols = unpack_fixed(payload, count, width(alphabet))
    elif coder == "huffman":
        symbols = huffman.decode(payload, count, alphabet, what)
    elif coder == "rans":
        symbols = ans.decode(payload, count, alphabet, what)
    elif coder == "adaptive":
        symbols = adaptive.decode(payload, count, alphabet, what)
    else:
        raise FormatError(f"{what}: unknown coder {coder!r}; this reader knows {', '.join(CODERS)}")
    if len(symbols) != count or (count and (symbols.min() < 0 or symbols.max() >= alphabet)):
        raise FormatError(f"{what}: decoded symbols fall outside the alphabet of {alphabet}")
    return symbols


def span_cost_bits(gaps: np.ndarray, index_symbols_counts: np.ndarray, span_bits: int) -> tuple[int, int]:
    """(gap stream bits, index stream bits) with Huffman for ``span_bits``, used to pick the span."""
    span = 1 << span_bits
    fillers = -(-gaps // span) - 1
    last = gaps - fillers * span
    gap_counts = np.bincount(last - 1, minlength=span)
    gap_counts[span - 1] += int(fillers.sum())
    index_counts = index_symbols_counts.copy()
    index_counts[-1] += int(fillers.sum())
    return huffman.coded_bits(gap_counts) + 8 * len(np.flatnonzero(gap_counts)), huffman.coded_bits(index_counts)


def max_span_bits(numel: int) -> int:
    return max(1, min(24, math.ceil(math.log2(max(numel, 2))) + 1))
