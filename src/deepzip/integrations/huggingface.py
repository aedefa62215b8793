"""deepzip callbacks inside a Hugging Face ``transformers.Trainer`` (the ``transformers`` extra).

    from deepzip.integrations.huggingface import DeepzipCallback
    from deepzip.train.callbacks import PruneOnSchedule
    schedule = PruneOnSchedule.gradual(GlobalMagnitude(sparsity=0.5), begin=0, end=1000, every=100)
    Trainer(model, args, train_dataset=data, callbacks=[DeepzipCallback(schedule)]).train()
"""

from __future__ import annotations

from transformers import TrainerCallback

from ..train.callbacks import Callback


class DeepzipCallback(TrainerCallback):
    """Runs deepzip callbacks at the Trainer's train begin, step end (after the optimizer step, with the
    Trainer's global step) and train end."""

    def __init__(self, *callbacks: Callback):
        bad = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
        if bad or not callbacks:
            raise TypeError(f"DeepzipCallback takes deepzip.train.callbacks objects, got {', '.join(bad) or 'none'}")
        self.callbacks = callbacks

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        for callback in self.callbacks:
            callback.on_train_begin(model, optimizer)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        for callback in self.callbacks:
            callback.on_step(model, optimizer, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        for callback in self.callbacks:
            callback.on_train_end(model)
