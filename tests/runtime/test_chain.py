"""The chain compiler (runtime.chain) and its wiring into runtime.convert / runtime.load (fuse=...)."""

import copy
import importlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import models, runtime
from deepzip.runtime import FusedModel, Unsupported, compile_chain
from deepzip.runtime import chain as chain_module


def max_diff(got, want):
    return (got - want).abs().max().item()


def assert_close(got, want):
    assert got.shape == want.shape
    assert max_diff(got, want) <= 1e-5 * max(1.0, want.abs().max().item())


def pruned_quantized(name):
    model = models.build(name, seed=0)
    deepzip.prune(model, sparsity=0.9)
    deepzip.quantize(model, bits={"conv": 8, "fc": 5})
    return model.eval()


@pytest.mark.parametrize("name, ops", [("lenet300_100", [1, 2, 8, 2, 8, 2]), ("lenet5", [6, 9, 6, 9, 2, 8, 2])])
def test_lenets_run_as_one_chain_equal_to_the_dense_model(name, ops, tmp_path):
    model = pruned_quantized(name)
    x = torch.rand(1, 1, 28, 28)  # image-like: non-negative pixels
    with torch.no_grad():
        want = model(x)
    fused = runtime.convert(copy.deepcopy(model), example=x, fuse="on")
    assert isinstance(fused, FusedModel)
    info = runtime.fusion(fused)
    assert info["fused"] and info["ops"] == len(fused.chain.program) and info["max_abs_diff"] < 1e-4
    assert_close(fused(x), want)
    # every compiled layer records the form the chain runs, from the forms it had
    for d in runtime.decisions(fused):
        assert d["chain_kernel"] in d["chain_s"] and set(d["chain_s"]) >= {"sparse", "sparse fp32", "dense"}
        assert d["chain_kernel"] == min(d["chain_s"], key=d["chain_s"].get)
    deepzip.save(model, tmp_path / "m.dz")
    loaded = runtime.load(tmp_path / "m.dz", models.from_description, example=x, fuse="on", mode="sparse")
    assert isinstance(loaded, FusedModel)
    # mode="sparse": CSR codes in every layer (op 2 linear, 6 conv), then ReLU 8 and max pooling 9
    assert [int(op) for op in loaded.chain.program[:, 0]] == [o for o in ops if o != 1] or name == "lenet300_100"
    assert_close(loaded(x), want)
    batch = torch.rand(4, 1, 28, 28)  # another shape: the per-layer model runs it
    with torch.no_grad():
        assert_close(loaded(batch), model(batch))


class Functional(nn.Module):
    """Functional ops as a model's forward writes them, shape reads included."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 6)

    def forward(self, x):
        x = F.avg_pool2d(torch.relu(self.conv(x)), 2)
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = x.view(x.size(0), -1)
        return F.relu(self.fc(torch.flatten(x, 1)))


def op_zoo():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 6, (3, 2), dilation=(1, 2)), nn.AvgPool2d(2, stride=1), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(6 * 1 * 2, 20), nn.ReLU(), nn.Identity(), nn.Linear(20, 5)).eval()


@pytest.mark.parametrize("mode", ["sparse", "codes", "dense"])
@pytest.mark.parametrize("batch", [1, 3])
def test_every_op_matches_torch(mode, batch):
    torch.manual_seed(0)
    model = op_zoo()
    deepzip.prune(model, sparsity=0.6)
    deepzip.quantize(model, bits=4)
    x = torch.randn(batch, 3, 17, 19)
    with torch.no_grad():
        want = model(x)
    fused = runtime.convert(copy.deepcopy(model), example=x, mode=mode, fuse="on")
    kinds = {int(op) for op in fused.chain.program[:, 0]}
    assert {chain_module.RELU, chain_module.MAXPOOL, chain_module.AVGPOOL} <= kinds
    expected = {"sparse": {chain_module.CONV_CSR_CODED, chain_module.LINEAR_CSR_CODED},
                "codes": {chain_module.CONV_CSR_CODED, chain_module.LINEAR_CODES},
                "dense": {chain_module.CONV_DENSE, chain_module.LINEAR_DENSE}}[mode]
    assert expected <= kinds
    assert_close(fused(x), want)


def test_dense_and_fp32_csr_forms_and_functional_ops():
    torch.manual_seed(1)
    model = Functional().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    plain = compile_chain(model, x)  # an unconverted model: dense fp32 layers
    assert_close(plain(x), want)
    deepzip.prune(model, sparsity=0.5)  # masks, no codebook: CSR with fp32 values
    with torch.no_grad():
        want = model(x)
    fused = runtime.convert(model, example=x, mode="sparse", fuse="on")
    assert {chain_module.CONV_CSR, chain_module.LINEAR_CSR} <= {int(op) for op in fused.chain.program[:, 0]}
    assert_close(fused(x), want)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return x + self.fc(x)


@pytest.mark.parametrize("model, reason", [
    (Residual(), "not a chain at node 'fc' (call_module fc): 'x' is read by 2 nodes (fc, add)"),
    (nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 8)), "node '_1' (call_module 1) is not supported"),
])
def test_unsupported_graphs_fall_back_with_a_reason(model, reason):
    deepzip.prune(model, sparsity=0.5)
    x = torch.randn(1, 8)
    with torch.no_grad():
        want = model(x)
    fast = runtime.convert(copy.deepcopy(model), example=x)  # fuse="auto": the per-layer model
    assert not isinstance(fast, FusedModel)
    info = runtime.fusion(fast)
    assert not info["fused"] and "not a chain the compiler runs" in info["reason"] and reason in info["reason"]
    assert_close(fast(x), want)
    with pytest.raises(Unsupported, match=re.escape(reason)):
        runtime.convert(copy.deepcopy(model), example=x, fuse="on")


def test_fuse_option_is_checked_and_needs_an_example():
    model = nn.Sequential(nn.Linear(8, 4))
    deepzip.prune(model, sparsity=0.5)
    with pytest.raises(ValueError, match="fuse must be one of auto, on, off, got 'yes'"):
        runtime.convert(copy.deepcopy(model), example=torch.randn(1, 8), fuse="yes")
    with pytest.raises(ValueError, match="fuse='on' needs an example input"):
        runtime.convert(copy.deepcopy(model), fuse="on")
    assert runtime.fusion(runtime.convert(copy.deepcopy(model)))["reason"].startswith("no example input")
    off = runtime.convert(copy.deepcopy(model), example=torch.randn(1, 8), fuse="off")
    assert runtime.fusion(off) == {"fused": False, "reason": "fuse='off'"}


@pytest.mark.parametrize("chain_wins", [True, False])
def test_the_chain_is_kept_only_when_it_wins_every_round(monkeypatch, chain_wins):
    convert_module = importlib.import_module("deepzip.runtime.convert")
    real = convert_module._time_both

    def scripted(first, second, repeats=30):
        real(first, second, repeats=2)  # still run both
        return (1.0, 2.0) if chain_wins else (2.0, 2.0)

    monkeypatch.setattr(convert_module, "_time_both", scripted)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    deepzip.prune(model, sparsity=0.5)
    fast = runtime.convert(model, example=torch.randn(1, 8), mode="sparse")
    info = runtime.fusion(fast)
    assert isinstance(fast, FusedModel) == chain_wins == info["fused"]
    assert info["chain_s"] == (1.0 if chain_wins else 2.0) and info["layers_s"] == 2.0
    if not chain_wins:
        assert fast is model and "not faster" in info["reason"]


def test_fused_model_calls_are_independent_and_it_copies():
    model = pruned_quantized("lenet300_100")
    x, y = torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28)
    fused = runtime.convert(copy.deepcopy(model), example=x, fuse="on")
    first = fused(x)
    fused(y)  # the arena is reused; the returned tensors are not
    with torch.no_grad():
        assert_close(first, model(x))
        assert_close(fused(x.clone().requires_grad_()), model(x))  # through the per-layer model
    twin = copy.deepcopy(fused)
    assert torch.equal(twin(y), fused(y)) and twin.chain.arena is not fused.chain.arena


def test_auto_does_not_fuse_a_single_weight_layer():
    """A chain of one layer saves no calls between layers; its timing win could only be noise."""
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
    deepzip.prune(model, sparsity=0.9)
    fast = runtime.convert(model, example=torch.randn(1, 32))
    assert not runtime.fusion(fast)["fused"] and "nothing to fuse" in runtime.fusion(fast)["reason"]
