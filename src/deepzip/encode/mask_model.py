"""Mask positions (format 1.2, docs/format.md "Mask positions"): a pruning mask coded as a binary image.

The mask's 2-D view is coded line by line (rows, or columns for ``order="columns"``) with constriction's
range coder. Each bit's probability multiplies two adaptive densities, its element's over the lines above
and its line's so far, relative to the density so far: pruned input columns and dense or sparse output
rows both become cheap, with no stored table. The probabilities come from integer counts through a fixed
sequence of binary64 operations (`_probability`), so writer and reader compute the same bits everywhere;
a line is cut into chunks (8, 16, 32, ... elements) whose bits share the counts at the chunk's start, so
the reader decodes a chunk as one vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np

from ..errors import FormatError

ORDERS = ("rows", "columns")
PRIORS = (2, 8, 32)  # alpha, beta values the writer tries
MAX_PRIOR = 1024
FIRST_CHUNK = 8
P_MIN = 2.0 ** -16
STEPS_BASE = 1 << 18  # mask decoding steps a file may hold, plus ...
STEPS_PER_BYTE = 64  # ... this many per byte of the file
_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
_LINE_BLOCK = 1 << 20  # elements the writer models at once (bounds its temporaries)


@dataclass(frozen=True)
class MaskCode:
    """A coded mask: the header fields, the section payload and the model's ideal code length."""

    order: str
    alpha: int
    beta: int
    count: int
    payload: bytes
    bound_bits: float

    def spec(self, section: int) -> dict:
        return {"order": self.order, "count": self.count, "alpha": self.alpha, "beta": self.beta, "section": section}


def view_shape(shape) -> tuple[int, int]:
    """(R, C): the first size against the rest for tensors of two or more dimensions, else one row."""
    numel = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 else 1
    return rows, (numel // rows if rows else 0)


def lines_shape(shape, order: str) -> tuple[int, int]:
    """(lines, line length) of the view in ``order``."""
    rows, cols = view_shape(shape)
    return (rows, cols) if order == "rows" else (cols, rows)


def chunk_bounds(length: int) -> list[int]:
    bounds = [0]
    while bounds[-1] < length:
        bounds.append(min(length, max(FIRST_CHUNK, 2 * bounds[-1])))
    return bounds


def steps(shape, order: str) -> int:
    """Chunks the reader decodes one at a time (what bounds its time)."""
    lines, length = lines_shape(shape, order)
    if lines * length == 0:
        return 0
    return lines * (len(chunk_bounds(length)) - 1)


def _probability(u, t, S, r, e_m, N, alpha, beta):
    """P(bit = 1), in the spec's order of binary64 operations (arrays or scalars, broadcast alike)."""
    g = (S + 0.5) / (t * N + 1.0)
    pc = (u + alpha * g) / (t + alpha)
    pr = (r + beta * g) / (e_m + beta)
    return np.minimum(np.maximum((pc * pr) / g, P_MIN), 1.0 - P_MIN)


def _lines(flat_mask: np.ndarray, shape, order: str) -> np.ndarray:
    rows, cols = view_shape(shape)
    view = np.asarray(flat_mask, dtype=bool).reshape(rows, cols)
    return view if order == "rows" else view.T


def probabilities(lines: np.ndarray, alpha: int, beta: int):
    """Yield (bits, P(bit = 1)) of consecutive blocks of lines, vectorised over each block."""
    n_lines, N = lines.shape
    bounds = np.asarray(chunk_bounds(N), dtype=np.int64)
    start_of = np.repeat(bounds[:-1], np.diff(bounds))  # e_m of each element's chunk
    above = np.zeros(N, dtype=np.int64)  # ones at each element in the lines before the block
    before = 0  # ones in the lines before the block
    step = max(1, _LINE_BLOCK // max(N, 1))
    for first in range(0, n_lines, step):
        block = lines[first:first + step].astype(np.int64)
        u = np.cumsum(block, axis=0) - block + above
        per_line = block.sum(axis=1)
        S = (np.cumsum(per_line) - per_line + before)[:, None]
        t = np.arange(first, first + len(block), dtype=np.int64)[:, None]
        prefix = np.zeros((len(block), N + 1), dtype=np.int64)
        np.cumsum(block, axis=1, out=prefix[:, 1:])
        r = prefix[:, start_of]
        yield block, _probability(u, t, S, r, start_of[None, :], N, alpha, beta)
        above += block.sum(axis=0)
        before += int(per_line.sum())


def code_length_bits(flat_mask: np.ndarray, shape, order: str, alpha: int, beta: int) -> float:
    """The model's ideal code length of the mask, sum(-log2 P(bit)), in bits."""
    bits = 0.0
    for block, p in probabilities(_lines(flat_mask, shape, order), alpha, beta):
        bits += float(-np.log2(np.where(block == 1, p, 1.0 - p)).sum())
    return bits


def encode(flat_mask: np.ndarray, shape, order: str, alpha: int, beta: int) -> MaskCode:
    lines = _lines(flat_mask, shape, order)
    coder = constriction.stream.queue.RangeEncoder()
    bits = 0.0
    for block, p in probabilities(lines, alpha, beta):
        coder.encode(block.reshape(-1).astype(np.int32), _BERNOULLI, p.reshape(-1))
        bits += float(-np.log2(np.where(block == 1, p, 1.0 - p)).sum())
    payload = coder.get_compressed().astype("<u4").tobytes()
    return MaskCode(order, alpha, beta, int(np.count_nonzero(lines)), payload, bits)


def best_encoding(flat_mask: np.ndarray, shape, max_steps: int | None = None) -> MaskCode | None:
    """The order and priors (of `ORDERS` x `PRIORS`^2) with the shortest ideal code, coded; None when no
    order fits in ``max_steps``."""
    best = None
    for order in ORDERS:
        if max_steps is not None and steps(shape, order) > max_steps:
            continue
        for alpha in PRIORS:
            for beta in PRIORS:
                bits = code_length_bits(flat_mask, shape, order, alpha, beta)
                if best is None or bits < best[0]:
                    best = (bits, order, alpha, beta)
    return None if best is None else encode(flat_mask, shape, *best[1:])


def decode(payload: bytes, shape, order: str, alpha: int, beta: int, count: int, what: str) -> np.ndarray:
    """The flat bool mask (row-major over the tensor); every problem is a FormatError."""
    if len(payload) % 4:
        raise FormatError(f"{what}: mask payload is not a whole number of 32-bit words")
    n_lines, N = lines_shape(shape, order)
    lines = np.zeros((n_lines, N), dtype=bool)
    if n_lines * N:
        try:
            _decode_lines(payload, lines, alpha, beta, what)
        except FormatError:
            raise
        except Exception as exc:  # constriction reports invalid data with its own (and assertion) errors
            raise FormatError(f"{what}: mask decoding failed ({exc})") from None
    elif payload:
        raise FormatError(f"{what}: an empty mask must have an empty payload")
    found = int(np.count_nonzero(lines))
    if found != count:
        raise FormatError(f"{what}: the mask decodes to {found} kept positions, the header declares {count}")
    rows, cols = view_shape(shape)
    flat = (lines if order == "rows" else lines.T).reshape(-1) if rows * cols else np.zeros(0, dtype=bool)
    # a range decoder cannot always tell that words are left over: the payload must be the canonical one
    if n_lines * N and encode(flat, shape, order, alpha, beta).payload != payload:
        raise FormatError(f"{what}: the mask payload is not the encoding of its mask (words left over)")
    return flat


def _decode_lines(payload: bytes, lines: np.ndarray, alpha: int, beta: int, what: str) -> None:
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    n_lines, N = lines.shape
    bounds = chunk_bounds(N)
    above = np.zeros(N, dtype=np.int64)
    before = 0
    for t in range(n_lines):
        r = 0
        for start, stop in zip(bounds[:-1], bounds[1:]):
            p = _probability(above[start:stop], np.int64(t), np.int64(before), np.int64(r), np.int64(start),
                             np.int64(N), alpha, beta)
            bits = decoder.decode(_BERNOULLI, p)
            lines[t, start:stop] = bits
            r += int(np.count_nonzero(bits))
        above += lines[t]
        before += r
