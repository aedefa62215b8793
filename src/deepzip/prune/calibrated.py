"""The module layer of the calibration methods (Wanda, SparseGPT, OWL): prune a model block by block on
calibration data, through `deepzip.calibrate.sequential`.

Each method's implementation (dispatched through `METHODS` by config type) is a pure function of one
Linear weight, its input statistics, the layer's sparsity and its installed mask, returning the keep-
mask and, for SparseGPT, the updated weight. While the loop runs, a pruned block's weights are zeroed
in place so that the next block sees its pruned outputs; the masks are installed at the end (the
existing `weight_mask` state, so `.dz` files, `remove`, retraining and the runtime take the result as
is). A failure puts every weight back: the model is unchanged. The weights are copied once for that
(on the CPU: the model's size in host memory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..calibrate import LayerStatistics, find_blocks, input_statistics, sequential
from ..registry import METHODS
from . import allocate, masks as mask_state
from .configs import OWL, Calibrated, SparseGPT, Wanda
from .sparsegpt import sparsegpt
from .targets import find_targets
from .wanda import outlier_ratio, wanda_mask, wanda_scores

LayerResult = tuple[torch.Tensor, "torch.Tensor | None"]  # (keep-mask, updated weight or None)


@METHODS.implements(Wanda)
def _wanda(cfg: Calibrated, weight: torch.Tensor, stats: LayerStatistics, sparsity: float,
           pruned: torch.Tensor | None) -> LayerResult:
    return wanda_mask(weight, stats.sq_norm, sparsity, cfg.n, cfg.m, cfg.comparison, pruned), None


@METHODS.implements(SparseGPT)
def _sparsegpt(cfg: Calibrated, weight: torch.Tensor, stats: LayerStatistics, sparsity: float,
               pruned: torch.Tensor | None) -> LayerResult:
    new, keep = sparsegpt(weight, stats.gram, sparsity, cfg.n, cfg.m, cfg.comparison, cfg.blocksize, cfg.percdamp,
                          pruned)
    return keep, new


@METHODS.implements(OWL)
def _owl(cfg: OWL, weight: torch.Tensor, stats: LayerStatistics, sparsity: float,
         pruned: torch.Tensor | None) -> LayerResult:
    inner = cfg.inner_config(sparsity)
    return METHODS.handler(inner)(inner, weight, stats, sparsity, pruned)


def calibration_targets(model: nn.Module, cfg: Calibrated) -> tuple[list[tuple[str, nn.Module]], dict[str, dict[str, nn.Linear]]]:
    """The model's blocks, and per block name the Linear weights it prunes ({weight name: module})."""
    blocks = find_blocks(model, cfg.blocks)
    linears = {n: m for n, m in find_targets(model, (), cfg.exclude).items() if isinstance(m, nn.Linear)}
    per_block: dict[str, dict[str, nn.Linear]] = {}
    for name, _block in blocks:
        prefix = f"{name}." if name else ""
        per_block[name] = {n: m for n, m in linears.items() if n.startswith(prefix)}
    if not any(per_block.values()):
        raise ValueError(f"{cfg.method}: no Linear layer to prune inside the blocks "
                         f"{', '.join(n or '(the whole model)' for n, _ in blocks)}; name them with blocks=")
    shared = [n for layers in per_block.values() for n, m in layers.items() if not isinstance(m.weight, nn.Parameter)]
    if shared:
        raise ValueError(f"{cfg.method} prunes before weight sharing; {', '.join(shared)} are weight-shared "
                         f"(deepzip.quantize.finalize them first, or prune before quantizing)")
    return blocks, per_block


def owl_sparsities(model: nn.Module, cfg: OWL, batches: list, per_block: Mapping[str, Mapping[str, nn.Module]]) -> dict[str, float]:
    """OWL's per-block sparsity from the dense model's Wanda scores (one pass over the calibration data)."""
    names = [n for layers in per_block.values() for n in layers]
    stats = input_statistics(model, batches, names=names)
    ratios = {block: outlier_ratio([wanda_scores(m.weight, stats[n].sq_norm) for n, m in layers.items()],
                                   cfg.outlier_threshold)
              for block, layers in per_block.items() if layers}
    return dict(zip(ratios, allocate.owl(list(ratios.values()), cfg.sparsity, cfg.limit)))


def prune_calibrated(model: nn.Module, cfg: Calibrated, calibration: Iterable[Any], *,
                     checkpoint_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Prune ``model`` in place with a calibration method; returns {'sparsities': per block, 'layers':
    per weight kept fraction}. ``checkpoint_dir`` makes the run resumable per block."""
    batches = list(calibration)
    if not batches:
        raise ValueError(f"{cfg.method} needs calibration data: a non-empty iterable of input batches")
    blocks, per_block = calibration_targets(model, cfg)
    existing = mask_state.get_masks(model)
    targets = {n: m for layers in per_block.values() for n, m in layers.items()}
    snapshot = {n: m.weight.detach().to("cpu", copy=True) for n, m in targets.items()}
    handler = METHODS.handler(cfg)
    try:
        block_sparsity = owl_sparsities(model, cfg, batches, per_block) if isinstance(cfg, OWL) \
            else {name: cfg.sparsity for name, _ in blocks}

        def process(index: int, name: str, block: nn.Module, stats: dict[str, LayerStatistics]) -> dict:
            result = {}
            for weight_name, module in per_block[name].items():
                pruned = existing.get(weight_name)
                keep, new = handler(cfg, module.weight, stats[weight_name], block_sparsity[name], pruned)
                with torch.no_grad():
                    if new is not None:
                        module.weight.copy_(new)
                    module.weight.masked_fill_(~keep.to(module.weight.device), 0.0)
                result[weight_name] = {"mask": keep, "weight": None if new is None else module.weight.detach()}
            return result

        def restore(index: int, name: str, block: nn.Module, result: dict) -> None:
            for weight_name, module in per_block[name].items():
                saved = result[weight_name]
                with torch.no_grad():
                    if saved["weight"] is not None:
                        module.weight.copy_(saved["weight"])
                    module.weight.masked_fill_(~saved["mask"].to(module.weight.device), 0.0)

        key = {"config": repr(cfg), "layers": sorted(targets)}
        results = sequential(model, batches, process, blocks=cfg.blocks, names=list(targets), gram=cfg.needs_gram,
                             restore=restore, checkpoint_dir=checkpoint_dir, key=key, progress=progress)
        masks = {n: r["mask"] for result in results for n, r in result.items()}
        masks = {n: m.to(existing[n].device) & existing[n] if n in existing else m for n, m in masks.items()}
        mask_state.apply_masks(model, masks)
    except BaseException:
        with torch.no_grad():
            for name, module in targets.items():
                module.weight.copy_(snapshot[name])
        raise
    return {"sparsities": block_sparsity,
            "layers": {n: float(m.float().mean()) for n, m in masks.items()}}
