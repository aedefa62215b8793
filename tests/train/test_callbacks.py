"""Compression callbacks in a plain PyTorch loop and in deepzip's loop."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.train import TrainConfig, train
from deepzip.train.callbacks import Callback, KeepMasks, PruneOnSchedule, Rewind


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def plain_loop(model, data, callbacks, steps=60, lr=0.05):
    """A user's own loop: the callbacks are the only deepzip calls in it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    x, y = data.train.x, data.train.y
    for cb in callbacks:
        cb.on_train_begin(model, optimizer)
    for step in range(1, steps + 1):
        idx = torch.arange(step * 32, step * 32 + 32) % len(x)
        optimizer.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        for cb in callbacks:
            cb.on_step(model, optimizer, step)
    for cb in callbacks:
        cb.on_train_end(model)
    return model


def zeros_kept(model):
    for name, mask in P.get_masks(model).items():
        module, param = name.rsplit(".", 1)
        assert getattr(model.get_submodule(module), param).detach()[~mask].eq(0).all(), name


def test_gradual_schedule_in_a_plain_loop_reaches_its_target(digits):
    model = mlp()
    schedule = PruneOnSchedule.gradual(P.GlobalMagnitude(sparsity=0.8), begin=10, end=40, every=10)
    plain_loop(model, digits, [schedule])
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert [s for s, _ in schedule.history] == [10, 20, 30, 40]
    assert [round(t, 4) for _, t in schedule.history] == [0.0, 0.5630, 0.7704, 0.8]  # the cubic ramp
    zeros_kept(model)


def test_iterative_schedule_prunes_equal_fractions_of_what_remains(digits):
    model = mlp()
    schedule = PruneOnSchedule.iterative(P.ERK(sparsity=0.875), at_steps=[0, 20, 40])
    plain_loop(model, digits, [schedule])
    assert [(s, round(t, 3)) for s, t in schedule.history] == [(0, 0.5), (20, 0.75), (40, 0.875)]
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.875, abs=2e-3)
    zeros_kept(model)


def test_rewind_resets_the_survivors_to_step_k(digits):
    model = mlp()
    rewind = Rewind(step=5)
    plain_loop(model, digits, [rewind], steps=20)
    at_five = copy.deepcopy(rewind.saved)
    P.prune(model, 0.7)
    rewind.reset(model)
    masks = P.get_masks(model)
    for name, weight in model.named_parameters():
        expected = at_five[name] * masks[name] if name in masks else at_five[name]
        assert torch.equal(weight.detach(), expected), name
    with pytest.raises(ValueError, match="no weights saved yet: training has not reached step 99"):
        Rewind(step=99).reset(model)


def test_quantized_model_fine_tunes_its_centroids_in_a_plain_loop(digits):
    model = mlp()
    P.prune(model, 0.7)
    Q.quantize(model, 3)
    before = {n: cb.detach().clone() for n, (cb, _) in Q.codebooks(model).items()}
    plain_loop(model, digits, [KeepMasks()], steps=10, lr=0.01)
    for name, (codebook, _) in Q.codebooks(model).items():
        assert len(codebook) == len(before[name]) and not torch.equal(codebook.detach(), before[name])
    model(digits.train.x[:1])
    zeros_kept(model)


def test_callbacks_are_deepzip_training_hooks(digits):
    model = mlp()
    schedule = PruneOnSchedule.gradual(P.GlobalMagnitude(sparsity=0.5), begin=0, end=20, every=10)
    train(model, digits, TrainConfig(dataset="digits", epochs=1, batch_size=32, val_size=300), hooks=[schedule],
          progress=False)
    assert P.sparsity_report(model)["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_schedules_refuse_methods_without_a_target():
    with pytest.raises(ValueError, match="needs a method with a sparsity target"):
        PruneOnSchedule.gradual(P.NM(), begin=0, end=10)
    with pytest.raises(ValueError, match="at_steps must be increasing"):
        PruneOnSchedule.iterative(P.GlobalMagnitude(), at_steps=[10, 5])
    assert isinstance(Rewind(), Callback)
