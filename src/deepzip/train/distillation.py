"""Retraining without labels: distillation of a compressed model (the student) from its original (the
teacher) on unlabeled batches, the pretrained-model form of Deep Compression's retraining step.

    deepzip.train.distill(student, teacher, batches, steps=300, lr=1e-4, loss="cosine", target="output")

The student's compression state is kept as in any deepzip training: pruned weights stay exactly zero
(the `weight_mask` gradient hooks; AdamW with zero weight, gradient and state leaves them at zero) and
weight-shared layers train their centroids (the codebook is the Parameter). What is matched:
``target='output'`` the model's output per token (a Hugging Face model's ``last_hidden_state``),
``'mean'`` its mean over the real tokens (a sentence embedding), ``'hidden'`` every hidden state
(``output_hidden_states=True``, Hugging Face models). Padding tokens (``attention_mask`` 0) add nothing.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..calibrate.sequential import hidden_of
from ..calibrate.statistics import batch_to, call_model, model_device, token_mask
from ..checkpoint import load_state, save_state
from ..quantize.sharing import load_state_dict
from ..validate import choice, integer, number
from .loop import epoch_order

LOSSES = ("cosine", "mse")
TARGETS = ("output", "mean", "hidden")


@dataclasses.dataclass
class DistillResult:
    losses: list[float]  # the loss at every step
    steps: int

    @property
    def first(self) -> float:
        return sum(self.losses[:10]) / len(self.losses[:10])

    @property
    def last(self) -> float:
        return sum(self.losses[-10:]) / len(self.losses[-10:])


def features(model: nn.Module, batch: Any, target: str) -> list[torch.Tensor]:
    """What distillation matches, as a list of (batch, tokens, dim) or (batch, dim) tensors."""
    if target == "hidden":
        if not isinstance(batch, dict):
            raise TypeError("target='hidden' needs dict batches for a Hugging Face model (output_hidden_states=True)")
        states = getattr(model(**batch, output_hidden_states=True), "hidden_states", None)
        if states is None:
            raise TypeError(f"{type(model).__name__} returns no hidden_states; use target='output' or 'mean'")
        return list(states)
    out = hidden_of(call_model(model, batch))
    if target == "mean":
        mask = token_mask(batch)
        if mask is None or out.dim() != 3:
            return [out.mean(1) if out.dim() == 3 else out]
        weights = mask.to(out.dtype).unsqueeze(-1)
        return [(out * weights).sum(1) / weights.sum(1).clamp(min=1)]
    return [out]


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Mean over the real tokens of 1 - cosine (or the squared error) along the last dimension."""
    per = 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8) if loss == "cosine" \
        else (student - teacher).pow(2).mean(-1)
    if mask is not None and per.shape == mask.shape:
        return per[mask.to(per.device)].mean()
    return per.mean()


def distill(student: nn.Module, teacher: nn.Module, batches: Iterable[Any], *, steps: int | None = None,
            epochs: int = 1, lr: float = 1e-4, weight_decay: float = 0.0, loss: str = "cosine", target: str = "output",
            seed: int = 0, checkpoint: str | Path | None = None, save_every: int = 50,
            progress: bool = True) -> DistillResult:
    """Train ``student`` (in place) to match ``teacher`` on ``batches`` with AdamW and a cosine-decayed
    learning rate; returns the loss per step.

    ``steps`` (default ``epochs`` passes over the batches, in a seeded order per epoch). Both models
    run in eval mode (no dropout: the student learns the teacher's deterministic outputs); the teacher
    is not changed. ``checkpoint``: a file where the student, the optimizer and the losses are saved
    every ``save_every`` steps and at the end, so a rerun continues (a finished run returns at once).
    """
    batches = list(batches)
    if not batches:
        raise ValueError("distill needs a non-empty iterable of input batches")
    choice(loss, "loss", LOSSES)
    choice(target, "target", TARGETS)
    number(lr, "lr", 0.0, math.inf)
    number(weight_decay, "weight_decay", 0.0, math.inf)
    integer(epochs, "epochs", 1)
    integer(save_every, "save_every", 1)
    total = integer(steps, "steps", 1) if steps is not None else epochs * len(batches)
    if student is teacher:
        raise ValueError("student and teacher are the same module; distill a compressed copy from the original")
    device = model_device(student)
    teacher_device = model_device(teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    losses: list[float] = []
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_state(checkpoint)
        load_state_dict(student, {k: v.to(device) for k, v in state["student"].items()})
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        losses = [float(x) for x in state["losses"]]
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    bar = tqdm(total=total, initial=len(losses), desc="distill", unit="step", disable=not progress)
    try:
        for step in range(len(losses), total):
            epoch, position = divmod(step, len(batches))
            batch = batches[int(epoch_order(seed, epoch, len(batches))[position])]
            with torch.no_grad():
                wanted = [t.to(device) for t in features(teacher, batch_to(batch, teacher_device), target)]
            batch = batch_to(batch, device)
            mask = token_mask(batch)
            got = features(student, batch, target)
            value = sum(feature_loss(s, t, mask, loss) for s, t in zip(got, wanted)) / len(got)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(value.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
            if checkpoint is not None and (len(losses) % save_every == 0 or len(losses) == total):
                save_state(checkpoint, {"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                                        "schedule": schedule.state_dict(), "losses": losses})
        bar.close()
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    return DistillResult(losses, total)
