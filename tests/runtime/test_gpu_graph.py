"""The CUDA-graph wrapper (`runtime.gpu_graph`) and how ``fuse`` drives it on cuda. Off the GPU a stand-in
capture does what a CUDA graph does to its buffers: a replay reruns the recorded call and rewrites the
first call's output tensors in place. The real capture runs in tests/gpu/test_cuda_runtime.py."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from deepzip import quantize as Q
from deepzip import runtime
from deepzip.runtime import gpu, gpu_graph, gpu_timing
from deepzip.runtime.gpu_graph import GraphedModel

from ..calibrate.conftest import tiny_bert, token_batches
from .conftest import DEVICE, small_model

pytest.importorskip("triton")


class FakeGraphs:
    """gpu_graph.capture off the GPU, counting captures and replays."""

    def __init__(self, fail: Exception | None = None, stale: bool = False):
        self.captures, self.replays, self.fail, self.stale = 0, 0, fail, stale

    def __call__(self, fn):
        if self.fail is not None:
            raise self.fail
        self.captures += 1
        with torch.no_grad():
            output = fn()

        def replay():
            self.replays += 1
            if self.stale:  # as an empty graph: the capture's output, never rewritten
                return
            with torch.no_grad():
                fresh = fn()
            for static, new in zip(torch.utils._pytree.tree_leaves(output), torch.utils._pytree.tree_leaves(fresh)):
                if isinstance(static, torch.Tensor):
                    static.copy_(new)
        return replay, output


@pytest.fixture
def graphs(monkeypatch):
    fake = FakeGraphs()
    monkeypatch.setattr(gpu_graph, "capture", fake)
    return fake


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.ReLU(), nn.Linear(20, 4)).eval()


def test_a_planned_input_replays_the_graph_and_returns_a_fresh_tensor(graphs):
    model = mlp()
    graphed = GraphedModel(model, torch.zeros(3, 12))
    a, b = torch.randn(3, 12), torch.randn(3, 12)
    out_a = graphed(a)
    out_a_copy = out_a.clone()
    out_b = graphed(b)
    assert (graphs.captures, graphs.replays) == (1, 2)
    assert torch.equal(out_a, out_a_copy)  # the second call did not overwrite what the first returned
    assert torch.allclose(out_a, model(a)) and torch.allclose(out_b, model(b))
    (graph,) = graphed._graphs.values()
    assert out_b.data_ptr() != graph.output.data_ptr()  # a clone, not the graph's own output buffer


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.calls = mlp(), 0

    def forward(self, x, scale=1.0):
        self.calls += 1
        return self.inner(x.float()) * scale


def test_a_first_call_in_inference_mode_leaves_later_plain_calls_working(graphs):
    model = mlp()
    graphed = GraphedModel(model, torch.zeros(3, 12))
    with torch.inference_mode():
        assert graphed(torch.randn(3, 12)).is_inference()
    x = torch.randn(3, 12)
    out = graphed(x)  # outside inference mode: the graph's buffers must be plain tensors
    out.add_(1.0)  # and what it returns is the caller's own
    assert not out.is_inference() and torch.allclose(out, model(x) + 1.0)


@pytest.mark.parametrize("call", [
    lambda g: g(torch.randn(2, 12)),                          # another batch size
    lambda g: g(torch.randn(3, 12, dtype=torch.float64)),     # another dtype
    lambda g: g(torch.randn(3, 12, requires_grad=True)),      # autograd wanted
    lambda g: g(torch.randn(3, 12), scale=2.0),               # other arguments
])
def test_other_inputs_run_the_per_layer_model(graphs, call):
    graphed = GraphedModel(Counting(), torch.zeros(3, 12))
    out = call(graphed)
    assert (graphs.captures, graphs.replays, graphed.model.calls) == (0, 0, 1)
    assert out.shape[1] == 4


def test_keyword_calls_and_the_models_attributes_go_to_the_model(graphs):
    model = Counting()
    model.config = {"hidden_size": 4}  # as a Hugging Face model's config
    graphed = GraphedModel(model, torch.zeros(3, 12))
    out = graphed(x=torch.randn(3, 12))  # keyword-only, as model(**tokenizer(...)) calls it
    assert out.shape == (3, 4) and (graphs.captures, model.calls) == (0, 1)
    assert graphed.config == {"hidden_size": 4} and graphed.inner is model.inner
    with pytest.raises(AttributeError, match="no_such_attribute"):
        graphed.no_such_attribute


class Encoder(nn.Module):
    """Called as a Hugging Face model is: token ids and an attention mask by keyword."""

    def __init__(self):
        super().__init__()
        self.embed, self.calls = nn.Embedding(30, 8), 0

    def forward(self, input_ids, attention_mask=None, scale=1.0):
        self.calls += 1
        hidden = self.embed(input_ids) * scale
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return {"last_hidden_state": hidden * mask[..., None], "pooled": hidden.mean(1)}


def test_other_signatures_are_captured_on_their_second_call(graphs):
    model = Encoder()
    graphed = GraphedModel(model, torch.zeros(1, 5, dtype=torch.long))
    ids, mask = torch.randint(0, 30, (2, 7)), torch.randint(0, 2, (2, 7))
    first = graphed(input_ids=ids, attention_mask=mask)  # seen once: per layer
    assert (graphs.captures, graphs.replays, model.calls) == (0, 0, 1)
    second = graphed(input_ids=ids, attention_mask=mask)  # seen twice: captured, replayed
    assert (graphs.captures, graphs.replays) == (1, 1)
    other_ids, ids_before = torch.randint(0, 30, (2, 7)), ids.clone()
    third = graphed(input_ids=other_ids, attention_mask=mask)  # same signature, new values: replayed
    assert (graphs.captures, graphs.replays) == (1, 2)
    assert torch.equal(ids, ids_before)  # copied into the graph's own buffers, not into the capturing call's
    graphed(attention_mask=mask, input_ids=other_ids)  # keywords in another order: the same signature
    assert (graphs.captures, graphs.replays) == (1, 3)
    assert torch.equal(first["last_hidden_state"], second["last_hidden_state"])
    with torch.no_grad():
        assert torch.equal(third["last_hidden_state"], model(other_ids, attention_mask=mask)["last_hidden_state"])
    graphed(input_ids=ids, attention_mask=mask, scale=2.0)  # another value of a plain argument: another signature
    graphed(input_ids=ids, attention_mask=mask, scale=2.0)
    assert graphs.captures == 2 and len(graphed._graphs) == 2
    graphed(input_ids=ids, attention_mask=mask, scale=2)  # 2 == 2.0, but an int: another signature
    graphed(input_ids=ids, attention_mask=mask, scale=2)
    assert graphs.captures == 3 and len(graphed._graphs) == 3
    graphed(ids, mask, np.float32(2.0))  # an argument a graph cannot take: per layer, nothing remembered
    graphed(ids, mask, np.float32(2.0))
    assert graphs.captures == 3


def test_at_most_max_graphs_are_kept_least_recently_used_dropped(graphs, monkeypatch):
    monkeypatch.setattr(gpu_graph, "MAX_GRAPHS", 2)
    graphed = GraphedModel(mlp(), torch.zeros(1, 12))
    for batch in (1, 2, 1, 3, 3):  # batch 1 planned: captured at once; 2 and 3 seen once only, then 3 again
        graphed(torch.randn(batch, 12))
    assert [key[0][1] for key in graphed._graphs] == [(1, 12), (3, 12)]
    graphed(torch.randn(1, 12))  # replayed: now the most recently used
    graphed(torch.randn(2, 12))  # its second call: captured, and the least recently used (batch 3) dropped
    assert [key[0][1] for key in graphed._graphs] == [(1, 12), (2, 12)] and graphs.captures == 3
    for _ in range(3):  # more signatures in turn than graphs kept: a dropped one runs per layer, not captured
        for batch in (1, 2, 3):  # again on every call
            assert torch.allclose(graphed(x := torch.randn(batch, 12)), graphed.model(x))
    assert graphs.captures == 3 and [key[0][1] for key in graphed._graphs] == [(1, 12), (2, 12)]


def test_a_signature_that_cannot_be_captured_runs_per_layer(graphs, monkeypatch):
    model = Counting()
    graphed = GraphedModel(model, torch.zeros(3, 12))
    graphed(torch.randn(3, 12))
    failing, attempts = FakeGraphs(fail=RuntimeError("a host sync for this shape")), []
    monkeypatch.setattr(gpu_graph, "capture", lambda fn: attempts.append(fn) or failing(fn))
    for _ in range(4):
        assert graphed(torch.randn(5, 12)).shape == (5, 4)
    assert model.calls == 1 + 4 + 1  # (the planned capture's one call, then four per-layer calls)
    assert len(attempts) == 1  # tried on the second call only: the failure is remembered


def test_copies_moves_and_loads_capture_again(graphs):
    graphed = GraphedModel(mlp(), torch.zeros(3, 12))
    x = torch.randn(3, 12)
    expected = graphed(x)
    copied = copy.deepcopy(graphed)
    pickled = pickle.loads(pickle.dumps(graphed))
    assert not copied._graphs and not pickled._graphs and len(graphed._graphs) == 1
    assert torch.allclose(copied(x), expected) and torch.allclose(pickled(x), expected)
    assert graphs.captures == 3
    graphed.to(torch.float32)
    assert not graphed._graphs
    graphed(x)
    state = graphed.state_dict()
    assert set(state) == {"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"}
    state["model.2.bias"] = state["model.2.bias"] + 1.0
    graphed.load_state_dict(state)
    assert not graphed._graphs
    assert torch.allclose(graphed(x), expected + 1.0, atol=1e-6)
    assert graphs.captures == 5


def test_a_compiled_wrapper_pickles_as_nn_module_does(graphs):
    graphed = GraphedModel(mlp(), torch.zeros(3, 12))
    graphed.__dict__["_compiled_call_impl"] = lambda *args: None  # what nn.Module.compile() sets: not picklable
    pickled = pickle.loads(pickle.dumps(graphed))
    assert "_compiled_call_impl" not in pickled.__dict__ and not pickled._graphs


class Opaque:
    def __init__(self, tensor):
        self.tensor = tensor


def test_an_output_that_cannot_be_cloned_safely_runs_per_layer(graphs):
    class Odd(nn.Module):
        def forward(self, x):
            return Opaque(x * 2)
    with pytest.raises(ValueError, match="cannot run from a CUDA graph: its output holds Opaque"):
        gpu_graph.plan(Odd(), torch.zeros(2), "on")
    graphed = GraphedModel(Odd(), torch.zeros(2))
    first = graphed(torch.ones(2))  # a call never fails for want of a graph: the model runs as it is
    second = graphed(torch.full((2,), 3.0))
    assert torch.equal(first.tensor, torch.full((2,), 2.0)) and torch.equal(second.tensor, torch.full((2,), 6.0))
    assert not graphed._graphs and graphs.replays == 0


def test_a_planned_capture_that_fails_after_a_move_runs_per_layer(graphs, monkeypatch):
    model = Counting()
    graphed = GraphedModel(model, torch.zeros(3, 12))
    graphed(torch.randn(3, 12))
    graphed.to(torch.float32)  # graphs dropped: the next call captures again, and here that fails
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(fail=RuntimeError("another thread's cudaMalloc")))
    for _ in range(2):
        assert graphed(torch.randn(3, 12)).shape == (3, 4)  # per layer, and no second try
    assert not graphed._graphs and not graphed.captured(torch.zeros(3, 12))


def test_structured_outputs_are_cloned_leaf_by_leaf(graphs):
    class Pair(nn.Module):
        def forward(self, x):
            return {"double": x * 2, "parts": (x + 1, None)}
    graphed = GraphedModel(Pair(), torch.zeros(2))
    first = graphed(torch.ones(2))
    graphed(torch.full((2,), 5.0))
    assert torch.equal(first["double"], torch.full((2,), 2.0)) and torch.equal(first["parts"][0], torch.full((2,), 2.0))
    assert first["parts"][1] is None


def test_plan_says_how_calibration_will_time(graphs, monkeypatch):
    model, x = mlp(), torch.randn(1, 12)
    assert gpu_graph.plan(model, x, "off") == (False, "fuse='off'")
    assert gpu_graph.plan(model, None, "auto")[0] is False
    assert gpu_graph.plan(model, x, "auto") == (True, "capturable")
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(fail=RuntimeError("operation not permitted when stream is capturing")))
    graphs_ok, reason = gpu_graph.plan(model, x, "auto")
    assert not graphs_ok and "cannot be captured in a CUDA graph (RuntimeError: operation not permitted" in reason
    with pytest.raises(ValueError, match="fuse='on': the model cannot be captured .* use fuse='auto' or 'off'"):
        gpu_graph.plan(model, x, "on")


def test_plan_says_what_made_the_capture_fail_on_one_line(monkeypatch):
    try:  # as a host sync in a capture fails: the sync's error, then ending the capture raises another
        try:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\n"
                               "CUDA kernel errors might be asynchronously reported at some other API call")
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture\nmore")
    except RuntimeError as exc:
        chained = exc
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(fail=chained))
    assert gpu_graph.plan(mlp(), torch.randn(1, 12), "auto") == (
        False, "the model cannot be captured in a CUDA graph (RuntimeError: CUDA error: operation not permitted when "
               "stream is capturing; then RuntimeError: CUDA error: operation failed due to a previous error during "
               "capture)")


class FakeStreams:
    """torch.cuda's streams and capture as PyTorch has them, off the GPU: torch.cuda.graph makes its stream
    current and, when ending the capture raises (a capture a host sync invalidated), never restores it."""

    def __init__(self, monkeypatch):
        self.current, self.captures = "caller's", 0
        fake = self

        class Graph:
            def __init__(self, graph, stream=None):
                self.stream = stream

            def __enter__(self):
                fake.captures += 1
                self.previous, fake.current = fake.current, self.stream

            def __exit__(self, kind, value, traceback):
                if kind is not None:
                    raise RuntimeError("operation failed due to a previous error during capture")
                fake.current = self.previous

        monkeypatch.setattr(torch.cuda, "graph", Graph)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: None)
        monkeypatch.setattr(torch.cuda, "Stream", lambda: "a capture stream")
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        monkeypatch.setattr(torch.cuda, "set_stream", lambda stream: setattr(self, "current", stream))
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(gpu_timing, "warm_up", lambda fn, calls=3: [fn() for _ in range(calls)])


def test_a_failed_capture_leaves_the_callers_stream_current(monkeypatch):
    streams = FakeStreams(monkeypatch)
    with pytest.raises(RuntimeError, match="previous error during capture"):
        with gpu_timing.capturing(None):
            assert streams.current == "a capture stream"
            raise RuntimeError("operation not permitted when stream is capturing")
    assert streams.current == "caller's"

    def host_sync():
        if streams.current == "a capture stream":
            raise RuntimeError("operation not permitted when stream is capturing")
    run, graphed = gpu_timing.replayer(host_sync, calls=4)
    assert not graphed and streams.current == "caller's" and streams.captures == 2


def test_the_replayer_calls_eagerly_without_graphs(monkeypatch):
    streams, calls = FakeStreams(monkeypatch), []
    run, graphed = gpu_timing.replayer(lambda: calls.append(1), calls=4, warmup=2, graphs=False)
    run()
    assert not graphed and streams.captures == 0 and len(calls) == 2 + 4


# ------------------------------------------------------------------ fuse through runtime.convert on cuda




def timing(graph_s=1.0, layers_s=2.0, kernel_s=1.0):
    """gpu_timing.interleaved off the GPU: runs each callable once; dense costs 1.0 and the kernels (and the
    chosen model) ``kernel_s`` (at 1.0 every layer stays dense), the graph ``graph_s`` and the per-layer
    model ``layers_s``. Records the ``graphs`` argument of every call."""
    modes = []
    costs = {"graph": graph_s, "layers": layers_s, "dense": 1.0}

    def interleaved(fns, rounds=15, calls=20, seed=0, graphs=True):
        modes.append(graphs)
        for fn in fns.values():
            fn()
        seconds = {name: costs.get(name, kernel_s) for name in fns}
        return {name: {"seconds": s, "graphed": graphs, "rounds": [s] * rounds} for name, s in seconds.items()}
    return interleaved, modes


@pytest.mark.parametrize("fuse, graph_s, fused, calibration_graphs, kernel_s", [
    ("auto", 1.0, True, True, 1.0),     # replaying beats calling: a GraphedModel, layers timed as graph replays
    ("auto", 2.0, False, True, 1.0),    # replaying no faster: the per-layer model
    ("on", 5.0, True, True, 1.0),       # always, untimed
    ("off", 1.0, False, False, 1.0),    # never; layers timed eagerly, launch work in
    ("auto", 1.0, True, True, 0.5),     # kernels win: the whole-model check timed as the layers were
    ("off", 1.0, False, False, 0.5),
])
def test_fuse_on_cuda(gpu_here, graphs, monkeypatch, fuse, graph_s, fused, calibration_graphs, kernel_s):
    interleaved, modes = timing(graph_s=graph_s, kernel_s=kernel_s)
    monkeypatch.setattr(gpu.gpu_timing, "interleaved", interleaved)
    model = small_model()
    x = torch.randn(1, 24)
    fast = runtime.convert(copy.deepcopy(model), example=x, device="cuda", fuse=fuse)
    assert isinstance(fast, GraphedModel) == fused
    info = runtime.fusion(fast)
    assert info["fused"] == fused and runtime.decisions(fast) is runtime.decisions(getattr(fast, "model", fast))
    kernels = [d["kernel"] for d in runtime.decisions(fast)]
    assert kernels == ["dense"] * 3 if kernel_s == 1.0 else "dense" not in kernels
    calibration_modes = modes[:modes.index(False)] if fuse == "auto" else modes
    assert calibration_modes and set(calibration_modes) == {calibration_graphs}
    if fuse == "auto":
        assert (info["graph_s"], info["layers_s"]) == (graph_s, 2.0)  # graph vs eager calls
        again = modes[modes.index(False) + 1:]  # a graph not kept: the layers are timed again, as eager calls
        assert (again and set(again) == {False}) if not fused else not again
        assert ("timed again as eager calls" in info["reason"]) == (not fused)
        assert all(d["graphed"] == fused for d in runtime.decisions(fast))
    if fused:
        assert info["kind"] == "cuda graph" and info["max_abs_diff"] == 0.0
    assert torch.allclose(fast(x.to(DEVICE)).cpu(), model(x), atol=1e-4)


@pytest.mark.parametrize("fuse", ["auto", "on"])
def test_a_graph_that_does_not_replay_the_model_is_not_kept(gpu_here, monkeypatch, fuse):
    interleaved, _ = timing()
    monkeypatch.setattr(gpu.gpu_timing, "interleaved", interleaved)
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(stale=True))  # right for the example it captured, only
    model, x = small_model(), torch.randn(1, 24)
    if fuse == "on":
        with pytest.raises(ValueError, match="fuse='on': replaying the CUDA graph differs from the per-layer model"):
            runtime.convert(model, example=x, device="cuda", fuse=fuse)
        return
    fast = runtime.convert(model, example=x, device="cuda", fuse=fuse)
    info = runtime.fusion(fast)
    assert not isinstance(fast, GraphedModel) and not info["fused"] and info["max_abs_diff"] > 1e-3
    assert info["reason"].startswith("replaying the CUDA graph differs from the per-layer model by")


def test_a_model_that_cannot_be_captured_is_calibrated_eagerly(gpu_here, monkeypatch):
    interleaved, modes = timing()
    monkeypatch.setattr(gpu.gpu_timing, "interleaved", interleaved)
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(fail=RuntimeError("a host sync")))
    x = torch.randn(1, 24)
    fast = runtime.convert(small_model(), example=x, device="cuda")
    assert not isinstance(fast, GraphedModel) and set(modes) == {False}
    assert "cannot be captured in a CUDA graph (RuntimeError: a host sync)" in runtime.fusion(fast)["reason"]


def test_fuse_on_that_cannot_capture_is_an_error_that_leaves_the_model(gpu_here, monkeypatch):
    monkeypatch.setattr(gpu_graph, "capture", FakeGraphs(fail=RuntimeError("a host sync")))
    model = small_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="fuse='on': the model cannot be captured"):
        runtime.convert(model, example=torch.randn(1, 24), device="cuda", fuse="on")
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fuse_on_needs_an_example_on_cuda_too(gpu_here):
    with pytest.raises(ValueError, match="fuse='on' needs an example input: .* CUDA graph"):
        runtime.convert(small_model(), device="cuda", fuse="on")


def test_a_hugging_face_encoder_called_by_keyword(gpu_here, graphs):
    model = tiny_bert()
    Q.quantize(model, 4)
    batch = token_batches(count=1, batch=2, length=6)[0]
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
    # mode='dense': the wrapper is what is tested here (Triton's interpreter would take minutes on BERT's layers)
    fast = runtime.convert(copy.deepcopy(model), example=batch["input_ids"], mode="dense", device="cuda", fuse="on")
    device_batch = {k: v.to(DEVICE) for k, v in batch.items()}
    outputs = [fast(**device_batch) for _ in range(3)]  # per layer, captured, replayed
    assert type(outputs[-1]).__name__ == "BaseModelOutputWithPoolingAndCrossAttentions"
    for out in outputs:
        assert torch.allclose(out.last_hidden_state.cpu(), expected, atol=1e-4)
    assert len(fast._graphs) == 2 and graphs.replays >= 1 and fast.config.hidden_size == 32


@pytest.mark.parametrize("fuse", ["auto", "on"])
def test_a_model_captured_in_plan_but_not_after_calibration_is_not_wrapped(gpu_here, graphs, monkeypatch, fuse):
    interleaved, modes = timing()
    monkeypatch.setattr(gpu.gpu_timing, "interleaved", interleaved)
    first_only = FakeGraphs()

    def capture(fn):  # plan()'s capture works, fuse()'s does not
        if first_only.captures:
            raise RuntimeError("a host sync in a calibrated layer")
        return first_only(fn)
    monkeypatch.setattr(gpu_graph, "capture", capture)
    model, x = small_model(), torch.randn(1, 24)
    if fuse == "on":
        with pytest.raises(ValueError, match="fuse='on': the calibrated model could not be captured"):
            runtime.convert(copy.deepcopy(model), example=x, device="cuda", fuse=fuse)
        return
    fast = runtime.convert(copy.deepcopy(model), example=x, device="cuda", fuse=fuse)
    assert not isinstance(fast, GraphedModel)
    assert runtime.fusion(fast)["reason"].startswith("the calibrated model could not be captured")
    assert modes[-1] is False  # and its layers were timed again as eager calls
