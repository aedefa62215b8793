"""Quantization methods as frozen, validated configs with the paper's defaults (registered in `METHODS`).

    deepzip.quantize(model, KMeans(bits={"conv": 8, "fc": 5}))
    deepzip.quantize(model, 4, "uniform")                 # the same configs, built by name

``bits`` is an integer for every layer, a dict keyed by parameter name, module name or layer kind
(``fc``, ``conv``, ``embedding``, ``other``), or None for the paper's setting (8-bit conv, 5-bit fc).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from ..registry import METHODS, MethodConfig
from ..validate import choice, integer
from .kmeans import INITS, check_bits

FAMILY = "quantize"
PAPER_BITS = {"conv": 8, "fc": 5, "embedding": 8, "other": 8}  # Han et al. 2016: 8-bit conv, 5-bit fc


def _bits(value: Any) -> int | dict[str, int] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        out = {}
        for key, bits in value.items():
            if not isinstance(key, str):
                raise TypeError(f"bits keys must be layer names or kinds, got {key!r}")
            out[key] = check_bits_value(bits, f"bits[{key!r}]")
        return out
    return check_bits_value(value, "bits")


def check_bits_value(value: Any, field: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return check_bits(value)
    except ValueError:
        raise ValueError(f"{field} must be an integer in 1..16, got {value!r}") from None


@dataclass(frozen=True)
class QuantizeMethod(MethodConfig):
    """Base of every quantization config: bits per layer, which parameters are targets."""

    family: ClassVar[str] = FAMILY

    exclude: Sequence[str] = ()
    bits: int | Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.exclude is None:
            raise TypeError("exclude must be a list of layer or parameter names, got None")
        self._set("bits", _bits(self.bits))
        super().__post_init__()


@METHODS.register(FAMILY, "kmeans")
@dataclass(frozen=True)
class KMeans(QuantizeMethod):
    """Weight sharing (Han et al. 2016): each layer's surviving weights clustered into 2**bits shared values
    by 1-D k-means; ``init`` linear (the paper's best), density, random (Forgy, ``seed``), or optimal
    (exact, by dynamic programming)."""

    init: str = "linear"
    seed: int = 0

    def validate(self) -> None:
        self._check("init", choice, INITS)
        self._check("seed", integer, 0)


@METHODS.register(FAMILY, "uniform")
@dataclass(frozen=True)
class Uniform(QuantizeMethod):
    """The baseline: 2**bits evenly spaced levels over each layer's [min, max], no clustering."""


def method_names() -> list[str]:
    return METHODS.names(FAMILY)
