"""Relative indices with filler zeros (Han et al. 2016, Figure 2 / the seed's "diff" storage).

Kept positions (flat, increasing) are stored as gaps from the previous one, starting at -1. A gap
``d`` in ``1..2**span_bits`` is the symbol ``d - 1``; a longer gap is bridged by filler entries that
advance by exactly ``2**span_bits`` and hold a zero value.
"""

from __future__ import annotations

import numpy as np


def relative_indices(positions: np.ndarray, span_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gap symbols, filler flags), one per entry, for increasing flat ``positions``."""
    positions = np.asarray(positions, dtype=np.int64)
    span = 1 << span_bits
    gaps = np.diff(positions, prepend=-1)
    if len(gaps) and gaps.min() < 1:
        raise ValueError("positions must be strictly increasing and >= 0")
    fillers = -(-gaps // span) - 1
    per_position = fillers + 1
    symbols = np.full(int(per_position.sum()), span - 1, dtype=np.int64)
    last = np.cumsum(per_position) - 1  # the real entry closes each group
    symbols[last] = gaps - fillers * span - 1
    is_filler = np.ones(len(symbols), dtype=bool)
    is_filler[last] = False
    return symbols, is_filler


def positions_from_gaps(symbols: np.ndarray) -> np.ndarray:
    """Flat position of every entry (fillers included) from its gap symbols."""
    positions = np.add(symbols, 1, dtype=np.int64)  # one array, updated in place: no temporaries
    np.cumsum(positions, out=positions)
    positions -= 1
    return positions
