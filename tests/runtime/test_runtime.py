import copy
import importlib

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import models, runtime
from deepzip import prune as P
from deepzip.runtime.convert import SPARSE_MARGIN
from deepzip.runtime import SparseConv2d, SparseLinear, SparseMatrix, kernels


def close(a, b):
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))


def sparse_weight(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    return w * (torch.rand(shape, generator=g) < density)


@pytest.mark.parametrize("shape, density", [((7, 13), 0.3), ((300, 784), 0.08), ((5, 4), 1.0), ((6, 9), 0.0),
                                            ((1, 70_000), 0.01)])
@pytest.mark.parametrize("batch", [1, 5])
def test_linear_matches_dense(shape, density, batch):
    w = sparse_weight(shape, density)
    w[0] = 0  # an empty row
    bias = torch.randn(shape[0])
    layer = SparseLinear(SparseMatrix.from_dense(w), bias)
    x = torch.randn(batch, shape[1])
    close(layer(x), F.linear(x, w, bias))
    assert layer.matrix.cols.dtype == (np.uint16 if shape[1] <= 65536 else np.int32)
    close(layer(x.reshape(batch, 1, shape[1])), F.linear(x, w, bias).reshape(batch, 1, -1))  # leading dims


@pytest.mark.parametrize("k", [4, 300])
def test_codebook_codes(k):
    codebook = torch.randn(k)
    index = torch.randint(0, k, (20, 30))
    mask = torch.rand(20, 30) < 0.4
    w = torch.where(mask, codebook[index], torch.zeros(()))
    matrix = SparseMatrix.from_dense(w, codebook, index, mask)
    assert matrix.codes.dtype == (np.uint8 if k <= 256 else np.uint16) and matrix.values is None
    layer = SparseLinear(matrix, None)
    for batch in (1, 3):
        x = torch.randn(batch, 30)
        close(layer(x), x @ w.T)
    assert torch.equal(matrix.to_dense(), w)
    nnz = int(mask.sum())
    code_bytes = 1 if k <= 256 else 2
    # int32 row pointers + uint16 columns + codes + fp32 codebook; no fp32 value per weight
    assert matrix.nbytes() == 4 * 21 + 2 * nnz + code_bytes * nnz + 4 * k
    assert k > 256 or matrix.nbytes() < 4 * w.numel()


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2)])
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_matches_dense(stride, padding, dilation, batch):
    conv = nn.Conv2d(5, 7, (3, 2), stride, padding, dilation)
    with torch.no_grad():
        conv.weight.copy_(sparse_weight(conv.weight.shape, 0.3))
        conv.weight[2] = 0  # an empty filter
    layer = SparseConv2d(SparseMatrix.from_dense(conv.weight), conv.bias, conv)
    x = torch.randn(batch, 5, 11, 9)
    close(layer(x), conv(x))


def test_parallel_kernel_equals_single_thread():
    w = sparse_weight((500, 400), 0.2)
    indptr, cols, positions = kernels.to_csr(w.numpy())
    values = w.numpy().reshape(-1)[positions]
    x = np.random.default_rng(0).standard_normal(400).astype(np.float32)
    one, two = np.empty(500, np.float32), np.empty(500, np.float32)
    kernels.csr_mv(indptr, cols, values, x, np.zeros(0, np.float32), one, 0)
    chunks = kernels.row_chunks(indptr, 3)
    assert chunks[0] == 0 and chunks[-1] == 500 and (np.diff(chunks) >= 0).all()
    kernels.csr_mv_parallel(indptr, cols, values, x, np.zeros(0, np.float32), two, 0, chunks)
    assert np.array_equal(one, two)  # each row is summed in the same order by one thread


@pytest.mark.parametrize("ahead", [1, 64, kernels.PREFETCH_AHEAD, 10**6])
def test_prefetching_changes_no_result(ahead):
    from deepzip.runtime import prefetch

    assert prefetch.works()  # the intrinsic compiles here: kernels really issue hints

    @numba.njit
    def reads_ahead(array):
        prefetch.prefetch(array, 1)
        return array[0]

    assert reads_ahead(np.ones(2, np.float32)) == 1.0
    assert "call void @llvm.prefetch" in next(iter(reads_ahead.inspect_llvm().values()))
    w = sparse_weight((300, 700), 0.1)
    codebook, index = torch.linspace(-1, 1, 16), torch.randint(0, 16, w.shape)
    for matrix in (SparseMatrix.from_dense(w), SparseMatrix.from_dense(w, codebook, index, w != 0)):
        x = np.random.default_rng(0).standard_normal(700).astype(np.float32)
        bias = np.arange(300, dtype=np.float32)
        expected = matrix.matvec(x, bias)
        matrix.prefetch_ahead = ahead  # hints up to and past the end of the arrays
        assert np.array_equal(matrix.matvec(x, bias), expected)
        two = np.empty(300, np.float32)
        if matrix.codes is None:  # each thread hints ahead within and past its own block of rows
            kernels.csr_mv_parallel(matrix.indptr, matrix.cols, matrix.values, x, bias, two, ahead,
                                    kernels.row_chunks(matrix.indptr, 3))
        else:
            kernels.csr_mv_coded_parallel(matrix.indptr, matrix.cols, matrix.codes, matrix.codebook, x, bias, two,
                                          ahead, kernels.row_chunks(matrix.indptr, 3))
        assert np.array_equal(two, expected)


@pytest.mark.parametrize("ahead", [8, kernels.MM_PREFETCH_AHEAD, 10**6])
def test_batched_prefetching_changes_no_result(ahead):
    w = sparse_weight((300, 700), 0.1)
    codebook, index = torch.linspace(-1, 1, 16), torch.randint(0, 16, w.shape)
    xt = np.random.default_rng(0).standard_normal((700, 32)).astype(np.float32)
    for matrix in (SparseMatrix.from_dense(w), SparseMatrix.from_dense(w, codebook, index, w != 0)):
        plain, hinted = np.empty((300, 32), np.float32), np.empty((300, 32), np.float32)
        if matrix.codes is None:
            kernels.csr_mm(matrix.indptr, matrix.cols, matrix.values, xt, plain)
            kernels.csr_mm(matrix.indptr, matrix.cols, matrix.values, xt, hinted, ahead)  # up to and past the end
        else:
            kernels.csr_mm_coded(matrix.indptr, matrix.cols, matrix.codes, matrix.codebook, xt, plain)
            kernels.csr_mm_coded(matrix.indptr, matrix.cols, matrix.codes, matrix.codebook, xt, hinted, ahead)
        assert np.array_equal(plain, hinted)
        close(torch.from_numpy(plain), matrix.to_dense() @ torch.from_numpy(xt))
    assert kernels.mm_ahead(xt) == 0 and kernels.mm_ahead(np.empty((9216, 32), np.float32)) == kernels.MM_PREFETCH_AHEAD


def test_only_large_layers_prefetch():
    small = SparseMatrix.from_dense(sparse_weight((300, 784), 0.07))
    large = SparseMatrix.from_dense(sparse_weight((1000, 2000), 0.1))
    assert small.prefetch_ahead == 0 and large.prefetch_ahead == kernels.PREFETCH_AHEAD


def pruned_quantized(name):
    model = models.build(name, seed=0)
    deepzip.prune(model, sparsity=0.9)
    deepzip.quantize(model, bits={"conv": 8, "fc": 5})
    return model


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5"])
@pytest.mark.parametrize("mode", ["sparse", "auto", "dense"])
def test_convert_and_load_match_the_model(name, mode, tmp_path):
    model = pruned_quantized(name)
    x = torch.randn(1, 1, 28, 28)
    expected = model(x)
    deepzip.save(model, tmp_path / "m.dz")
    fast = runtime.convert(copy.deepcopy(model), example=x, mode=mode)
    close(fast(x), expected)
    loaded = runtime.load(tmp_path / "m.dz", models.from_description, example=x, mode=mode)
    close(loaded(x), expected)
    batch = torch.randn(4, 1, 28, 28)
    close(loaded(batch), model(batch))
    for made in (fast, loaded):
        decisions = runtime.decisions(made)
        assert [d["layer"] for d in decisions] == [n[: -len(".weight")] for n in P.get_masks(model)]
        per_layer = made.model if isinstance(made, runtime.FusedModel) else made  # fuse="auto" may compile a chain
        assert runtime.fusion(made)["fused"] == (per_layer is not made)
        for d in decisions:  # what the model runs is what the decisions say
            layer = per_layer.get_submodule(d["layer"])
            assert isinstance(layer, (SparseLinear, SparseConv2d)) == (d["kernel"] == "sparse")
            if mode != "auto":
                assert d["kernel"] == mode
            else:  # calibrated: sparse only where it won every round by the margin, in this very model
                assert ("model_sparse_s" in d and "model_dense_s" in d) or "group_s" in d or d["kernel"] == "dense"
                if d["kernel"] == "sparse" and "group_s" not in d:
                    assert d["model_sparse_s"] < SPARSE_MARGIN * d["model_dense_s"]
                    assert d["whole_model_s"][0] < SPARSE_MARGIN * d["whole_model_s"][1]
    if mode == "sparse":  # straight from the file: no dense fp32 weight in any sparse layer
        for module in (loaded.model if isinstance(loaded, runtime.FusedModel) else loaded).modules():
            if isinstance(module, (SparseLinear, SparseConv2d)):
                assert not hasattr(module, "weight") and module.matrix.codes.dtype == np.uint8


def test_auto_without_an_example_follows_the_density_rule():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    deepzip.prune(model, method="fraction", layer_sparsity={"0": 0.9, "2": 0.5})
    runtime.convert(model)
    assert [(d["layer"], round(d["density"], 2), d["kernel"]) for d in runtime.decisions(model)] == [
        ("0", 0.1, "sparse"), ("2", 0.5, "dense")]
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], nn.Linear) and not model.training


def test_runtime_load_needs_a_model_or_builder(tmp_path):
    layer = nn.Sequential(nn.Linear(4, 3))
    deepzip.prune(layer, sparsity=0.5)
    deepzip.save(layer, tmp_path / "x.dz")
    with pytest.raises(TypeError, match="pass model="):
        runtime.load(tmp_path / "x.dz", None)
    with pytest.raises(ValueError, match="records no registry model"):
        runtime.load(tmp_path / "x.dz", models.from_description)
    fresh = runtime.load(tmp_path / "x.dz", nn.Sequential(nn.Linear(4, 3)), mode="sparse")
    close(fresh(torch.ones(1, 4)), layer(torch.ones(1, 4)))
    with pytest.raises(ValueError, match="mode must be one of auto, sparse, codes, dense"):
        runtime.convert(layer, mode="fast")
    with pytest.raises(ValueError, match="not made by deepzip.runtime"):
        runtime.decisions(layer)


def test_a_failed_convert_leaves_the_model_as_it_was(monkeypatch):
    convert_module = importlib.import_module("deepzip.runtime.convert")
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4)).train()
    deepzip.prune(model, sparsity=0.5)
    before = copy.deepcopy(model.state_dict())

    def broken(*args):
        raise RuntimeError("timer broke")

    monkeypatch.setattr(convert_module, "_calibrate_in_model", broken)
    with pytest.raises(RuntimeError, match="timer broke"):
        runtime.convert(model, example=torch.randn(1, 8))
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in model) and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and set(before) == set(model.state_dict())


def test_batch1_fast_path_and_its_fallbacks_agree_with_dense():
    w = sparse_weight((40, 64), 0.2)
    bias = torch.randn(40)
    layer = SparseLinear(SparseMatrix.from_dense(w), bias)
    reference = lambda x: F.linear(x.float(), w, bias)  # noqa: E731
    x = torch.randn(1, 64)
    out = layer(x)
    assert out.shape == (1, 40) and out.dtype == torch.float32
    close(out, reference(x))
    close(layer(x.clone().requires_grad_()), reference(x))  # detached, not an error
    close(layer(x.double()), reference(x))  # other dtypes are converted
    wide = torch.randn(1, 128)
    close(layer(wide[:, ::2]), reference(wide[:, ::2]))  # a strided view is copied, not misread
    close(layer(x[0]), reference(x)[0])  # a plain vector
    # each call gets its own output: an earlier result is not overwritten by the next call
    first = layer(x)
    layer(torch.randn(1, 64))
    close(first, reference(x))


@pytest.mark.parametrize("rounds, kernel", [
    ([(1.0, 2.0)] * 3, "sparse"),                       # sparse clearly faster in every round
    ([(1.0, 2.0), (1.0, 2.0), (2.1, 2.0)], "dense"),    # one round lost: not kept
    ([(0.995, 1.0)] * 3, "dense"),                      # faster, but inside the 1% margin
])
def test_calibration_keeps_sparse_only_if_it_wins_every_round(monkeypatch, rounds, kernel):
    convert_module = importlib.import_module("deepzip.runtime.convert")  # the module, not the function

    def scripted(model, sparse, dense, example):
        return rounds

    monkeypatch.setattr(convert_module, "_calibrate_in_model", scripted)
    model = nn.Sequential(nn.Linear(8, 4))
    deepzip.prune(model, sparsity=0.5)
    fast = runtime.convert(model, example=torch.randn(1, 8), fuse="off")  # the per-layer choice alone
    decisions = runtime.decisions(fast)
    assert decisions[0]["kernel"] == kernel
    assert decisions[0]["model_sparse_s"] == np.median([s for s, _ in rounds])
    assert isinstance(fast[0], SparseLinear if kernel == "sparse" else nn.Linear)


def test_calibration_falls_back_to_dense_if_the_chosen_model_is_not_faster(monkeypatch):
    convert_module = importlib.import_module("deepzip.runtime.convert")

    def scripted(model, sparse, dense, example):  # each layer wins alone, the two together do not
        return [(1.0, 2.0)] * 3 if len(sparse) == 1 else [(2.0, 2.0)] * 3

    monkeypatch.setattr(convert_module, "_calibrate_in_model", scripted)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    deepzip.prune(model, sparsity=0.5)
    x = torch.randn(1, 8)
    expected = model(x)
    fast = runtime.convert(model, example=x, fuse="off")
    decisions = runtime.decisions(fast)
    assert fast is model and [d["kernel"] for d in decisions] == ["dense", "dense"]
    assert all(d["whole_model_s"] == [2.0, 2.0] for d in decisions)
    close(fast(x), expected)


def test_compare_models_reports_the_noise_floor_with_a_control():
    from deepzip.runtime.timing import compare_models

    model = nn.Sequential(nn.Linear(8, 4)).eval()
    x = torch.randn(1, 8)
    plain = compare_models(model, model, x, repeats=20)
    assert set(plain) == {"deepzip", "dense", "speedup"}
    timed = compare_models(model, model, x, repeats=20, control=copy.deepcopy(model))
    assert set(timed) == {"deepzip", "dense", "speedup", "noise"} and timed["noise"] > 0


@pytest.mark.parametrize("group_wins", [True, False])
def test_small_layers_faster_alone_are_raced_together(monkeypatch, group_wins):
    """30 layers of ~3% of the model each: none is raced alone; the ones faster alone go or stay together,
    then the near ties."""
    convert_module = importlib.import_module("deepzip.runtime.convert")
    raced = []

    def alone(options, x):  # layer 3 is slower sparse alone: never in a group; 4 ties dense: the second group
        # dense: each layer 2 of the 60 all the layers take dense
        sparse = {id(layers[3]): 3.0, id(layers[4]): 2.02}.get(id(options["sparse"]), 1.0)
        return {"sparse": sparse, "dense": 2.0}

    def in_model(model, sparse, dense, example):
        raced.append(sorted(sparse))
        return [(1.0, 2.0) if group_wins else (2.0, 2.0)] * 3

    monkeypatch.setattr(convert_module, "_calibrate", alone)
    monkeypatch.setattr(convert_module, "_calibrate_in_model", in_model)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(30)])
    deepzip.prune(model, sparsity=0.5)
    layers = {}
    original = convert_module.build_sparse
    monkeypatch.setattr(convert_module, "build_sparse", lambda module, *a: layers.setdefault(
        next(i for i, m in enumerate(model) if m is module), original(module, *a)))
    fast = runtime.convert(model, example=torch.randn(1, 8), fuse="off")
    decisions = runtime.decisions(fast)
    first = [str(i) for i in range(30) if i not in (3, 4)]
    assert raced[0] == sorted(first) and raced[1] == ["4"]  # the faster group, then the near tie
    assert len(raced) == (3 if group_wins else 2)  # then the whole-model check, when something was kept
    assert [d["kernel"] for d in decisions] == [("sparse" if group_wins else "dense") if i != 3 else "dense"
                                                for i in range(30)]
    assert all("model_sparse_s" not in d for d in decisions)
