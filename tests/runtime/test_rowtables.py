"""The row-table kernel (runtime.rowtables): 4-bit codes with a table per output row, exact outliers as CSR."""

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
import torch
import torch.nn.functional as F
from torch import nn

import deepzip
from deepzip import runtime
from deepzip.quantize import WeightedKMeans, install
from deepzip.quantize.sharing import outliers as outliers_of, shared_weight
from deepzip.runtime import jit, panels, row_ir, rowtables
from deepzip.runtime.chain import Unsupported
from deepzip.runtime.rowtables import RowTableMatrix

pytestmark = pytest.mark.skipif(not rowtables.available(), reason="the row-table kernel needs AVX-512F")
NO_BIAS = np.zeros(0, np.float32)


def per_row_state(rows, width, k=16, seed=0, outlier_share=0.0, pruned=0.0):
    """(codebook (rows, k), index, mask, outlier mask, outlier values) as the sharing state holds them."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(rows, k, generator=g)
    index = torch.randint(0, k, (rows, width), generator=g)
    mask = torch.rand(rows, width, generator=g) >= pruned if pruned else None
    outlier_mask = values = None
    if outlier_share:
        outlier_mask = torch.rand(rows, width, generator=g) < outlier_share
        if mask is not None:
            outlier_mask &= mask  # outliers never sit on pruned positions (the format's rule)
        values = torch.randn(int(outlier_mask.sum()), generator=g) * 10
    return codebook, index, mask, outlier_mask, values


def run(matrix, x, bias):
    return matrix.matvec(x[0], bias)[None] if x.shape[0] == 1 else matrix.matmul(x, bias)


@pytest.mark.parametrize("rows, width", [(5, 7), (40, 33), (64, 384), (130, 100)])
@pytest.mark.parametrize("tokens", [1, 3, 17, 24, 30])
def test_row_tables_match_a_dense_matmul(rows, width, tokens):
    codebook, index, _, _, _ = per_row_state(rows, width, seed=rows + width)
    matrix = RowTableMatrix.from_index(codebook, index)
    weight = shared_weight(codebook, index)
    assert torch.equal(matrix.to_dense(), weight)
    x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(tokens))
    bias = torch.randn(rows, generator=torch.Generator().manual_seed(1))
    want = (x.double() @ weight.double().T).float()
    for b in (bias, None):
        got = run(matrix, x.numpy(), NO_BIAS if b is None else b.numpy())
        assert got.shape == (tokens, rows)
        torch.testing.assert_close(torch.from_numpy(got), want + (0 if b is None else b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tokens", [1, 17, 32])
def test_outliers_are_a_sparse_correction_to_the_exact_weight(tokens):
    codebook, index, mask, outlier_mask, values = per_row_state(96, 150, seed=3, outlier_share=0.01, pruned=0.05)
    codebook = codebook[:, :15]  # 15 values + the pruned weights' +0.0 fill the 16-entry table
    index = index % 15
    matrix = RowTableMatrix.from_index(codebook, index, mask, outlier_mask, values)
    exact = shared_weight(codebook, index, mask, outlier_mask, values)
    assert matrix.outliers.nnz == int(outlier_mask.sum()) > 0
    torch.testing.assert_close(matrix.to_dense(), exact)
    x = torch.randn(tokens, 150, generator=torch.Generator().manual_seed(4))
    bias = torch.randn(96)
    got = torch.from_numpy(run(matrix, x.numpy(), bias.numpy()))
    torch.testing.assert_close(got, F.linear(x.double(), exact.double(), bias.double()).float(), rtol=1e-5, atol=1e-4)


def test_one_table_for_all_rows_is_broadcast():
    g = torch.Generator().manual_seed(5)
    codebook, index = torch.randn(12, generator=g), torch.randint(0, 12, (20, 40), generator=g)
    matrix = RowTableMatrix.from_index(codebook, index)
    assert matrix.per_row == 0 and matrix.tables.shape == (1, 16)
    x = torch.randn(17, 40, generator=g)
    torch.testing.assert_close(torch.from_numpy(matrix.matmul(x.numpy(), NO_BIAS)), x @ codebook[index].T,
                               rtol=1e-5, atol=1e-5)


def test_layout_and_limits():
    index = np.arange(40, dtype=np.uint8).reshape(2, 20) % 16  # width 20: 2 blocks of 16, padded to 4 (64 inputs)
    packed = rowtables.pack(index)
    assert packed.shape == (2, 4 * row_ir.BLOCK_BYTES)
    assert packed[0, 3] == index[0, 3] | index[0, 19] << 4  # byte j of a pair of blocks: input j low, j + 16 high
    assert packed[0, 16] == 0  # the second pair: inputs 32.. are padding (code 0)
    assert np.array_equal(rowtables.unpack(packed, 20), index)
    with pytest.raises(ValueError, match="at most 16"):
        RowTableMatrix.from_index(torch.zeros(3, 17), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="at most 15"):  # 16 values and pruned weights: 17 codes
        RowTableMatrix.from_index(torch.zeros(3, 16), torch.zeros(3, 4, dtype=torch.long),
                                  torch.tensor([[True, False, True, True]] * 3))
    assert rowtables.eligible(torch.zeros(4, 16), False) and not rowtables.eligible(torch.zeros(4, 16), True)
    assert rowtables.eligible(torch.zeros(4, 15), True) and not rowtables.eligible(None, False)
    # inputs of one call beyond what fits the L1 budget run in several runs of blocks, each a multiple of 4
    assert rowtables.block_runs(96, 17).tolist() == [0, 32, 64, 96] and rowtables.block_runs(24, 17).tolist() == [0, 24]


def test_kernel_looks_codes_up_in_a_register():
    """One vpermps (LLVM may spell it vpermd) per 16 codes, FMAs with the inputs as memory operands, no gathers."""
    code = jit.assembly(row_ir.kernel_ir(17))
    assert ("vpermps" in code or "vpermd" in code) and "vfmadd231ps\t(" in code.replace("    ", "\t")
    assert "gather" not in code and "gather" not in jit.assembly(row_ir.kernel_ir(1))


needs_two_numba_threads = pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2,
                                             reason="numba has one thread here (a one-CPU machine)")


def one_and_two_threads_agree(matrix, x, bias):
    """``matrix``'s (matmul, matvec) of ``x`` at 1 thread, after checking that at 2 threads its 200 rows split
    in halves and give the same bits."""
    one = matrix.matmul(x, bias), matrix.matvec(x[0], bias)
    torch.set_num_threads(2)
    try:
        two = matrix.matmul(x, bias), matrix.matvec(x[0], bias)
        assert matrix._bounds().tolist() == [0, 100, 200]
    finally:
        torch.set_num_threads(1)
    assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    return one


@needs_two_numba_threads
def test_wide_layers_split_into_runs_and_threads_agree(monkeypatch):
    # 307,200 weights: threads; 96 blocks: three runs at 17 tokens, each adding its outliers' entries
    codebook, index, _, outlier_mask, values = per_row_state(200, 1536, seed=6, outlier_share=0.005)
    matrix = RowTableMatrix.from_index(codebook, index, None, outlier_mask, values)
    x = torch.randn(17, 1536, generator=torch.Generator().manual_seed(7)).numpy()
    bias = torch.randn(200).numpy()
    one = one_and_two_threads_agree(matrix, x, bias)
    want = x.astype(np.float64) @ matrix.to_dense().numpy().T.astype(np.float64) + bias
    np.testing.assert_allclose(one[0], want, rtol=1e-4, atol=1e-4)


def test_copies_run_on_their_own_arrays():
    codebook, index, _, outlier_mask, values = per_row_state(40, 24, seed=8, outlier_share=0.05)
    original = RowTableMatrix.from_index(codebook, index, None, outlier_mask, values)
    x = torch.randn(17, 24).numpy()
    want = original.matmul(x, NO_BIAS)
    for copied in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
        assert copied._codes_at == copied.codes.ctypes.data != original._codes_at
        assert np.array_equal(copied.matmul(x, NO_BIAS), want)
    layer = runtime.CodedLinear(original, None)
    twin = copy.deepcopy(layer)
    del layer, original
    assert np.array_equal(twin(torch.from_numpy(x)).numpy(), want)
    assert "row tables" in repr(twin) and "exact outliers" in repr(twin)


def minilm_like(seed=0):
    """A small encoder-MLP-like stack of Linear layers, with WeightedKMeans per-row 4-bit codebooks and 1%
    exact outliers (the pretrained pipeline's format)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(96, 384), nn.GELU(), nn.Linear(384, 96), nn.GELU(), nn.Linear(96, 96))
    deepzip.quantize(model, WeightedKMeans(bits=4, importance="none", granularity="row", outliers=0.01))
    return model


def test_convert_and_load_a_weighted_kmeans_model_choose_row_tables(tmp_path):
    model = minilm_like()
    assert len(outliers_of(model)) == 3  # every layer has exact outliers
    x = torch.randn(17, 96)
    with torch.no_grad():
        expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode="codes")
    decisions = runtime.decisions(fast)
    assert [d["kernel"] for d in decisions] == ["codes"] * 3
    assert [d["codes_kernel"] for d in decisions] == ["row tables + outliers"] * 3
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast(x[:1]), expected[:1], rtol=1e-4, atol=1e-4)  # batch 1
    deepzip.save(model, tmp_path / "m.dz")
    loaded = runtime.load(tmp_path / "m.dz", minilm_like(seed=1), mode="codes")
    assert [d["codes_kernel"] for d in runtime.decisions(loaded)] == ["row tables + outliers"] * 3
    torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-4)
    # auto mode offers the codes to calibration: timed against sparse and dense, the fastest kept
    auto = runtime.convert(copy.deepcopy(model), example=x, fuse="off")
    assert all("codes_s" in d and d["codes_kernel"] == "row tables + outliers" for d in runtime.decisions(auto))
    torch.testing.assert_close(auto(x), expected, rtol=1e-4, atol=1e-4)


def test_the_chain_runs_row_table_layers_without_outliers():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in (model[0], model[2]):
        codebook, index, _, _, _ = per_row_state(layer.out_features, layer.in_features, seed=layer.in_features)
        install(layer, "weight", codebook, index)
    x = torch.randn(5, 48)
    with torch.no_grad():
        expected = model(x)
    fast = runtime.convert(model, example=x, mode="codes", fuse="on")
    assert runtime.fusion(fast)["fused"]
    assert [d["codes_kernel"] for d in runtime.decisions(fast)] == ["row tables"] * 2
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), width=st.integers(1, 150), tokens=st.integers(1, 50), k=st.integers(1, 15),
       outlier_share=st.sampled_from([0.0, 0.02, 0.3]), pruned=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**16))
def test_any_shape_matches_its_exact_weight(rows, width, tokens, k, outlier_share, pruned, seed):
    codebook, index, mask, outlier_mask, values = per_row_state(rows, width, k, seed, outlier_share, pruned)
    matrix = RowTableMatrix.from_index(codebook, index, mask, outlier_mask, values)
    exact = shared_weight(codebook, index, mask, outlier_mask, values)
    x = torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed))
    bias = torch.randn(rows, generator=torch.Generator().manual_seed(seed + 1))
    got = torch.from_numpy(run(matrix, x.numpy(), bias.numpy()))
    torch.testing.assert_close(got, F.linear(x.double(), exact.double(), bias.double()).float(), rtol=1e-4, atol=1e-4)


def test_one_codebook_with_outliers_runs_in_broadcast_row_tables():
    """The panels take one codebook but no outliers: such a layer runs in row tables, its table broadcast."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32))
    deepzip.quantize(model, WeightedKMeans(bits=4, importance="none", granularity="layer", outliers=0.02))
    x = torch.randn(17, 64)
    with torch.no_grad():
        expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode="codes", fuse="off")
    assert [d["codes_kernel"] for d in runtime.decisions(fast)] == ["row tables + outliers"] * 2
    assert all(fast.get_submodule(d["layer"]).matrix.per_row == 0 for d in runtime.decisions(fast))
    torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)


def test_two_python_threads_compiling_and_calling_at_once_agree_with_dense():
    """llvmlite compiles without the GIL: two threads meeting a new token count at once must share one
    compiled kernel (a second engine used to free the first's code under its caller: a segfault, or NaN)."""
    import threading

    g = torch.Generator().manual_seed(11)
    matrices = [RowTableMatrix.from_index(torch.randn(64, 16, generator=g), torch.randint(0, 16, (64, 384), generator=g))
                for _ in range(2)]
    wants, results, errors = {}, {}, []
    barrier = threading.Barrier(2)

    def work(i):
        try:
            for tokens in (5, 9, 13, 21):  # token counts no other test compiles first
                x = np.random.default_rng(tokens).standard_normal((tokens, 384)).astype(np.float32)
                barrier.wait()
                results[i, tokens] = matrices[i].matmul(x, NO_BIAS)
                wants[i, tokens] = x @ matrices[i].to_dense().numpy().T
        except Exception as error:  # noqa: BLE001  (re-raised below, in the test's thread)
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 8
    for key, got in results.items():
        np.testing.assert_allclose(got, wants[key], rtol=1e-5, atol=1e-4)
    for tokens in (5, 9, 13, 21):
        assert matrices[0]._plans[tokens][0] is matrices[1]._plans[tokens][0]  # one compiled function a count


def test_the_input_scratch_is_cache_line_aligned():
    """The kernel's IR declares its input loads 64-byte aligned: the scratch they read must be."""
    for count in (1, 17, 1000, 4099):
        array, address = rowtables._scratch(count)
        assert address % 64 == 0 and array.ctypes.data == address


def test_an_infinite_input_stays_infinite_beside_an_outlier():
    """An outlier's correction multiplies its own lane only: 0 * inf elsewhere would make NaN."""
    codebook = torch.ones(1, 16)
    index = torch.zeros(1, 16, dtype=torch.int64)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, 3] = True
    matrix = RowTableMatrix.from_index(codebook, index, None, mask, torch.tensor([2.0]))
    x = np.zeros((1, 16), np.float32)
    x[0, 7] = np.inf
    assert matrix.matmul(x, NO_BIAS)[0, 0] == np.inf


def test_the_matrix_refuses_inputs_it_would_misread():
    matrix = RowTableMatrix.from_index(torch.randn(4, 16), torch.randint(0, 16, (4, 24)))
    x = np.zeros((2, 24), np.float32)
    with pytest.raises(TypeError, match="float32"):
        matrix.matmul(x.astype(np.float64), NO_BIAS)
    with pytest.raises(TypeError, match="float32"):
        matrix.matmul(x, np.zeros(4))  # a float64 bias would be read as float32
    with pytest.raises(ValueError, match="24 wide, and a bias of 4 or none; got x \\(2, 23\\)"):
        matrix.matmul(x[:, :23].copy(), NO_BIAS)
    with pytest.raises(ValueError, match="bias \\(3,\\)"):
        matrix.matvec(x[0], np.zeros(3, np.float32))


def test_a_copied_layer_reads_the_bias_a_state_dict_loads():
    """The kernels read the bias through a numpy view; a copy must view its own buffer, also after
    load_state_dict (found by review: a deepcopy kept reading the old bias)."""
    layer = runtime.CodedLinear(RowTableMatrix.from_index(torch.randn(4, 16), torch.randint(0, 16, (4, 24))),
                                torch.zeros(4))
    x = torch.randn(3, 24)
    for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        twin.load_state_dict({"bias": torch.full((4,), 5.0)})
        torch.testing.assert_close(twin(x), layer(x) + 5.0)


# ---------------------------------------------------------------------------------------------- int8
# precision="int8": each row's table on its own int8 grid, inputs quantized per row, vpshufb + vpdpbusd,
# exact outliers added in fp32 after the kernel

needs_int8 = pytest.mark.skipif(not rowtables.available("int8"), reason="int8 row tables need AVX-512 BW + VNNI")


def integer_reference(matrix, x, bias):
    """What the kernel computes, from the same int8 levels and the same quantized inputs: the exact integer
    product (int64), scaled by each input row's and each output row's scale, plus the bias and the
    outliers' fp32 correction."""
    width = matrix.shape[1]
    q, scales = panels.quantize_rows(x, width, 1.0)  # the kernel's rounding (its quantizer shares it)
    levels = matrix.levels.astype(np.int64)
    index = matrix.index().astype(np.int64)
    weights = np.take_along_axis(levels, index, axis=1) if matrix.per_row else levels[0][index]
    integer = (q.astype(np.int64) - 128) @ weights.T
    want = scales[:, None].astype(np.float64) * matrix.weight_scales[None, :].astype(np.float64) * integer
    if matrix.outliers is not None:
        want += x.astype(np.float64) @ matrix.outliers.to_dense().numpy().astype(np.float64).T
    return want + (bias if len(bias) else 0)


@needs_int8
@pytest.mark.parametrize("rows, width", [(5, 7), (40, 70), (64, 384), (33, 1537)])
@pytest.mark.parametrize("tokens", [1, 17, 30])
def test_int8_row_tables_are_exact_integer_products_with_each_rows_scale(rows, width, tokens):
    codebook, index, _, _, _ = per_row_state(rows, width, seed=rows + width)
    matrix = RowTableMatrix.from_index(codebook, index, precision="int8")
    assert matrix.precision == "int8" and matrix.levels.shape == (rows, 16)
    x = np.random.default_rng(tokens).standard_normal((tokens, width)).astype(np.float32) * 3
    bias = np.random.default_rng(1).standard_normal(rows).astype(np.float32)
    for b in (bias, NO_BIAS):
        got = run(matrix, x, b)
        assert got.shape == (tokens, rows)
        want = integer_reference(matrix, x, b)
        # equal but for fp32's rounding of the int32 -> float conversion and the two scalings
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_int8
def test_int8_row_tables_stay_within_int8_rounding_of_the_fp32_weight():
    """Against the fp32 per-row weight: each row's levels are within half its scale, and the products within
    int8 dynamic quantization's error (reported: the worst error relative to the output's peak)."""
    codebook, index, _, _, _ = per_row_state(384, 384, seed=3)
    matrix = RowTableMatrix.from_index(codebook, index, precision="int8")
    dense = shared_weight(codebook, index).numpy()
    assert np.abs(matrix.to_dense().numpy() - dense).max(axis=1).tolist() <= \
        (matrix.weight_scales / 2 + 1e-6).tolist()
    x = np.random.default_rng(2).standard_normal((17, 384)).astype(np.float32)
    exact = x.astype(np.float64) @ dense.T.astype(np.float64)
    error = np.abs(matrix.matmul(x, NO_BIAS) - exact).max() / np.abs(exact).max()
    print(f"int8 row tables, 384x384 at 17 tokens: max error / peak output = {error:.4f}")
    assert 1e-4 < error < 0.02  # int8 rounding: neither exact nor worse than a few scales


@needs_int8
@pytest.mark.parametrize("tokens", [1, 17, 30])
def test_outliers_are_exact_fp32_corrections_to_the_int8_codes(tokens):
    codebook, index, mask, outlier_mask, values = per_row_state(48, 100, k=15, seed=5, outlier_share=0.03, pruned=0.2)
    matrix = RowTableMatrix.from_index(codebook, index, mask, outlier_mask, values, precision="int8")
    exact = shared_weight(codebook, index, mask, outlier_mask, values).numpy()
    # codes plus correction are the exact weight again at the outliers (values ~10x the tables')
    dense = matrix.to_dense().numpy()
    positions = outlier_mask.numpy()
    np.testing.assert_allclose(dense[positions], exact[positions], rtol=1e-6, atol=1e-5)
    x = np.random.default_rng(tokens).standard_normal((tokens, 100)).astype(np.float32)
    bias = np.random.default_rng(6).standard_normal(48).astype(np.float32)
    got = run(matrix, x, bias)
    want = integer_reference(matrix, x, bias)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    reference = x.astype(np.float64) @ exact.T.astype(np.float64) + bias
    assert np.abs(got - reference).max() < 0.02 * np.abs(reference).max()


@needs_int8
def test_one_table_for_all_rows_is_broadcast_in_int8():
    table = np.linspace(-1, 1, 16, dtype=np.float32)
    index = np.random.default_rng(7).integers(0, 16, (20, 130)).astype(np.uint8)
    matrix = RowTableMatrix((20, 130), index, table, precision="int8")
    assert matrix.per_row == 0 and matrix.lstride == 0 and matrix.weight_scales.shape == (20,)
    x = np.random.default_rng(8).standard_normal((17, 130)).astype(np.float32)
    want = integer_reference(matrix, x, NO_BIAS)
    np.testing.assert_allclose(matrix.matmul(x, NO_BIAS), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_int8
def test_int8_kernel_looks_64_codes_up_and_multiplies_by_vpdpbusd():
    """One vpshufb per 64 codes, one vpdpbusd a token, no gathers (for 1, 17 and 24 tokens)."""
    for tokens in (1, 17, 24):
        code = jit.assembly(row_ir.int8_kernel_ir(tokens))
        assert "vpshufb" in code and "vpdpbusd" in code and "gather" not in code


@needs_int8
def test_int8_layout_and_limits():
    index = np.random.default_rng(9).integers(0, 16, (3, 70)).astype(np.uint8)
    packed = rowtables.pack_int8(index)
    assert packed.shape == (3, 64)  # 70 inputs pad to two chunks of 64: 32 bytes each
    assert np.array_equal(rowtables.unpack_int8(packed, 70), index)
    assert (rowtables.unpack_int8(packed)[:, 70:] == 0).all()
    levels, scales = rowtables.int8_tables(np.array([[0.5, -1.27], [0.0, 0.0]], np.float32))
    assert levels.tolist() == [[50, -127], [0, 0]] and scales.tolist() == pytest.approx([0.01, 1.0])
    with pytest.raises(ValueError, match="at most 66311 inputs"):
        RowTableMatrix((1, panels.INT8_MAX_WIDTH + 1), np.zeros((1, panels.INT8_MAX_WIDTH + 1), np.uint8),
                       np.zeros(16, np.float32), precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        RowTableMatrix((1, 4), np.zeros((1, 4), np.uint8), np.zeros(16, np.float32), precision="int4")
    empty = RowTableMatrix((3, 0), np.zeros((3, 0), np.uint8), np.zeros((3, 16), np.float32), precision="int8")
    assert empty.matmul(np.zeros((2, 0), np.float32), np.ones(3, np.float32)).tolist() == [[1.0] * 3] * 2


@needs_int8
@needs_two_numba_threads
def test_int8_threads_agree_with_one():
    # 307,200 weights: threads split the rows
    codebook, index, _, outlier_mask, values = per_row_state(200, 1536, seed=6, outlier_share=0.005)
    matrix = RowTableMatrix.from_index(codebook, index, None, outlier_mask, values, precision="int8")
    x = np.random.default_rng(10).standard_normal((17, 1536)).astype(np.float32)
    bias = np.random.default_rng(11).standard_normal(200).astype(np.float32)
    one = one_and_two_threads_agree(matrix, x, bias)
    want = integer_reference(matrix, x, bias)
    np.testing.assert_allclose(one[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_int8
def test_int8_copies_run_on_their_own_arrays():
    codebook, index, _, outlier_mask, values = per_row_state(40, 24, seed=8, outlier_share=0.05)
    original = RowTableMatrix.from_index(codebook, index, None, outlier_mask, values, precision="int8")
    x = np.random.default_rng(12).standard_normal((17, 24)).astype(np.float32)
    want = original.matmul(x, NO_BIAS)
    for copied in (copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
        assert copied._int8_at[0] == copied.luts.ctypes.data != original._int8_at[0]
        assert np.array_equal(copied.matmul(x, NO_BIAS), want)


@needs_int8
def test_convert_and_load_at_int8_run_per_row_codebooks_in_int8(tmp_path):
    model = minilm_like()
    x = torch.randn(17, 96)
    with torch.no_grad():
        expected = model(x)
    fast = runtime.convert(copy.deepcopy(model), mode="codes", precision="int8")
    assert [d["codes_kernel"] for d in runtime.decisions(fast)] == ["row tables int8 + outliers"] * 3
    assert "row tables, int8" in repr(fast)
    for batch in (x, x[:1]):
        got = fast(batch)
        assert (got - expected[: len(batch)]).abs().max() < 0.03 * expected.abs().max()
    deepzip.save(model, tmp_path / "m.dz")
    loaded = runtime.load(tmp_path / "m.dz", minilm_like(seed=1), mode="codes", precision="int8")
    assert [d["codes_kernel"] for d in runtime.decisions(loaded)] == ["row tables int8 + outliers"] * 3
    torch.testing.assert_close(loaded(x), fast(x))
    with pytest.raises(Unsupported, match="precision='int8'"):  # the chain multiplies in fp32
        runtime.convert(copy.deepcopy(model), example=x, mode="codes", fuse="on", precision="int8")


@needs_int8
@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), width=st.integers(1, 200), tokens=st.integers(1, 50), k=st.integers(1, 15),
       outlier_share=st.sampled_from([0.0, 0.02, 0.3]), pruned=st.sampled_from([0.0, 0.2]),
       seed=st.integers(0, 2**16))
def test_int8_any_shape_is_its_integer_product(rows, width, tokens, k, outlier_share, pruned, seed):
    """Every token count's groups (16 + 8 + 4 + 2 + 1 lanes), blocks of tokens past 24, padded chunks,
    pruned codes and outliers: the integer product of the same operands, within fp32 rounding."""
    codebook, index, mask, outlier_mask, values = per_row_state(rows, width, k, seed, outlier_share, pruned)
    matrix = RowTableMatrix.from_index(codebook, index, mask, outlier_mask, values, precision="int8")
    x = np.random.default_rng(seed).standard_normal((tokens, width)).astype(np.float32)
    bias = np.random.default_rng(seed + 1).standard_normal(rows).astype(np.float32)
    want = integer_reference(matrix, x, bias)
    np.testing.assert_allclose(run(matrix, x, bias), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
