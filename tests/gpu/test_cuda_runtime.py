"""The Triton kernels on a real GPU against cuBLAS, and the CUDA runtime end to end. Marked ``gpu``:
run where CUDA is present (`pytest -m gpu`); skipped elsewhere."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import models, runtime
from deepzip import prune as P
from deepzip import quantize as Q
from deepzip.runtime import SparseMatrix, gpu_layers
from deepzip.runtime.gpu_graph import GraphedModel

from ..calibrate.conftest import tiny_bert, token_batches

pytest.importorskip("triton")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def coded(rows, width, density, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, width, generator=g) < density
    codebook, index = torch.randn(k, generator=g), torch.randint(0, k, (rows, width), generator=g)
    weight = torch.where(mask, codebook[index], torch.zeros(()))
    return weight, SparseMatrix.from_dense(weight, codebook, index, mask)


@pytest.mark.parametrize("shape, density, k", [((4096, 4096), 0.09, 256), ((1000, 4096), 0.25, 256),
                                               ((1536, 384), 0.5, 15), ((300, 784), 0.08, 32)])
@pytest.mark.parametrize("batch", [1, 16])
def test_kernels_match_cublas(shape, density, k, batch):
    weight, matrix = coded(*shape, density, k)
    bias = torch.randn(shape[0])
    x = torch.randn(batch, shape[1], device="cuda")
    expected = F.linear(x.double(), weight.double().cuda(), bias.double().cuda())
    for kind in gpu_layers.kinds_for(matrix):
        layer = gpu_layers.build(kind, matrix, bias, nn.Linear(shape[1], shape[0]), "cuda")
        got = layer(x).double()
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item()), kind
        half = layer(x.half())
        assert half.dtype == torch.float16
        assert torch.allclose(half.double(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item()), kind


def test_convert_and_load_on_cuda_with_calibration_are_never_slower_than_dense(tmp_path):
    model = models.build("lenet5", seed=0)
    P.prune(model, method="fraction", layer_sparsity={"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81})
    Q.quantize(model, {"conv": 8, "fc": 5})
    model.eval()
    deepzip.save(model, tmp_path / "m.dz")
    x = torch.randn(1, 1, 28, 28)
    expected = model(x)
    for fast in (runtime.convert(copy.deepcopy(model), example=x, device="cuda"),
                 runtime.load(tmp_path / "m.dz", models.from_description, example=x.cuda(), device="cuda")):
        assert torch.allclose(fast(x.cuda()).cpu(), expected, atol=1e-4)
        for d in runtime.decisions(fast):
            times = d["model_s"]
            if d["kernel"] != "dense":
                assert times[d["kernel"]] < times["dense"]
            assert d["graphed"]


def lenet5_compressed():
    model = models.build("lenet5", seed=0)
    P.prune(model, method="fraction", layer_sparsity={"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81})
    Q.quantize(model, {"conv": 8, "fc": 5})
    return model.eval()


def test_the_whole_model_runs_from_one_cuda_graph():
    model = lenet5_compressed()
    x = torch.randn(1, 1, 28, 28)
    fast = runtime.convert(copy.deepcopy(model), example=x, device="cuda", fuse="on")
    assert isinstance(fast, GraphedModel) and runtime.fusion(fast)["kind"] == "cuda graph"
    inputs = [torch.randn(1, 1, 28, 28) for _ in range(3)]
    outputs = [fast(i.cuda()) for i in inputs]  # each a fresh tensor: later replays leave earlier outputs alone
    for i, out in zip(inputs, outputs):
        assert torch.allclose(out.cpu(), model(i), atol=1e-4)
    assert fast(torch.randn(4, 1, 28, 28).cuda()).shape == (4, 10)  # another batch: the per-layer model
    copied = copy.deepcopy(fast)
    assert torch.allclose(copied(inputs[0].cuda()), outputs[0])
    graph = torch.cuda.CUDAGraph()  # inside a caller's own capture the per-layer model is captured
    static = inputs[1].cuda()
    fast(static)
    with torch.cuda.graph(graph):
        captured = fast(static)
    graph.replay()
    assert torch.allclose(captured, outputs[1])


def test_fuse_off_calibrates_with_the_launch_work_in():
    model = lenet5_compressed()
    fast = runtime.convert(copy.deepcopy(model), example=torch.randn(1, 1, 28, 28), device="cuda", fuse="off")
    assert not isinstance(fast, GraphedModel) and runtime.fusion(fast) == {"fused": False, "reason": "fuse='off'"}
    assert not any(d["graphed"] for d in runtime.decisions(fast))  # timed as eager calls, as it will run


def test_calls_on_several_streams_each_get_their_own_result():
    model = lenet5_compressed()
    fast = runtime.convert(copy.deepcopy(model), example=torch.randn(1, 1, 28, 28), device="cuda", fuse="on")
    inputs = [torch.randn(1, 1, 28, 28, device="cuda") for _ in range(8)]
    expected = [fast.model(x) for x in inputs]  # the per-layer model
    streams, outputs = [torch.cuda.Stream() for _ in range(2)], []
    for k, x in enumerate(inputs):  # no sync between calls: the graph's input buffer is shared by both streams
        stream = streams[k % 2]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            outputs.append(fast(x))
    torch.cuda.synchronize()
    assert all(torch.allclose(out, want, atol=1e-5) for out, want in zip(outputs, expected))


class Syncing(nn.Sequential):
    """A model whose forward syncs with the host: it cannot be captured in a CUDA graph."""

    def forward(self, x):
        y = super().forward(x)
        return y * float(y.abs().sum() >= 0)


def test_a_model_that_cannot_be_captured_runs_per_layer_and_leaves_the_stream_alone():
    torch.manual_seed(0)
    model = Syncing(nn.Linear(24, 40), nn.ReLU(), nn.Linear(40, 5)).eval()
    P.prune(model, 0.85, "uniform")
    Q.quantize(model, 4)
    x = torch.randn(1, 24)
    stream = torch.cuda.current_stream()
    fast = runtime.convert(copy.deepcopy(model), example=x, device="cuda")
    assert torch.cuda.current_stream() == stream  # a failed capture did not leave its capture stream current
    info = runtime.fusion(fast)
    assert not isinstance(fast, GraphedModel) and not info["fused"] and "\n" not in info["reason"]
    assert "cannot be captured in a CUDA graph" in info["reason"], info
    assert not any(d["graphed"] for d in runtime.decisions(fast))
    assert torch.allclose(fast(x.cuda()).cpu(), model(x), atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_a_graph_on_another_device_than_the_current_one():
    model = lenet5_compressed()
    fast = runtime.convert(copy.deepcopy(model), example=torch.randn(1, 1, 28, 28), device="cuda:1", fuse="on")
    assert torch.cuda.current_device() == 0
    for x in (torch.randn(1, 1, 28, 28) for _ in range(2)):  # an empty graph would return the first one's output
        assert torch.allclose(fast(x.to("cuda:1")).cpu(), model(x), atol=1e-4)


def test_a_hugging_face_encoder_called_by_keyword_runs_from_a_graph():
    model = tiny_bert()
    Q.quantize(model, 4)  # every Linear weight-shared: converted
    batch = token_batches(count=1)[0]
    expected = model(**batch).last_hidden_state
    fast = runtime.convert(copy.deepcopy(model), example=batch["input_ids"], device="cuda", fuse="on")
    assert isinstance(fast, GraphedModel)
    cuda_batch = {k: v.cuda() for k, v in batch.items()}
    for _ in range(3):  # the first keyword call runs per layer, the second captures, the third replays
        out = fast(**cuda_batch).last_hidden_state
        assert torch.allclose(out.cpu(), expected, atol=1e-4)
    assert len(fast._graphs) == 2 and fast.config.hidden_size == 32  # the example's graph and the keyword call's
