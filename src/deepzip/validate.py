"""Checks for the public boundary: each returns the value (normalised) or raises TypeError / ValueError
naming the field, what was wrong and what is allowed."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def names(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (Sequence, set, frozenset)) \
            or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{field} must be a list of layer or parameter names, got {value!r}")
    return tuple(value)


def number(value: Any, field: str, low: float, high: float, high_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise TypeError(f"{field} must be a number, got {value!r}")
    above = value >= high if high_open else value > high
    if value < low or above:
        raise ValueError(f"{field} must be in [{low}, {high}{')' if high_open else ']'}, got {value}")
    return float(value)


def per_layer_numbers(value: Any, field: str, low: float, high: float, high_open: bool = True):
    """A number, or a dict {layer, module or kind name: number}; each number checked against the range."""
    if value is None or not isinstance(value, Mapping):
        return value if value is None else number(value, field, low, high, high_open)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{field} keys must be layer names or kinds, got {key!r}")
        out[key] = number(item, f"{field}[{key!r}]", low, high, high_open)
    return out


def integer(value: Any, field: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{field} must be >= {low}, got {value}")
    return value


def choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; choose from {', '.join(allowed)}")
    return value
