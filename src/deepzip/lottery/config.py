"""Lottery-ticket experiment settings (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import check_choices, option

RESETS = ("init", "rewind", "lr_rewind", "finetune")
CONTROLS = ("reinit", "random")


@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning with resetting, controls and replicates."""

    levels: int = option(15, "pruning levels after the dense level 0 (0.8^15 = 3.5% of fc weights left)")
    fc_rate: float = option(0.2, "fraction of the remaining fc weights pruned per level")
    conv_rate: float = option(0.1, "fraction of the remaining conv weights pruned per level")
    output_rate: float = option(0.1, "rate of the output layer (the paper: half the fc rate)")
    pruning: str = option("layerwise", "per-layer rates, or one global magnitude threshold at the fc rate",
                          ("layerwise", "global"))
    reset: str = option("init", "how survivors restart: init (k=0), rewind (to iteration k), lr_rewind "
                                "(keep weights, replay the lr schedule from k), finetune (keep weights, final lr)",
                        RESETS)
    rewind_iteration: int = option(0, "k for rewind / lr_rewind / finetune (iterations of level-0 training)")
    controls: str = option("reinit,random", "comma-separated controls at every level: reinit, random")
    oneshot: bool = option(False, "also prune the level-0 weights one-shot to each level's sparsity")
    replicates: int = option(3, "independent seeds (initialization and data order)")
    seed: int = option(0, "seed of the first replicate (replicate r uses seed + r)")

    def __post_init__(self):
        check_choices(self)
        if self.levels < 0 or self.replicates < 1 or self.rewind_iteration < 0:
            raise ValueError("levels and rewind_iteration must be >= 0 and replicates >= 1")
        for name in ("fc_rate", "conv_rate", "output_rate"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.reset == "init" and self.rewind_iteration:
            raise ValueError("reset 'init' rewinds to iteration 0; use reset 'rewind' with rewind_iteration > 0")
        unknown = set(self.control_list()) - set(CONTROLS)
        if unknown:
            raise ValueError(f"unknown controls {', '.join(sorted(unknown))}; allowed: {', '.join(CONTROLS)}")

    def control_list(self) -> list[str]:
        return [c.strip() for c in self.controls.split(",") if c.strip()]
