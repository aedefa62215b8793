"""Every stage on CUDA, and CPU vs CUDA agreement. Marked ``gpu``: run where CUDA is present
(`pytest -m gpu`); skipped elsewhere. CI has no GPU; benchmarks/results/gpu.md says where they last ran."""

import copy

import pytest
import torch

import deepzip
from deepzip import models
from deepzip import prune as P
from deepzip import quantize as Q

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def lenet5(seed=0):
    return models.build("lenet5", seed=seed)


@pytest.mark.parametrize("method", ["global", "uniform", "erk", "nm", "structured", "random"])
def test_pruning_on_cuda_gives_the_cpus_masks(method):
    cpu = lenet5()
    cuda = copy.deepcopy(cpu).cuda()
    options = {"nm": {}, "random": {"sparsity": 0.8, "seed": 1}}.get(method, {"sparsity": 0.8})
    P.prune(cpu, method=method, **options)
    P.prune(cuda, method=method, **options)
    for name, mask in P.get_masks(cpu).items():
        assert torch.equal(mask, P.get_masks(cuda)[name].cpu()), name


def test_quantize_on_cuda_gives_the_cpus_codebooks_and_the_same_file(tmp_path):
    cpu = lenet5()
    P.prune(cpu, 0.9)
    cuda = copy.deepcopy(cpu).cuda()
    Q.quantize(cpu, {"conv": 8, "fc": 5})
    Q.quantize(cuda, {"conv": 8, "fc": 5})
    for name, (codebook, index) in Q.codebooks(cpu).items():
        cuda_codebook, cuda_index = Q.codebooks(cuda)[name]
        assert cuda_codebook.is_cuda and cuda_index.is_cuda
        assert torch.equal(codebook, cuda_codebook.cpu()) and torch.equal(index, cuda_index.cpu())
    deepzip.save(cpu, tmp_path / "cpu.dz")
    deepzip.save(cuda, tmp_path / "cuda.dz")
    assert (tmp_path / "cpu.dz").read_bytes() == (tmp_path / "cuda.dz").read_bytes()


def test_training_a_compressed_model_on_cuda_keeps_masks_and_codebooks():
    model = lenet5()
    P.prune(model, 0.8)
    Q.quantize(model, 4)
    model = model.cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 28, 28, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model(x)
    for name, mask in P.get_masks(model).items():
        module, param = name.rsplit(".", 1)
        assert getattr(model.get_submodule(module), param)[~mask].eq(0).all()


def test_load_into_a_cuda_model_and_runtime_refuses_cuda(tmp_path):
    model = lenet5()
    P.prune(model, 0.9)
    deepzip.save(model, tmp_path / "m.dz")
    fresh = deepzip.load(tmp_path / "m.dz", model=lenet5(seed=3).cuda())
    assert next(fresh.parameters()).is_cuda
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(fresh(x.cuda()).cpu(), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="CPU inference runtime; convert a CPU copy"):
        deepzip.runtime.convert(fresh)


def test_training_on_cuda_repeats_and_agrees_with_the_cpu(digits, tmp_path):
    from deepzip.train import TrainConfig, train

    cfg = TrainConfig(model="lenet300_100", dataset="digits", epochs=2, batch_size=32, val_size=300)
    results = []
    for run in range(2):
        model = models.build("lenet300_100", (1, 8, 8), 10, seed=0)
        results.append(train(model, digits, replace_device(cfg, "cuda"), progress=False).final)
        results[-1]["weights"] = [p.detach().cpu() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(results[0]["weights"], results[1]["weights"]))  # deterministic
    cpu_model = models.build("lenet300_100", (1, 8, 8), 10, seed=0)
    cpu = train(cpu_model, digits, cfg, progress=False).final
    assert abs(cpu["test_acc"] - results[0]["test_acc"]) < 0.03  # same recipe, different kernels


def test_bf16_training_on_cuda(digits):
    from deepzip.train import TrainConfig, train

    model = models.build("lenet300_100", (1, 8, 8), 10, seed=0)
    cfg = TrainConfig(model="lenet300_100", dataset="digits", epochs=2, batch_size=32, val_size=300, device="cuda",
                      amp="bf16")
    assert train(model, digits, cfg, progress=False).final["test_acc"] > 0.8


def test_lottery_level_and_compression_pipeline_on_cuda(digits, tmp_path):
    from deepzip.lottery import Experiment, LotteryConfig
    from deepzip.pipeline import compress
    from deepzip.train import PruneConfig, QuantizeConfig, TrainConfig

    cfg = TrainConfig(model="lenet300_100", dataset="digits", epochs=2, batch_size=32, val_size=300, device="cuda")
    experiment = Experiment(tmp_path / "lottery", cfg, LotteryConfig(levels=1, replicates=1, controls=""), digits,
                            progress=False)
    experiment.run()
    assert all(experiment.done(*s) for s in experiment.steps())
    report = compress(cfg, PruneConfig(sparsity=0.8, steps=1, retrain_epochs=1),
                      QuantizeConfig(bits_fc=4, finetune_epochs=1), tmp_path / "runs", splits=digits, progress=False)
    assert report["accuracy"]["decoded"] > 0.8 and report["compression"] > 10


def replace_device(cfg, device):
    import dataclasses

    return dataclasses.replace(cfg, device=device)
