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
from ..validate import choice, integer, number
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


IMPORTANCES = ("none", "calibration", "fisher")
GRANULARITIES = ("layer", "row")


@METHODS.register(FAMILY, "weighted")
@dataclass(frozen=True)
class WeightedKMeans(QuantizeMethod):
    """Sensitivity-weighted k-means (SqueezeLLM, Kim et al. 2023) for pretrained models without labels.

    Each weight's squared error counts with its importance: ``fisher`` (the paper's choice: squared
    gradients summed over calibration data, `fisher_diagonal`), ``calibration`` (the inputs' ||X_j||^2 of
    a Linear, broadcast over its rows: ``deepzip.calibrate.input_statistics``), or ``none`` (plain).
    The importances are data, passed to ``quantize(model, config, sensitivity=..., gram=...)``.
    ``granularity``: one codebook per layer or per output row (the paper's); Embedding matrices use
    ``embedding_granularity`` (per layer by default: a codebook per vocabulary row costs more than
    the row's indices save). ``outliers``: the fraction of each layer's weights with the largest
    |w| x sqrt(importance) kept exactly (dense-and-sparse; the paper's 0.45% variant is 0.0045) and
    left out of the clustering. ``error_feedback``: assign the columns of a Linear in order, moving each
    column's rounding error onto the columns not yet assigned through the inverse of the input Gram
    matrix (GPTQ's update, Frantar et al. 2023; ``damp`` x mean diagonal added first); needs
    ``gram=`` for every Linear. Bits default to the paper's 4."""

    bits: int | Mapping[str, int] | None = 4
    importance: str = "fisher"
    granularity: str = "row"
    embedding_granularity: str = "layer"
    outliers: float = 0.0
    error_feedback: bool = False
    damp: float = 0.01
    init: str = "linear"
    seed: int = 0

    def validate(self) -> None:
        self._check("importance", choice, IMPORTANCES)
        self._check("granularity", choice, GRANULARITIES)
        self._check("embedding_granularity", choice, GRANULARITIES)
        self._check("outliers", number, 0.0, 0.5)
        if not isinstance(self.error_feedback, bool):
            raise TypeError(f"error_feedback must be True or False, got {self.error_feedback!r}")
        self._check("damp", number, 0.0, 1.0, False)
        if self.damp <= 0:
            raise ValueError(f"damp must be in (0, 1], got {self.damp}")
        self._check("init", choice, INITS)
        self._check("seed", integer, 0)


@METHODS.register(FAMILY, "uniform")
@dataclass(frozen=True)
class Uniform(QuantizeMethod):
    """The baseline: 2**bits evenly spaced levels over each layer's [min, max], no clustering."""


def method_names() -> list[str]:
    return METHODS.names(FAMILY)
