"""The pretrained-model stages on CUDA beside the CPU: calibration statistics, Wanda / SparseGPT, weighted
per-row k-means with outliers, distillation, and the .dz of a CUDA model. Marked ``gpu``; skipped without one."""

import copy

import pytest
import torch

import deepzip
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.calibrate import input_statistics
from deepzip.prune.configs import SparseGPT, Wanda
from deepzip.quantize.configs import WeightedKMeans

from ..calibrate.conftest import tiny_bert, token_batches

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def on_cuda(batches):
    return [{k: v.cuda() for k, v in batch.items()} for batch in batches]


def test_calibration_statistics_agree_with_the_cpu():
    cpu, batches = tiny_bert(), token_batches()
    cuda = copy.deepcopy(cpu).cuda()
    expected, got = input_statistics(cpu, batches), input_statistics(cuda, on_cuda(batches), gram=True)
    assert set(expected) == set(got)
    for name, stats in expected.items():
        assert torch.allclose(stats.sq_norm, got[name].sq_norm.cpu(), rtol=1e-4), name
        assert stats.count == got[name].count


@pytest.mark.parametrize("config", [Wanda(sparsity=0.5), SparseGPT(sparsity=0.5), Wanda(n=2, m=4)])
def test_calibrated_pruning_on_cuda_keeps_the_exact_counts(config):
    cpu, batches = tiny_bert(), token_batches()
    cuda = copy.deepcopy(cpu).cuda()
    P.prune(cpu, config, calibration=batches, progress=False)
    P.prune(cuda, config, calibration=on_cuda(batches), progress=False)
    cpu_masks, cuda_masks = P.get_masks(cpu), P.get_masks(cuda)
    assert set(cpu_masks) == set(cuda_masks) and cpu_masks
    agree = [float((cpu_masks[n] == cuda_masks[n].cpu()).float().mean()) for n in cpu_masks]
    for name, mask in cuda_masks.items():
        assert mask.is_cuda and int(mask.sum()) == int(cpu_masks[name].sum()), name  # exact counts on both
    assert min(agree) > 0.97  # ties and float order differ on the GPU; the chosen positions barely do


def test_weighted_per_row_kmeans_with_outliers_on_cuda_and_its_file(tmp_path):
    model, batches = tiny_bert(), token_batches()
    cuda = copy.deepcopy(model).cuda()
    stats = input_statistics(cuda, on_cuda(batches))
    config = WeightedKMeans(bits=3, importance="calibration", outliers=0.01)
    Q.quantize(cuda, config, sensitivity=stats)
    codebook, index = next(iter(Q.codebooks(cuda).values()))
    assert codebook.is_cuda and index.is_cuda
    deepzip.save(cuda, tmp_path / "cuda.dz")
    fresh = deepzip.load(tmp_path / "cuda.dz", model=tiny_bert(seed=5))
    ids = batches[0]["input_ids"]
    with torch.no_grad():
        expected = cuda(input_ids=ids.cuda()).last_hidden_state.cpu()
        got = fresh(input_ids=ids).last_hidden_state
    assert torch.allclose(expected, got, atol=1e-4)
    # the same file from a CPU copy of the CUDA model: bit-identical
    deepzip.save(copy.deepcopy(cuda).cpu(), tmp_path / "cpu.dz")
    assert (tmp_path / "cpu.dz").read_bytes() == (tmp_path / "cuda.dz").read_bytes()


def test_distillation_on_cuda_keeps_masks_and_lowers_the_loss():
    from deepzip.train import distill

    teacher = tiny_bert().cuda()
    student = copy.deepcopy(teacher)
    P.prune(student, Wanda(sparsity=0.6), calibration=on_cuda(token_batches(count=2)), progress=False)
    result = distill(student, teacher, on_cuda(token_batches(count=6)), steps=40, lr=3e-3, loss="mse",
                     target="hidden", progress=False)
    assert result.last < 0.7 * result.first, (result.first, result.last)
    for name, mask in P.get_masks(student).items():
        module, param = name.rsplit(".", 1)
        assert getattr(student.get_submodule(module), param)[~mask].eq(0).all()
