"""Sparse-to-sparse training methods as frozen, validated configs with the papers' defaults (family "sparse").

    SparseTraining(model, optimizer, RigL(sparsity=0.95), total_steps=10_000)
    METHODS.build("sparse", "set", sparsity=0.9)           # the same configs, built by name

Every method but SR-STE starts from a random mask at ``sparsity`` distributed over the layers by
``distribution`` (uniform, er = Erdos-Renyi, erk = Erdos-Renyi-Kernel), optionally keeping the first
and/or last layer dense, and (except Static) changes it every ``update_interval`` steps: drop the
``drop_fraction`` (decayed by ``drop_schedule``) smallest-magnitude active weights of each layer and
regrow as many, until ``end_fraction`` of training. SR-STE trains N:M masks recomputed every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..registry import METHODS, MethodConfig
from ..validate import choice, integer, number

FAMILY = "sparse"
DISTRIBUTIONS = ("uniform", "er", "erk")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class SparseMethod(MethodConfig):
    """Base of every sparse-training config: which parameters are sparse, and the seed of the masks."""

    family: ClassVar[str] = FAMILY
    dynamic: ClassVar[bool] = True  # False: the mask never changes after initialization
    dense_gradient: ClassVar[str] = "never"  # never | update | always: when the dense gradient is needed

    exclude: Sequence[str] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.exclude is None:
            raise TypeError("exclude must be a list of layer or parameter names, got None")
        self._check("seed", integer, 0)
        super().__post_init__()


@dataclass(frozen=True)
class _Distributed(SparseMethod):
    """A random initial mask at a global ``sparsity`` spread over the layers by ``distribution``."""

    sparsity: float = 0.9
    distribution: str = "erk"
    dense_first: bool = False  # keep the first layer dense (the papers' option for uniform)
    dense_last: bool = False   # keep the last (output) layer dense

    def validate(self) -> None:
        self._check("sparsity", number, 0.0, 1.0)
        self._check("distribution", choice, DISTRIBUTIONS)
        for name in ("dense_first", "dense_last"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be true or false, got {getattr(self, name)!r}")


@METHODS.register(FAMILY, "static")
@dataclass(frozen=True)
class Static(_Distributed):
    """The control: a random mask at initialization that never changes."""

    dynamic: ClassVar[bool] = False


@dataclass(frozen=True)
class _DropGrow(_Distributed):
    """Drop ``drop_fraction`` of each layer's active weights every ``update_interval`` steps, regrow as many."""

    update_interval: int = 100        # Delta T, in optimizer steps
    drop_fraction: float = 0.3        # alpha: fraction of the active weights dropped at an update
    drop_schedule: str = "cosine"     # alpha_t = alpha / 2 * (1 + cos(pi t / T_end)), or constant
    end_fraction: float = 0.75        # stop updating after this fraction of the training steps

    def validate(self) -> None:
        super().validate()
        self._check("update_interval", integer, 1)
        self._check("drop_fraction", number, 0.0, 1.0)
        self._check("drop_schedule", choice, SCHEDULES)
        self._check("end_fraction", number, 0.0, 1.0, False)


@METHODS.register(FAMILY, "set")
@dataclass(frozen=True)
class SET(_DropGrow):
    """Sparse Evolutionary Training (Mocanu et al. 2018): drop by magnitude, regrow at random positions.
    The paper's zeta = 0.3, constant, on an Erdos-Renyi mask, to the end of training."""

    distribution: str = "er"
    drop_schedule: str = "constant"
    end_fraction: float = 1.0


@METHODS.register(FAMILY, "rigl")
@dataclass(frozen=True)
class RigL(_DropGrow):
    """RigL (Evci et al. 2020): drop by magnitude, regrow where the dense gradient (computed at update
    steps only) is largest; regrown weights start at zero. The paper's alpha 0.3 cosine-decayed,
    Delta T 100, updates stop at 75% of training, ERK."""

    dense_gradient: ClassVar[str] = "update"


@METHODS.register(FAMILY, "snfs")
@dataclass(frozen=True)
class SNFS(_DropGrow):
    """Sparse momentum (Dettmers & Zettlemoyer 2019): drop by magnitude, regrow where the momentum of the
    dense gradient is largest, and redistribute the regrowth across layers by their mean momentum
    magnitude. The paper's prune rate 0.5 cosine-decayed, momentum 0.9, once an epoch (set
    ``update_interval`` to the epoch's steps), to the end of training, uniform initial sparsity."""

    dense_gradient: ClassVar[str] = "always"
    distribution: str = "uniform"
    update_interval: int = 1000
    drop_fraction: float = 0.5
    end_fraction: float = 1.0
    momentum: float = 0.9
    redistribution: str = "momentum"  # momentum (the paper) or none (each layer regrows what it dropped)

    def validate(self) -> None:
        super().validate()
        self._check("momentum", number, 0.0, 1.0)
        self._check("redistribution", choice, ("momentum", "none"))


@METHODS.register(FAMILY, "srste")
@dataclass(frozen=True)
class SRSTE(SparseMethod):
    """N:M from scratch with the sparse-refined straight-through estimator (Zhou et al. 2021): the forward
    uses the N:M mask of the current dense weights (recomputed every step), the backward passes the
    gradient to every weight plus ``decay`` x the pruned weights (lambda_W = 2e-4). 2:4 by default."""

    dynamic: ClassVar[bool] = True
    dense_gradient: ClassVar[str] = "always"
    n: int = 2
    m: int = 4
    decay: float = 2e-4

    def validate(self) -> None:
        self._check("n", integer, 1)
        self._check("m", integer, 1)
        if self.n > self.m:
            raise ValueError(f"N:M needs N <= M, got {self.n}:{self.m}")
        self._check("decay", number, 0.0, float("inf"))

    @property
    def sparsity(self) -> float:
        return 1 - self.n / self.m


def method_names() -> list[str]:
    return METHODS.names(FAMILY)
