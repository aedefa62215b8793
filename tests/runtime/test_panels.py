"""The panel kernels (runtime.panels): 4-bit codes in panels of 16 outputs, fp32 and int8, via runtime.jit."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import runtime
from deepzip.quantize import install
from deepzip.runtime import jit, panel_ir, panels
from deepzip.runtime.chain import Unsupported
from deepzip.runtime.panels import PanelMatrix

needs_fp32 = pytest.mark.skipif(not panels.available("fp32"), reason="the panel kernels need AVX-512F")
needs_int8 = pytest.mark.skipif(not panels.available("int8"), reason="int8 panels need AVX-512 VNNI")
NO_BIAS = np.zeros(0, np.float32)


def weights(rows, width, values=16, seed=0):
    rng = np.random.default_rng(seed)
    table = np.sort(rng.standard_normal(values)).astype(np.float32)
    index = rng.integers(0, values, (rows, width)).astype(np.uint8)
    return table, index, table[index]


def run(matrix, x, bias):
    if x.shape[0] == 1:
        return matrix.matvec(x[0], bias)[None]
    return matrix.matmul(x, bias)


@pytest.mark.parametrize("precision", panels.PRECISIONS)
def test_pack_and_unpack_are_inverse_on_ragged_shapes(precision):
    _, index, _ = weights(21, 37)
    packed = panels.pack(index, precision)
    step = panels.STEP[precision]
    steps = 37 if precision == "fp32" else 16  # int8: 37 inputs pad to one AMX chunk of 64 (16 steps of 4)
    assert packed.shape == (2, steps, 8 * step)  # 21 outputs -> 2 panels; 8 bytes per 16 codes
    assert np.array_equal(panels.unpack(packed, precision, (21, 37)), index)
    # fp32: byte b of a step holds output b (low nibble) and output b + 8 (high nibble)
    if precision == "fp32":
        assert packed[0, 0, 3] == index[3, 0] | index[11, 0] << 4


@needs_fp32
@pytest.mark.parametrize("rows,width", [(21, 37), (64, 48), (384, 96)])
@pytest.mark.parametrize("batch", [1, 3, 17, 24, 25, 50])
def test_fp32_panels_match_a_dense_matmul(rows, width, batch):
    table, index, dense = weights(rows, width)
    matrix = PanelMatrix((rows, width), index, table)
    x = np.random.default_rng(1).standard_normal((batch, width)).astype(np.float32)
    bias = np.random.default_rng(2).standard_normal(rows).astype(np.float32)
    want = x.astype(np.float64) @ dense.T.astype(np.float64)
    for b in (bias, NO_BIAS):
        got = run(matrix, x, b)
        assert got.shape == (batch, rows)
        np.testing.assert_allclose(got, want + (b if len(b) else 0), rtol=1e-5, atol=1e-5)
    assert torch.equal(matrix.to_dense(), torch.from_numpy(dense))


@needs_int8
@pytest.mark.parametrize("tiles", [True, False], ids=["amx", "vnni"])
@pytest.mark.parametrize("batch", [1, 17, 30, 40])
def test_int8_panels_are_exact_integer_dot_products_with_per_row_scales(monkeypatch, batch, tiles):
    if tiles and not panels.amx_available():
        pytest.skip("no AMX tiles here")
    monkeypatch.setattr(panels, "amx_available", lambda: tiles)
    rows, width = 40, 70  # width not a multiple of 4: padded inputs must add nothing
    table, index, dense = weights(rows, width)
    matrix = PanelMatrix((rows, width), index, table, "int8")
    x = np.random.default_rng(3).standard_normal((batch, width)).astype(np.float32) * 3
    bias = np.random.default_rng(4).standard_normal(rows).astype(np.float32)
    got = run(matrix, x, bias)
    q, scales = panels.quantize_rows(x, matrix.steps * 4, matrix.weight_scale)
    levels = matrix.lut[:16].astype(np.int64)[index]
    integer = (q[:, :width].astype(np.int64) - 128) @ levels.T  # what vpdpbusd sums, exactly
    np.testing.assert_allclose(got, scales[:, None] * integer + bias, rtol=1e-5, atol=1e-4)
    # and within int8 rounding of the fp32 product: a row's error is about its scale times sqrt(width)
    exact = x @ dense.T + bias
    assert np.abs(got - exact).max() < 0.02 * np.abs(exact).max()
    assert np.abs(matrix.to_dense().numpy() - dense).max() <= matrix.weight_scale / 2 + 1e-6


def test_quantize_rows_rounds_to_nearest_with_each_rows_own_scale():
    x = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]], np.float32)
    q, scales = panels.quantize_rows(x, 4, weight_scale=2.0)
    assert q[0].tolist() == [255, 128 - 63, 128 + 32, 128]  # x / scale: 127, -63.5 (halves round up), 31.75
    assert q[1].tolist() == [128] * 4 and scales[1] == 2.0  # an all-zero row: scale 1 (times the weight scale)
    assert scales[0] == pytest.approx(2.0 / 127)


@needs_int8
def test_kernels_look_codes_up_in_registers():
    """The point of the kernels: one in-register table lookup per 16 (fp32) or 64 (int8) codes, no gathers."""
    fp32, int8 = jit.assembly(panel_ir.kernel_ir("fp32", 17)), jit.assembly(panel_ir.kernel_ir("int8", 17))
    assert "vperm" in fp32 and "vfmadd231ps" in fp32
    assert "vpshufb" in int8 and "vpdpbusd" in int8
    amx = jit.assembly(panel_ir.amx_kernel_ir(2))
    assert "vpshufb" in amx and "tdpbusd" in amx and "ldtilecfg" in amx and "tilerelease" in amx
    assert "gather" not in fp32 + int8 + amx


def test_eligibility_and_precision_errors(monkeypatch):
    assert panels.eligible(torch.zeros(16), False, pruned=False)
    assert not panels.eligible(torch.zeros(16), False, pruned=True)  # no room for the pruned weights' +0.0
    assert not panels.eligible(torch.zeros(4, 8), False, pruned=False)  # per-row codebooks
    assert not panels.eligible(torch.zeros(8), True, pruned=False)  # exact outliers
    with pytest.raises(ValueError, match="precision must be one of fp32, int8, got 'bf16'"):
        panels.check_precision("bf16")
    monkeypatch.setattr(jit, "host_features", lambda: frozenset({"avx512f"}))
    with pytest.raises(ValueError, match="lacks avx512bw, avx512vnni"):
        panels.check_precision("int8")
    with pytest.raises(ValueError, match="at most 16 values"):
        PanelMatrix((2, 2), np.zeros((2, 2), np.uint8), np.zeros(17, np.float32))


def shared_mlp(seed=0, pruned=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 20))
    for layer in (model[0], model[2]):
        table, index, _ = weights(layer.out_features, layer.in_features, 15 if pruned else 16, seed)
        mask = torch.rand(layer.weight.shape) > 0.3 if pruned else None
        if mask is not None:
            layer.register_buffer("weight_mask", mask)
        install(layer, "weight", torch.from_numpy(table), torch.from_numpy(index.astype(np.int64)))
    return model


@needs_int8
def test_convert_and_load_at_int8_precision(tmp_path):
    model = shared_mlp()
    x = torch.randn(17, 48)
    with torch.inference_mode():
        expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode="codes", precision="int8")
    assert [d["codes_kernel"] for d in runtime.decisions(fast)] == ["panels int8"] * 2
    assert "panels, int8" in repr(fast)
    with torch.inference_mode():
        got = fast(x)
    assert (got - expected).abs().max() < 0.02 * expected.abs().max()
    deepzip.save(model, tmp_path / "m.dz")
    loaded = runtime.load(tmp_path / "m.dz", shared_mlp(seed=1), mode="codes", precision="int8")
    with torch.inference_mode():
        assert torch.equal(loaded(x), got)


@needs_fp32
def test_pruned_weights_get_a_zero_code_and_the_chain_runs_panel_layers(tmp_path):
    model = shared_mlp(pruned=True)
    x = torch.randn(1, 48)
    with torch.inference_mode():
        expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), example=x, mode="codes", fuse="on")
    assert runtime.fusion(fast)["fused"] and [d["codes_kernel"] for d in runtime.decisions(fast)] == ["panels fp32"] * 2
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast.model(x), expected, rtol=1e-5, atol=1e-5)


@needs_int8
def test_a_failed_convert_leaves_the_model_as_it_was():
    model = shared_mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="precision must be one of"):
        runtime.convert(model, precision="int4")
    with pytest.raises(Unsupported, match="precision='int8'"):  # the chain multiplies in fp32
        runtime.convert(model, example=torch.randn(1, 48), mode="codes", fuse="on", precision="int8")
    assert isinstance(model[0], nn.Linear) and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="on cuda use precision='fp32'"):
        runtime.convert(model, precision="int8", device="cuda")
    with torch.inference_mode():
        assert F.linear(torch.ones(1, 48), model[0].weight).shape == (1, 64)


@needs_int8
@pytest.mark.parametrize("precision", panels.PRECISIONS)
def test_copies_run_on_their_own_arrays(precision):
    """The kernels read cached addresses: a deepcopy or a pickle must take its own, never the original's."""
    import pickle

    table, index, dense = weights(40, 24)
    original = PanelMatrix((40, 24), index, table, precision)
    x = np.random.default_rng(5).standard_normal((17, 24)).astype(np.float32)
    want = original.matmul(x, NO_BIAS)
    for copied in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
        assert copied._codes_at == copied.codes.ctypes.data != original._codes_at
        assert np.array_equal(copied.matmul(x, NO_BIAS), want)
    layer = runtime.CodedLinear(original, None)
    twin = copy.deepcopy(layer)
    del layer, original
    assert np.array_equal(twin(torch.from_numpy(x)).numpy(), want)


def test_int8_falls_back_to_fp32_where_int32_sums_could_overflow():
    assert panels.precision_for(panels.INT8_MAX_WIDTH, "int8") == "int8"
    assert panels.precision_for(panels.INT8_MAX_WIDTH + 1, "int8") == "fp32"
    assert 255 * panels.INT8_MAX * panels.INT8_MAX_WIDTH < 2**31


@needs_int8
def test_amx_and_vnni_kernels_agree():
    if not panels.amx_available():
        pytest.skip("no AMX tiles here")
    table, index, _ = weights(100, 200)
    matrix = PanelMatrix((100, 200), index, table, "int8")
    x = np.random.default_rng(6).standard_normal((33, 200)).astype(np.float32)
    bias = np.random.default_rng(7).standard_normal(100).astype(np.float32)
    amx = matrix.matmul(x, bias)
    matrix_vnni = copy.deepcopy(matrix)
    original = panels.amx_available
    try:
        panels.amx_available = lambda: False
        vnni = matrix_vnni.matmul(x, bias)
    finally:
        panels.amx_available = original
    np.testing.assert_allclose(amx, vnni, rtol=1e-6, atol=1e-5)  # the same int32 sums; float epilogues differ by an ulp


@needs_int8
@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
@pytest.mark.parametrize("precision, tiles", [("fp32", False), ("int8", False), ("int8", True)],
                         ids=["fp32", "int8-vnni", "int8-amx"])
def test_threads_split_panels_and_agree_with_one_thread(monkeypatch, precision, tiles):
    if tiles and not panels.amx_available():
        pytest.skip("no AMX tiles here")
    monkeypatch.setattr(panels, "amx_available", lambda: tiles)
    table, index, _ = weights(400, 96)  # 38,400 weights: over PARALLEL_MIN_NNZ, so threads split the panels
    matrix = PanelMatrix((400, 96), index, table, precision)
    x = np.random.default_rng(8).standard_normal((17, 96)).astype(np.float32)
    bias = np.random.default_rng(9).standard_normal(400).astype(np.float32)
    one = matrix.matmul(x, bias), matrix.matvec(x[0], bias)
    torch.set_num_threads(2)
    try:
        two = matrix.matmul(x, bias), matrix.matvec(x[0], bias)
        # 400 outputs: 25 panels (int8: 26, an even count for AMX's pairs), split in two near-equal runs
        assert matrix._bounds().tolist() == ([0, 12, 26] if precision == "int8" else [0, 12, 25])
    finally:
        torch.set_num_threads(1)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])


@needs_int8
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 70), width=st.integers(1, 150), batch=st.integers(1, 60), values=st.integers(1, 16),
       seed=st.integers(0, 2**16))
def test_any_shape_matches_its_reference(rows, width, batch, values, seed):
    """Ragged outputs (masked stores), inputs (padding), batches (row blocks, AMX tiles of 1..16 rows)."""
    table, index, dense = weights(rows, width, values, seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, width)).astype(np.float32)
    bias = np.random.default_rng(seed + 2).standard_normal(rows).astype(np.float32)
    fp32 = PanelMatrix((rows, width), index, table)
    np.testing.assert_allclose(run(fp32, x, bias), x.astype(np.float64) @ dense.T + bias, rtol=1e-4, atol=1e-4)
    int8 = PanelMatrix((rows, width), index, table, "int8")
    q, scales = panels.quantize_rows(x, int8.steps * 4, int8.weight_scale)
    integer = (q[:, :width].astype(np.int64) - 128) @ int8.lut[:16].astype(np.int64)[index].T
    np.testing.assert_allclose(run(int8, x, bias), scales[:, None] * integer + bias, rtol=1e-5, atol=1e-4)


@needs_fp32
def test_without_an_example_panel_layers_from_512_kib_run_from_their_codes():
    """The density rule: a 384x384 4-bit layer (576 KiB dense) on panels, a small one dense."""
    model = nn.Sequential(nn.Linear(384, 384), nn.ReLU(), nn.Linear(384, 10))
    for layer in model[::2]:
        table, index, _ = weights(layer.out_features, layer.in_features)
        install(layer, "weight", torch.from_numpy(table), torch.from_numpy(index.astype(np.int64)))
    fast = runtime.convert(model)
    assert [d["kernel"] for d in runtime.decisions(fast)] == ["codes", "dense"]
