"""Statistics of the inputs each layer sees on calibration data (the pure accounting behind Wanda,
SparseGPT, OWL and sensitivity-weighted k-means).

For a Linear layer with input rows x (one per token), `input_statistics` gathers
- ``sq_norm[j] = sum_t x_tj^2``: the squared norm of input column j over all calibration tokens
  (Wanda's ``||X_j||_2^2``; the diagonal of the Gram matrix), accumulated in float64;
- ``count``: how many tokens (input rows) were seen;
- ``gram = X^T X`` (in_features x in_features, float32 sums) when asked: SparseGPT's Hessian is
  ``2 X^T X``.
For an Embedding the input is a one-hot row per token, so ``sq_norm`` is over the table's *rows*: how
often each row was looked up (its squared input norm), and there is no Gram matrix.

Batches are tensors (``model(batch)``) or dicts of tensors (``model(**batch)``, Hugging Face style). A
dict batch's ``attention_mask`` (batch x tokens) selects the real tokens: padding positions add nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..validate import names as check_names

STATISTIC_TYPES = (nn.Linear, nn.Embedding)


@dataclasses.dataclass
class LayerStatistics:
    """What one layer's inputs looked like: see the module docstring for each field."""

    kind: str  # 'fc' (Linear: sq_norm over input features) or 'embedding' (sq_norm over rows)
    sq_norm: torch.Tensor  # 1-D float64
    count: int = 0
    gram: torch.Tensor | None = None  # in x in float32 sums, Linear only, when asked

    @property
    def norm(self) -> torch.Tensor:
        """``||X_j||_2`` per input feature (Wanda's activation norm)."""
        return self.sq_norm.sqrt()

    def add(self, rows: torch.Tensor) -> None:
        """Account for input rows (tokens x in_features for a Linear; token ids for an Embedding)."""
        if self.kind == "embedding":
            ids = rows.reshape(-1).to(self.sq_norm.device)
            self.sq_norm += torch.bincount(ids, minlength=self.sq_norm.numel()).to(self.sq_norm.dtype)
            self.count += ids.numel()
            return
        rows = rows.detach().reshape(-1, rows.shape[-1])
        self.sq_norm += rows.double().pow(2).sum(0).to(self.sq_norm.device)
        self.count += rows.shape[0]
        if self.gram is not None:
            x = rows.float()
            self.gram += (x.T @ x).to(self.gram.device)


def new_statistics(module: nn.Module, gram: bool = False, device: torch.device | str | None = None) -> LayerStatistics:
    """Empty statistics for a Linear or Embedding ``module`` (on its weight's device unless ``device``)."""
    weight = module.weight
    device = weight.device if device is None else torch.device(device)
    if isinstance(module, nn.Embedding):
        return LayerStatistics("embedding", torch.zeros(module.num_embeddings, dtype=torch.float64, device=device))
    features = weight.shape[1]
    return LayerStatistics("fc", torch.zeros(features, dtype=torch.float64, device=device), 0,
                           torch.zeros(features, features, dtype=torch.float32, device=device) if gram else None)


def statistic_layers(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """{weight name: module} for the Linear and Embedding layers of ``model`` (``names``: only those,
    given as module or weight names, e.g. ``encoder.layer.0.output.dense`` or ``...dense.weight``)."""
    found = {f"{name}.weight" if name else "weight": module for name, module in model.named_modules()
             if isinstance(module, STATISTIC_TYPES)}
    if names is None:
        return found
    names = check_names(names, "names")
    out = {}
    for name in names:
        key = name if name in found else f"{name}.weight" if name else "weight"
        if key not in found:
            raise ValueError(f"no Linear or Embedding layer {name!r}; the model's: {', '.join(found) or '(none)'}")
        out[key] = found[key]
    return out


class Recorder:
    """Forward pre-hooks that add each listed layer's inputs to its statistics; a context manager.

    ``token_mask`` (set per batch, batch x tokens bool) picks the real tokens of inputs shaped
    (batch, tokens, ...); inputs of another shape are taken whole.
    """

    def __init__(self, layers: Mapping[str, nn.Module], gram: bool = False, device: torch.device | str | None = None):
        self.layers = dict(layers)
        self.stats = {name: new_statistics(module, gram, device) for name, module in self.layers.items()}
        self.token_mask: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> "Recorder":
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            x = inputs[0]
            mask = self.token_mask
            if mask is not None and x.dim() >= 2 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.to(x.device)]
            self.stats[name].add(x)
        return hook


def batch_to(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, dict, list or tuple of tensors) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: batch_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(batch_to(v, device) for v in batch)
    return batch


def call_model(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a dict batch, ``model(batch)`` for a tensor; anything else is a TypeError."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, torch.Tensor):
        return model(batch)
    raise TypeError(f"a calibration batch must be a tensor or a dict of tensors, got {type(batch).__name__}")


def token_mask(batch: Any) -> torch.Tensor | None:
    """The real-token mask of a Hugging Face style batch (its 2-D ``attention_mask``), else None."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return mask.bool()
    return None


def model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def input_statistics(model: nn.Module, batches: Iterable[Any], names: Sequence[str] | None = None,
                     gram: bool = False, device: torch.device | str | None = None) -> dict[str, LayerStatistics]:
    """Run ``batches`` through ``model`` and return the input statistics of its layers.

    Keys are weight names (``encoder.layer.0.output.dense.weight``), as in `deepzip.prune.find_targets`.
    ``names``: only these layers (module or weight names; default every Linear and Embedding).
    ``gram``: also the input Gram matrix ``X^T X`` of each Linear (in_features^2 floats per layer: ask
    only for the layers you need). ``device``: where the statistics are kept (default: each layer's
    weight's device); the batches go to the model's device. The model runs in eval mode (its mode is
    restored) and is not changed. Statistics are sums: ``sq_norm / count`` is the mean square.
    """
    layers = statistic_layers(model, names)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Embedding layer to gather statistics for")
    where = model_device(model)
    seen = 0
    training = model.training
    model.eval()
    try:
        with Recorder(layers, gram, device) as recorder:
            for batch in batches:
                batch = batch_to(batch, where)
                recorder.token_mask = token_mask(batch)
                call_model(model, batch)
                seen += 1
    finally:
        model.train(training)
    if seen == 0:
        raise ValueError("no calibration batches: give a non-empty iterable of tensors or dicts of tensors")
    return recorder.stats
