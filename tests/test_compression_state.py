"""Masks and codebooks survive what users do to models: deepcopy, .to(), state_dict round trips, pickling,
torch.compile and DistributedDataParallel; and public calls that fail leave the model as it was."""

import copy
import io
import os
import pickle

import pytest
import torch
import torch.distributed as dist
from torch import nn

import deepzip
from deepzip import prune as P
from deepzip import quantize as Q


def pruned_mlp(seed=0, shared=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))
    P.prune(model, 0.7)
    if shared:
        Q.quantize(model, 3)
    return model


def sgd_steps(model, steps=3, momentum=0.9, weight_decay=1e-2):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=momentum, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(8, 12, generator=generator)).pow(2).sum().backward()
        optimizer.step()
    return model


def assert_pruned_zeros_kept(model):
    for name, mask in P.get_masks(model).items():
        module, param = name.rsplit(".", 1)
        weight = getattr(model.get_submodule(module), param)
        assert weight.detach()[~mask].eq(0).all(), name
        assert not torch.signbit(weight.detach()[~mask]).any(), f"{name}: pruned zeros must be +0.0"
        assert weight.detach()[mask].ne(0).any(), f"{name}: training changed nothing"


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "to_double", "state_dict", "load_assign"])
def test_masks_stay_enforced_after(how, shared):
    model = pruned_mlp(shared=shared)
    if how == "deepcopy":
        other = copy.deepcopy(model)
    elif how == "pickle":
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        other = torch.load(buffer, weights_only=False)
    elif how == "to_double":
        other = copy.deepcopy(model).to(torch.float64).to(torch.float32)
    elif how == "state_dict":
        other = deepzip.load_state_dict(nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)),
                                        model.state_dict())
    else:  # new Parameter objects replace the hooked ones
        other = copy.deepcopy(model)
        other.load_state_dict(copy.deepcopy(model.state_dict()), assign=True)
    sgd_steps(other)
    assert_pruned_zeros_kept(other)
    if shared:
        assert set(Q.shared_layers(other)) == {"0.weight", "2.weight"}
        for name, (codebook, index) in Q.codebooks(other).items():
            assert len(codebook) <= 8 and index.dtype == torch.uint8
    assert_pruned_zeros_kept(sgd_steps(model))  # the original is still enforced too


def test_deepcopy_trains_exactly_like_the_original():
    model = pruned_mlp(shared=True)
    twin = copy.deepcopy(model)
    sgd_steps(model)
    sgd_steps(twin)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


def test_torch_compile_keeps_masks_and_codebooks():
    for shared in (False, True):
        model = pruned_mlp(shared=shared)
        compiled = torch.compile(model, backend="aot_eager")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        for _ in range(2):
            optimizer.zero_grad()
            compiled(torch.randn(8, 12)).pow(2).sum().backward()
            optimizer.step()
        model(torch.zeros(1, 12))  # refresh shared weights from the trained codebooks
        assert_pruned_zeros_kept(model)


def test_distributed_data_parallel_keeps_masks(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not built in")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        for shared in (False, True):
            model = pruned_mlp(shared=shared)
            wrapped = nn.parallel.DistributedDataParallel(model)
            sgd_steps(wrapped)
            model(torch.zeros(1, 12))
            assert_pruned_zeros_kept(model)
            assert set(P.get_masks(wrapped)) == {"module.0.weight", "module.2.weight"}
    finally:
        dist.destroy_process_group()


def test_remove_and_finalize_drop_every_hook():
    model = pruned_mlp(shared=True)
    Q.finalize(model)
    P.remove(model)
    for layer in (model[0], model[2]):
        assert not layer._forward_pre_hooks and not layer._forward_hooks
        assert isinstance(layer.weight, nn.Parameter) and layer.weight._backward_hooks in (None, {})


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not Q.shared_layers(model)


def test_a_failing_quantize_leaves_the_model_as_it_was(monkeypatch):
    model = pruned_mlp()
    before = snapshot(model)
    calls = []
    original = Q.sharing.kmeans_1d

    def fail_on_second_layer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("k-means failed in a later layer")
        return original(*args, **kwargs)

    monkeypatch.setattr(Q.sharing, "kmeans_1d", fail_on_second_layer)
    with pytest.raises(RuntimeError, match="later layer"):
        Q.quantize(model, 3)
    assert len(calls) == 2
    assert_unchanged(model, before)


def test_a_failing_prune_leaves_the_model_as_it_was(monkeypatch):
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))
    before = snapshot(model)
    calls = []
    original = P.criteria.fraction_mask

    def fail_on_second_layer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("mask failed in a later layer")
        return original(*args, **kwargs)

    monkeypatch.setattr(P.criteria, "fraction_mask", fail_on_second_layer)
    with pytest.raises(RuntimeError, match="later layer"):
        P.prune(model, 0.5, "uniform")
    assert not P.is_pruned(model)
    assert_unchanged(model, before)


def test_a_state_dict_that_does_not_fit_leaves_the_model_as_it_was():
    source = pruned_mlp(shared=True)
    state = source.state_dict()
    del state["2.bias"]
    target = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))
    before = snapshot(target)
    with pytest.raises(RuntimeError, match="Missing key"):
        deepzip.load_state_dict(target, state)
    assert_unchanged(target, before)
    assert not P.is_pruned(target)


def test_the_mask_hook_object_is_picklable_and_copies_start_unhooked():
    model = pruned_mlp()
    hook = next(h for h in model[0]._forward_pre_hooks.values() if isinstance(h, P.MaskGradients))
    assert pickle.loads(pickle.dumps(hook))._hooked == {}
