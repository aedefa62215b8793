"""The Triton kernels and GPU layers against dense torch: on CUDA where present, else through Triton's
interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 without a GPU). Skipped without Triton."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import models, runtime
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.runtime import SparseMatrix, gpu, gpu_layers
from deepzip.runtime import triton_kernels as tk

from .conftest import DEVICE, small_model

pytest.importorskip("triton")


def close(a, b, tol=1e-5):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.allclose(a.float(), b.float(), rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def coded_layer(rows, width, density, k=256, seed=0):
    """(weight, SparseMatrix with codes) for a pruned, weight-shared layer; row 0 left empty."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, width, generator=g) < density
    mask[0] = False
    codebook, index = torch.randn(k, generator=g), torch.randint(0, k, (rows, width), generator=g)
    weight = torch.where(mask, codebook[index], torch.zeros(()))
    return weight, SparseMatrix.from_dense(weight, codebook, index, mask)


def on_device(matrix):
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(DEVICE)  # noqa: E731
    return t(matrix.indptr), t(matrix.cols)


@pytest.mark.parametrize("batch", [1, 3, 17])
@pytest.mark.parametrize("with_bias", [True, False])
def test_csr_kernel_with_codes_matches_dense(batch, with_bias):
    weight, matrix = coded_layer(37, 70, 0.3)
    indptr, cols = on_device(matrix)
    assert cols.dtype == torch.uint16 and matrix.codes.dtype == np.uint8
    x = torch.randn(batch, 70)
    bias = torch.randn(37) if with_bias else None
    y = tk.csr_matmul(indptr, cols, torch.from_numpy(matrix.codes).to(DEVICE),
                      torch.from_numpy(matrix.codebook).to(DEVICE), x.to(DEVICE),
                      None if bias is None else bias.to(DEVICE))
    close(y.cpu(), F.linear(x, weight, bias))
    assert y[:, 0].cpu().eq(0 if bias is None else bias[0]).all()  # the empty row


@pytest.mark.parametrize("values_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch", [1, 5])
def test_csr_kernel_with_values_and_half_inputs(values_dtype, batch):
    weight, matrix = coded_layer(20, 50, 0.4)
    values = torch.from_numpy(matrix.codebook[matrix.codes]).to(values_dtype)
    indptr, cols = on_device(matrix)
    x = torch.randn(batch, 50)
    y = tk.csr_matmul(indptr, cols, values.to(DEVICE), None, x.to(DEVICE))
    close(y.cpu(), F.linear(x, weight.to(values_dtype).float()), tol=1e-5)
    y16 = tk.csr_matmul(indptr, cols, values.to(DEVICE), None, x.half().to(DEVICE))  # output in x's dtype
    close(y16.cpu(), F.linear(x.half().float(), weight.to(values_dtype).float()).half(), tol=2e-3)


def test_csr_kernel_with_int32_columns_and_a_wide_matrix():
    weight = torch.zeros(3, 70_000)
    weight[1, [5, 65_536, 69_999]] = torch.tensor([1.0, 2.0, -3.0])
    matrix = SparseMatrix.from_dense(weight)
    assert matrix.cols.dtype == np.int32
    indptr, cols = on_device(matrix)
    x = torch.randn(1, 70_000)
    y = tk.csr_matmul(indptr, cols, torch.from_numpy(matrix.values).to(DEVICE), None, x.to(DEVICE))
    close(y.cpu(), F.linear(x, weight))


def entry_places(layout, rank, length):
    """Where sorted row ``rank``'s entries are, by `slice_rows`'s documented formula."""
    s = rank // tk.SLICE
    g = int(np.searchsorted(layout["group_first"], s, side="right")) - 1
    start = layout["group_offset"][g] + (s - layout["group_first"][g]) * tk.SLICE * layout["group_steps"][g]
    return start + np.arange(length) * tk.SLICE + rank % tk.SLICE


def test_slice_rows_sorts_rows_by_length_and_stores_each_slice_step_major():
    lengths = [3, 0, 5, 1] + [2] * 14 + [4]  # 19 rows: two slices of 16, the second part empty
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    cols = np.arange(indptr[-1], dtype=np.uint16)  # entry e of the CSR has column e: its place is traceable
    data = (np.arange(indptr[-1]) % 251).astype(np.uint8)
    layout = tk.slice_rows(indptr, cols, data)
    order = layout["order"]
    assert list(order[:3]) == [2, 18, 0] and order[-1] == 1  # longest first, the empty row last
    assert sorted(order) == list(range(19)) and list(layout["lengths"]) == [lengths[r] for r in order]
    # two slices (longest rows 5 and 2): a group each, padded to their own longest; the 6 unused groups
    # start past the last slice
    assert list(layout["group_first"]) == [0, 1] + [2] * 6
    assert list(layout["group_steps"]) == [5, 2] + [0] * 6 and list(layout["group_offset"][:2]) == [0, 5 * 16]
    assert layout["cols"].shape == (5 * 16 + 2 * 16,)
    assert layout["cols"].dtype == np.uint16 and layout["data"].dtype == np.uint8
    for rank, row in enumerate(order):  # every row's entries, in order, where the formula says
        places = entry_places(layout, rank, lengths[row])
        assert list(layout["cols"][places]) == list(range(indptr[row], indptr[row + 1]))
    assert np.count_nonzero(layout["cols"]) == indptr[-1] - 1  # the rest is zero padding (entry 0 has column 0)
    assert tk.group_args(layout) == (1, 2, 2, 2, 2, 2, 2, 5, 2, 0, 0, 0, 0, 0, 0)


def test_slice_groups_pad_little_on_a_random_mask():
    rng = np.random.default_rng(0)
    lengths = rng.binomial(4096, 0.09, 4096)  # AlexNet fc7's shape at 9% kept
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    cols = rng.integers(0, 4096, indptr[-1]).astype(np.uint16)
    layout = tk.slice_rows(indptr, cols, cols.astype(np.uint8))
    one_group = tk.slice_rows(indptr, cols, cols.astype(np.uint8), groups=1)
    assert layout["cols"].size < 1.02 * indptr[-1]  # 8 groups: 1.4% padding
    assert one_group["cols"].size > 1.15 * indptr[-1]  # one group (ELL): every row padded to the longest
    steps = layout["group_steps"]
    assert list(steps) == sorted(steps, reverse=True) and list(layout["group_first"]) == sorted(layout["group_first"])
    for rank in (0, 1000, 4095):
        row = layout["order"][rank]
        assert np.array_equal(layout["cols"][entry_places(layout, rank, lengths[row])], cols[indptr[row]:indptr[row + 1]])


def test_slice_rows_of_an_empty_matrix():
    layout = tk.slice_rows(np.zeros(1, dtype=np.int32), np.zeros(0, np.uint16), np.zeros(0, np.uint8))
    assert layout["cols"].size == 0 and layout["order"].size == 0 and list(layout["group_first"]) == [0] * 8


def sliced_on_device(matrix, data):
    layout = tk.slice_rows(matrix.indptr, matrix.cols, data)
    return [tk.group_args(layout)] + [torch.from_numpy(layout[k]).to(DEVICE) for k in ("lengths", "order", "cols", "data")]


@pytest.mark.parametrize("batch", [1, 3, 17])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sliced_kernel_with_codes_matches_dense(batch, with_bias):
    weight, matrix = coded_layer(37, 70, 0.3)  # 3 slices, the last one part empty; row 0 empty
    groups, lengths, order, cols, codes = sliced_on_device(matrix, matrix.codes)
    x = torch.randn(batch, 70)
    bias = torch.randn(37) if with_bias else None
    y = tk.sliced_matmul(groups, lengths, order, cols, codes, torch.from_numpy(matrix.codebook).to(DEVICE),
                         x.to(DEVICE), None if bias is None else bias.to(DEVICE))
    close(y.cpu(), F.linear(x, weight, bias))
    assert y[:, 0].cpu().eq(0 if bias is None else bias[0]).all()  # the empty row


def skewed_layer(rows=300, width=40, seed=0):
    """Row densities from 0 to 1: 19 slices of varied lengths, so groups hold several slices each."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, width, generator=g) < torch.rand(rows, 1, generator=g) ** 2
    codebook, index = torch.randn(256, generator=g), torch.randint(0, 256, (rows, width), generator=g)
    weight = torch.where(mask, codebook[index], torch.zeros(()))
    return weight, SparseMatrix.from_dense(weight, codebook, index, mask)


SLICED_CONFIGS = [("sliced_mv", c.kwargs) for c in tk._sliced_mv_tuned.configs] + \
                 [("sliced_mm", c.kwargs) for c in tk._sliced_mm_tuned.configs]


@pytest.mark.parametrize("name, config", SLICED_CONFIGS, ids=[f"{n}-{c}" for n, c in SLICED_CONFIGS])
def test_every_tuned_sliced_configuration_on_groups_of_several_slices(monkeypatch, name, config):
    """Every configuration the autotuner may pick on a GPU, run here (the interpreter runs one otherwise),
    on a layout whose groups span several slices: a wrong offset within or across groups is caught."""
    weight, matrix = skewed_layer()
    layout = tk.slice_rows(matrix.indptr, matrix.cols, matrix.codes)
    sizes = np.diff(np.append(layout["group_first"], -(-300 // tk.SLICE)))
    assert (sizes >= 2).sum() >= 2 and (sizes[1:] >= 2).any()  # a later group spans >= 2 slices
    assert tk.SLICE % config["BLOCK_R"] == 0 and tk.SLICE % config.get("BLOCK_B", 1) == 0  # `_transposed` pads to 16
    if DEVICE == "cpu":
        monkeypatch.setitem(tk._INTERPRETED, name, config)
    on = lambda k: torch.from_numpy(layout[k]).to(DEVICE)  # noqa: E731
    batch = 1 if name == "sliced_mv" else 17
    x, bias = torch.randn(batch, 40), torch.randn(300)
    y = tk.sliced_matmul(tk.group_args(layout), on("lengths"), on("order"), on("cols"), on("data"),
                         torch.from_numpy(matrix.codebook).to(DEVICE), x.to(DEVICE), bias.to(DEVICE))
    close(y.cpu(), F.linear(x, weight, bias))


def test_large_batches_run_in_chunks_a_grid_can_take(monkeypatch):
    """CUDA caps a grid's batch axis (65,535 blocks) and the kernels index in int32: a batch past a chunk
    (here the chunk made 16 rows) runs in several launches, each on its rows, for every batched kernel."""
    monkeypatch.setattr(tk, "MAX_BATCH_CHUNK", 16)
    weight, matrix = coded_layer(37, 70, 0.3, k=15)  # (15 values + the pruned 0.0: dense codes too)
    x, bias = torch.randn(40, 70), torch.randn(37)
    want = F.linear(x, weight, bias)
    chunks = list(tk._batch_chunks(x, torch.empty(40, 37)))
    assert [c[0].shape[0] for c in chunks] == [16, 16, 8]
    groups, lengths, order, cols, codes = sliced_on_device(matrix, matrix.codes)
    book, on = torch.from_numpy(matrix.codebook).to(DEVICE), (lambda t: t.to(DEVICE))  # noqa: E731
    close(tk.sliced_matmul(groups, lengths, order, cols, codes, book, on(x), on(bias)).cpu(), want)
    indptr, csr_cols = on_device(matrix)
    close(tk.csr_matmul(indptr, csr_cols, on(torch.from_numpy(matrix.codes)), book, on(x), on(bias)).cpu(), want)
    dense_codes = gpu_layers.GpuCodes(matrix, DEVICE)
    close(dense_codes.matmul(on(x), on(bias)).cpu(), want)


@pytest.mark.parametrize("batch", [1, 5])
def test_sliced_kernel_with_half_values_and_inputs(batch):
    weight, matrix = coded_layer(20, 50, 0.4)
    values = matrix.codebook[matrix.codes].astype(np.float16)
    groups, lengths, order, cols, data = sliced_on_device(matrix, values)
    x = torch.randn(batch, 50)
    y16 = tk.sliced_matmul(groups, lengths, order, cols, data, None, x.half().to(DEVICE))
    assert y16.dtype == torch.float16
    close(y16.cpu(), F.linear(x.half().float(), weight.half().float()).half(), tol=2e-3)


@pytest.mark.parametrize("levels, bits", [(2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8), (256, 8), (257, 0)])
def test_packed_bits(levels, bits):
    assert tk.packed_bits(levels) == bits


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("batch", [1, 17])
def test_dense_codes_kernel_matches_dense(bits, batch):
    rows, width = 21, 53  # a width no multiple of the codes per byte
    g = torch.Generator().manual_seed(bits)
    codebook, codes = torch.randn(1 << bits, generator=g), torch.randint(0, 1 << bits, (rows, width), generator=g)
    packed = tk.pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (rows, 16 * -(-width // (8 // bits) // 16))
    assert torch.equal(tk.unpack_codes(packed, bits, width), codes)
    x, bias = torch.randn(batch, width), torch.randn(rows)
    y = tk.codes_matmul(packed.to(DEVICE), bits, width, codebook.to(DEVICE), x.to(DEVICE), bias.to(DEVICE))
    close(y.cpu(), F.linear(x, codebook[codes], bias))


def test_pack_codes_refuses_other_widths():
    with pytest.raises(ValueError, match=r"bits must be one of \(1, 2, 4, 8\)"):
        tk.pack_codes(torch.zeros(2, 2, dtype=torch.int64), 3)


@pytest.mark.parametrize("kind", ["csr", "sliced", "codes"])
@pytest.mark.parametrize("batch", [1, 4])
def test_gpu_linear_from_a_pruned_weight_shared_matrix(kind, batch):
    weight, matrix = coded_layer(30, 40, 0.5, k=15)
    bias = torch.randn(30)
    layer = gpu_layers.build(kind, matrix, bias, nn.Linear(40, 30), DEVICE)
    x = torch.randn(batch, 2, 40)  # leading dims kept
    close(layer(x.to(DEVICE)).cpu(), F.linear(x, weight, bias))
    if kind == "codes":  # 15 centroids + the pruned entries' 0.0: 4-bit codes, 1/8 of fp32's bytes and less
        assert layer.weight.bits == 4 and layer.weight.nbytes() == 30 * 32 + 16 * 4
    elif kind == "sliced":  # the same codes and columns, padded to each slice's longest row, + 8 bytes a row
        padded = layer.weight.data.numel()
        assert padded >= matrix.nnz and layer.weight.nbytes() == 30 * 8 + padded * 3 + 15 * 4
    else:
        assert layer.weight.nbytes() == matrix.nbytes()


def test_a_sliced_layer_keeps_its_groups_through_deepcopy_and_state_dict():
    weight, matrix = coded_layer(40, 30, 0.4)
    layer = gpu_layers.build("sliced", matrix, None, nn.Linear(30, 40), DEVICE)
    groups = layer.weight.groups
    assert len(groups) == 15 and groups[-8] > 0  # groups 1-7's first slices, then 8 steps
    twin = copy.deepcopy(layer)
    twin.weight.groups = (0,) * 15
    twin.load_state_dict(layer.state_dict())
    assert twin.weight.groups == groups
    x = torch.randn(2, 30)
    close(twin(x.to(DEVICE)).cpu(), F.linear(x, weight))


def test_dense_codes_need_a_small_codebook():
    _, matrix = coded_layer(4, 8, 0.5, k=256)  # 256 centroids + 0.0 for the pruned ones: 9 bits
    assert gpu_layers.kinds_for(matrix) == ["csr", "sliced"]
    with pytest.raises(ValueError, match="at most 256 entries"):
        gpu_layers.GpuCodes(matrix, DEVICE)


@pytest.mark.parametrize("kind", ["csr", "sliced", "codes"])
def test_gpu_conv2d_matches_conv2d(kind):
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
    g = torch.Generator().manual_seed(0)
    codebook, index = torch.randn(7, generator=g), torch.randint(0, 7, conv.weight.shape, generator=g)
    mask = torch.rand(conv.weight.shape, generator=g) < 0.5
    weight = torch.where(mask, codebook[index], torch.zeros(()))
    matrix = SparseMatrix.from_dense(weight, codebook, index, mask)
    layer = gpu_layers.build(kind, matrix, conv.bias, conv, DEVICE)
    x = torch.randn(2, 3, 9, 7)
    close(layer(x.to(DEVICE)).cpu(), F.conv2d(x, weight, conv.bias, 2, 1))






@pytest.mark.parametrize("mode, kinds", [("sparse", ["csr", "csr", "codes"]), ("dense", ["dense"] * 3),
                                         ("auto", ["csr", "csr", "codes"])])
def test_convert_on_the_gpu_keeps_the_output(gpu_here, mode, kinds):
    model = small_model()
    x = torch.randn(3, 24)
    expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode=mode, device="cuda")
    close(fast(x.to(DEVICE)).cpu(), expected, tol=1e-4)
    assert [d["kernel"] for d in runtime.decisions(fast)] == kinds
    for d in runtime.decisions(fast):
        layer = fast.get_submodule(d["layer"])
        assert d["gpu_bytes"] == (layer.weight.nbytes() if d["kernel"] != "dense" else 4 * layer.weight.numel())
        assert d["kernel"] == "dense" or d["gpu_bytes"] < d["dense_bytes"]


def test_a_failed_gpu_convert_leaves_the_model_as_it_was(gpu_here, monkeypatch):
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(gpu, "place", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        runtime.convert(model, device="cuda")
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert next(model.parameters()).device.type == "cpu"


def test_runtime_load_onto_the_gpu_from_a_dz(gpu_here, tmp_path):
    model = models.build("lenet300_100", (1, 8, 8), 10, seed=0)
    P.prune(model, 0.9)
    Q.quantize(model, 5)
    deepzip.save(model, tmp_path / "m.dz")
    x = torch.randn(2, 1, 8, 8)
    fast = runtime.load(tmp_path / "m.dz", models.from_description, mode="sparse", device="cuda")
    close(fast(x.to(DEVICE)).cpu(), model.eval()(x), tol=1e-4)
    assert {d["kernel"] for d in runtime.decisions(fast)} <= {"csr", "codes"}
    assert not any(isinstance(m, nn.Linear) for m in fast.modules())  # no dense weight made


def test_cuda_without_a_gpu_or_triton_says_what_is_missing(monkeypatch):
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs CUDA, and this PyTorch .* sees no CUDA GPU; use device='cpu'"):
        runtime.convert(small_model(), device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tk, "MISSING", "Triton is not installed (x); pip install 'deepzip[gpu]'")
    with pytest.raises(RuntimeError, match=r"Triton is not installed .*deepzip\[gpu\]"):
        runtime.convert(small_model(), device="cuda")
    with pytest.raises(ValueError, match="runs on a CUDA device, got mps"):
        gpu.check_device("mps")


def fake_timing(costs, whole_model_slower=False):
    """A stand-in for gpu_timing.interleaved off the GPU: runs each variant once (so it is installed and
    runs), then reports the sum of ``costs`` of the layer kinds in the model as its time in every round."""
    def interleaved(fns, rounds=15, calls=20, seed=0, graphs=True):
        out = {}
        for name, fn in fns.items():
            fn()
            kinds = [getattr(getattr(m, "weight", None), "kind", "dense") for m in installed]
            seconds = sum(costs[k] for k in kinds)
            if whole_model_slower and name == "chosen":
                seconds *= 10
            out[name] = {"seconds": seconds, "graphed": True, "rounds": [seconds] * rounds}
        return out
    installed = []
    return interleaved, installed


@pytest.mark.parametrize("costs, whole_model_slower, kinds", [
    ({"csr": 1.0, "sliced": 0.8, "codes": 0.5, "dense": 2.0}, False, ["codes", "codes", "codes"]),
    ({"csr": 0.5, "sliced": 0.7, "codes": 1.0, "dense": 2.0}, False, ["csr", "csr", "csr"]),
    ({"csr": 0.7, "sliced": 0.5, "codes": 1.0, "dense": 2.0}, False, ["sliced", "sliced", "sliced"]),
    ({"csr": 3.0, "sliced": 3.0, "codes": 3.0, "dense": 1.0}, False, ["dense", "dense", "dense"]),  # kernels lose
    ({"csr": 1.0, "sliced": 1.0, "codes": 1.0, "dense": 1.005}, False, ["dense", "dense", "dense"]),  # in the 1% margin
    ({"csr": 1.0, "sliced": 1.0, "codes": 0.5, "dense": 2.0}, True, ["dense", "dense", "dense"]),  # the model lost
])
def test_calibration_keeps_a_kernel_only_where_it_wins(gpu_here, monkeypatch, costs, whole_model_slower, kinds):
    model = small_model()
    interleaved, installed = fake_timing(costs, whole_model_slower)
    monkeypatch.setattr(gpu.gpu_timing, "interleaved", interleaved)
    original = gpu.replace_module

    def tracking(model, name, module):
        original(model, name, module)
        installed[:] = [model.get_submodule(n) for n in ("0", "2", "4")]
    monkeypatch.setattr(gpu, "replace_module", tracking)
    x = torch.randn(1, 24)
    fast = runtime.convert(copy.deepcopy(model), example=x, device="cuda")
    assert [d["kernel"] for d in runtime.decisions(fast)] == kinds
    close(fast(x.to(DEVICE)).cpu(), model(x), tol=1e-4)
    first = runtime.decisions(fast)[0]
    assert set(first["model_s"]) == {"csr", "sliced", "codes", "dense"}
    assert ("whole_model_s" in first) == (kinds != ["dense"] * 3 or whole_model_slower)  # checked when one won
