"""Pruning methods as frozen, validated configs with the papers' defaults (registered in `METHODS`).

    deepzip.prune(model, GlobalMagnitude(sparsity=0.9))
    deepzip.prune(model, 0.9, "erk", exclude=["conv1"])      # the same configs, built by name

Every config takes ``exclude`` (layer or parameter names never pruned) and ``extra`` (parameters that
are not the ``weight`` of a Linear/Conv/Embedding, e.g. ``in_proj_weight``). A per-layer value
(``scales``, ``quality``, ``layer_sparsity``) is a number for every layer or a dict keyed by parameter
name, module name or layer kind (``fc``, ``conv``, ``embedding``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping, Sequence

from ..registry import METHODS, MethodConfig
from ..validate import choice, integer, number, per_layer_numbers

FAMILY = "prune"


@dataclass(frozen=True)
class PruneMethod(MethodConfig):
    """Base of every pruning config: which parameters are targets."""

    family: ClassVar[str] = FAMILY
    fixes_own_sparsity: ClassVar[bool] = False  # True: no global target; schedules prune once
    learns_masks: ClassVar[bool] = False  # True: the masks come out of training (L0), not from the weights


@dataclass(frozen=True)
class _Target(PruneMethod):
    """A method that reaches a global target sparsity."""

    sparsity: float = 0.9

    def validate(self) -> None:
        self._check("sparsity", number, 0.0, 1.0)


@dataclass(frozen=True)
class _Rounded(_Target):
    round_to: int = 1  # each layer's kept count a multiple of this (8: hardware friendly)

    def validate(self) -> None:
        super().validate()
        self._check("round_to", integer, 1)


@METHODS.register(FAMILY, "global")
@dataclass(frozen=True)
class GlobalMagnitude(_Rounded):
    """One magnitude threshold across all layers: flatten, threshold once, slice back (Frankle & Carbin)."""


@METHODS.register(FAMILY, "uniform")
@dataclass(frozen=True)
class UniformMagnitude(_Rounded):
    """Every layer at the same sparsity; ``scales`` multiplies a layer's rate (0 excludes it, 0.5 halves it)."""

    scales: float | Mapping[str, float] | None = None

    def validate(self) -> None:
        super().validate()
        self._check("scales", per_layer_numbers, 0.0, math.inf)


@METHODS.register(FAMILY, "erk")
@dataclass(frozen=True)
class ERK(UniformMagnitude):
    """Erdos-Renyi-Kernel per-layer densities (Evci et al. 2020), magnitude within each layer."""


@METHODS.register(FAMILY, "sensitivity")
@dataclass(frozen=True)
class Sensitivity(_Rounded):
    """Per-layer sparsities from measured accuracy-vs-sparsity curves (`sensitivity_curves`), least loss
    for the target (Han et al. 2015, Figure 5)."""

    curves: Mapping[str, Sequence[tuple[float, float]]] | None = None
    base_accuracy: float | None = None

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.curves, Mapping) or self.base_accuracy is None:
            raise ValueError("method 'sensitivity' needs curves= and base_accuracy= (from sensitivity_curves)")
        self._set("curves", {name: [(float(s), float(a)) for s, a in curve] for name, curve in self.curves.items()})
        self._check("base_accuracy", number, -math.inf, math.inf)


@METHODS.register(FAMILY, "structured")
@dataclass(frozen=True)
class Structured(_Rounded):
    """Whole output units (neurons / filters) by L1 or L2 norm; their biases are masked too, so
    `deepzip.prune.shrink` can remove them. ``exclude=None`` (the default) keeps the output layer."""

    exclude: Sequence[str] | None = None
    norm: str = "l1"
    scales: float | Mapping[str, float] | None = None

    def validate(self) -> None:
        super().validate()
        self._check("norm", choice, ("l1", "l2"))
        self._check("scales", per_layer_numbers, 0.0, math.inf)


@METHODS.register(FAMILY, "fraction")
@dataclass(frozen=True)
class LayerFraction(PruneMethod):
    """A fixed sparsity per layer or per kind, e.g. ``{"fc": 0.92, "conv": 0.66}`` (Han et al. 2015)."""

    fixes_own_sparsity: ClassVar[bool] = True
    layer_sparsity: float | Mapping[str, float] = 0.9
    round_to: int = 1

    def validate(self) -> None:
        self._check("layer_sparsity", per_layer_numbers, 0.0, 1.0)
        self._check("round_to", integer, 1)


@METHODS.register(FAMILY, "threshold")
@dataclass(frozen=True)
class StdThreshold(PruneMethod):
    """Deep Compression's rule per layer: prune ``|w| < quality * std(w)``; quality per layer or kind."""

    fixes_own_sparsity: ClassVar[bool] = True
    quality: float | Mapping[str, float] = 1.0

    def validate(self) -> None:
        self._check("quality", per_layer_numbers, 0.0, math.inf)


@METHODS.register(FAMILY, "random")
@dataclass(frozen=True)
class RandomPruning(PruneMethod):
    """The control: random positions. Per-layer sparsities from ``layer_sparsity`` (number or dict), or
    from a global ``sparsity`` allocated like ``allocation`` (uniform, erk or global magnitude)."""

    sparsity: float | None = None
    layer_sparsity: float | Mapping[str, float] | None = None
    allocation: str = "uniform"
    scales: float | Mapping[str, float] | None = None
    seed: int = 0

    @property
    def fixes_own_sparsity(self) -> bool:  # type: ignore[override]
        return self.sparsity is None

    def validate(self) -> None:
        if (self.sparsity is None) == (self.layer_sparsity is None):
            raise ValueError("random pruning needs exactly one of sparsity (a global target) or layer_sparsity")
        if self.sparsity is not None:
            self._check("sparsity", number, 0.0, 1.0)
        self._check("layer_sparsity", per_layer_numbers, 0.0, 1.0)
        self._check("allocation", choice, ("uniform", "erk", "global"))
        self._check("scales", per_layer_numbers, 0.0, math.inf)
        self._check("seed", integer, 0)


@METHODS.register(FAMILY, "nm")
@dataclass(frozen=True)
class NM(PruneMethod):
    """N:M along the input dimension: at most ``n`` of every ``m`` consecutive weights kept (2:4 is what
    sparse tensor cores run)."""

    fixes_own_sparsity: ClassVar[bool] = True
    n: int = 2
    m: int = 4

    def validate(self) -> None:
        self._check("n", integer, 1)
        self._check("m", integer, 1)
        if self.n > self.m:
            raise ValueError(f"N:M needs N <= M, got {self.n}:{self.m}")


@dataclass(frozen=True)
class Calibrated(PruneMethod):
    """Base of the methods that look at the layer inputs on calibration data (Wanda, SparseGPT, OWL):
    ``prune(model, config, calibration=batches)``. They prune the ``nn.Linear`` weights inside the model's
    repeated blocks (``blocks``: the ModuleList's name, e.g. ``encoder.layer``; found generically when
    None; a model without one is one block), one block at a time on the outputs of the pruned blocks
    before it. ``n`` > 0 asks for N:M (at most ``n`` of every ``m`` inputs kept) instead of
    ``sparsity``; ``compare``: whether the sparsity holds for each output ``row`` or for the ``layer``."""

    needs_calibration: ClassVar[bool] = True
    needs_gram: ClassVar[bool] = False  # the inputs' Gram matrix, not only their column norms
    default_compare: ClassVar[str] = "row"

    sparsity: float = 0.5
    n: int = 0
    m: int = 0
    compare: str | None = None  # None: the paper's choice (row for Wanda, layer for SparseGPT)
    blocks: str | None = None

    @property
    def fixes_own_sparsity(self) -> bool:  # type: ignore[override]
        return self.n > 0

    @property
    def comparison(self) -> str:
        return self.compare or self.default_compare

    def validate(self) -> None:
        if self.extra:
            raise ValueError(f"{self.method} prunes the Linear layers inside the model's blocks; extra parameters "
                             f"({', '.join(self.extra)}) are not supported")
        self._check("sparsity", number, 0.0, 1.0)
        self._check("n", integer, 0)
        self._check("m", integer, 0)
        if self.n or self.m:
            if not 0 < self.n <= self.m:
                raise ValueError(f"N:M needs 0 < N <= M, got {self.n}:{self.m} (n=0, m=0: unstructured)")
            if self.sparsity not in (0.5, 1 - self.n / self.m):
                raise ValueError(f"N:M fixes the sparsity at 1 - N/M = {1 - self.n / self.m:g}; leave sparsity out")
        if self.compare is not None:
            self._check("compare", choice, ("row", "layer"))
        if self.blocks is not None and (not isinstance(self.blocks, str) or not self.blocks):
            raise TypeError(f"blocks must be the name of the model's list of blocks (e.g. 'encoder.layer'), "
                            f"got {self.blocks!r}")


@METHODS.register(FAMILY, "wanda")
@dataclass(frozen=True)
class Wanda(Calibrated):
    """Wanda (Sun et al. 2023): prune the lowest ``|W_ij| * ||X_j||_2`` in each output row (or N:M
    group); the surviving weights are not changed."""


@METHODS.register(FAMILY, "sparsegpt")
@dataclass(frozen=True)
class SparseGPT(Calibrated):
    """SparseGPT (Frantar & Alistarh 2023): an OBS column sweep with the damped inverse Hessian of the
    layer inputs (``percdamp`` of its mean diagonal added), masks chosen per ``blocksize`` columns; the
    surviving weights are updated to make up for the pruned ones."""

    needs_gram: ClassVar[bool] = True
    default_compare: ClassVar[str] = "layer"

    blocksize: int = 128
    percdamp: float = 0.01

    def validate(self) -> None:
        super().validate()
        self._check("blocksize", integer, 1)
        self._check("percdamp", number, 0.0, math.inf)
        if self.n and self.blocksize % self.m:
            raise ValueError(f"SparseGPT with N:M needs blocksize a multiple of M; got {self.blocksize} and M={self.m}")


@METHODS.register(FAMILY, "owl")
@dataclass(frozen=True)
class OWL(Calibrated):
    """OWL (Yin et al. 2023), outlier-weighted layerwise sparsity: each block's share of Wanda scores
    above ``outlier_threshold`` (the paper's M) times their mean, measured on the dense model, sets its
    sparsity within ``limit`` (the paper's lambda) of the target, the mean kept at the target; the
    blocks are then pruned by ``inner`` (wanda or sparsegpt). ``blocksize`` and ``percdamp`` are
    SparseGPT's. Unstructured only."""

    inner: str = "wanda"
    outlier_threshold: float = 5.0
    limit: float = 0.08
    blocksize: int = 128
    percdamp: float = 0.01

    @property
    def needs_gram(self) -> bool:  # type: ignore[override]
        return self.inner == "sparsegpt"

    @property
    def default_compare(self) -> str:  # type: ignore[override]
        return "layer" if self.inner == "sparsegpt" else "row"

    def validate(self) -> None:
        super().validate()
        self._check("inner", choice, ("wanda", "sparsegpt"))
        if self.n:
            raise ValueError("OWL allocates unstructured sparsity per block; for N:M use wanda or sparsegpt")
        self._check("outlier_threshold", number, 0.0, math.inf)
        self._check("limit", number, 0.0, 0.5)
        if self.sparsity - self.limit < 0 or self.sparsity + self.limit >= 1:
            raise ValueError(f"OWL's block sparsities span sparsity +- limit, which must lie in [0, 1); got "
                             f"{self.sparsity} +- {self.limit}")
        self._check("blocksize", integer, 1)
        self._check("percdamp", number, 0.0, math.inf)
        if self.inner == "wanda" and (self.blocksize, self.percdamp) != (128, 0.01):
            raise ValueError("blocksize and percdamp are SparseGPT's; they apply to OWL with inner='sparsegpt'")

    def inner_config(self, sparsity: float) -> Calibrated:
        """The inner method's config at one block's sparsity."""
        common = dict(sparsity=sparsity, compare=self.compare, blocks=self.blocks, exclude=self.exclude)
        if self.inner == "sparsegpt":
            return SparseGPT(blocksize=self.blocksize, percdamp=self.percdamp, **common)
        return Wanda(**common)


@METHODS.register(FAMILY, "l0")
@dataclass(frozen=True)
class L0(PruneMethod):
    """Learned sparsity: L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018).

    The masks are learned while training (`deepzip.train.prune_and_retrain` with ``PruneConfig(method="l0")``,
    or ``deepzip prune --method l0``): every weight gets a gate with a learned log_alpha, the loss gets
    ``penalty`` x the expected fraction of open gates (above the target, when one is given), and at the
    end the gates become masks: the top ``1 - sparsity`` by log_alpha over all layers together (the gates
    choose each layer's share), exactly ``layer_sparsity`` per layer, or (both None) wherever the test-time
    gate is open. ``lr``: Adam's learning rate for the gates (the weights keep the retraining optimizer).
    """

    learns_masks: ClassVar[bool] = True
    sparsity: float | None = 0.9
    layer_sparsity: float | Mapping[str, float] | None = None
    penalty: float = 5.0          # lambda, on the expected fraction of open gates (expected L0 / gated weights)
    droprate_init: float = 0.5    # the gates' initial dropout rate (the paper's default)
    temperature: float = 2.0 / 3.0  # beta of the hard-concrete distribution
    lr: float = 0.05              # Adam's learning rate for log_alpha
    seed: int = 0                 # the gates' initial noise and their sampling

    @property
    def fixes_own_sparsity(self) -> bool:  # type: ignore[override]
        return self.sparsity is None

    def validate(self) -> None:
        if self.sparsity is not None and self.layer_sparsity is not None:
            raise ValueError("l0 takes at most one of sparsity (a global target) or layer_sparsity (per layer)")
        if self.sparsity is not None:
            self._check("sparsity", number, 0.0, 1.0)
        self._check("layer_sparsity", per_layer_numbers, 0.0, 1.0)
        self._check("penalty", number, 0.0, math.inf)
        self._check("droprate_init", number, 0.0, 1.0)
        if self.droprate_init == 0.0:
            raise ValueError("droprate_init must be in (0, 1), got 0.0")
        self._check("temperature", number, 0.0, math.inf)
        if self.temperature == 0.0:
            raise ValueError("temperature must be > 0, got 0.0")
        self._check("lr", number, 0.0, math.inf)
        if self.lr == 0.0:
            raise ValueError("lr must be > 0, got 0.0")
        self._check("seed", integer, 0)


def method_names(calibration: bool | None = None) -> list[str]:
    """The pruning methods' names: all, or only those that need (True) / do not need (False) calibration data."""
    names = METHODS.names(FAMILY)
    if calibration is None:
        return names
    return [n for n in names if getattr(METHODS.config_class(FAMILY, n), "needs_calibration", False) == calibration]
