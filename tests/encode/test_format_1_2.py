"""Format 1.2: mask positions (an adaptive context model of the pruning mask) and the adaptive coder."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import deepzip
from deepzip import FormatError, models
from deepzip.encode import adaptive, container, decode_bytes, encode_model, mask_model, read
from deepzip.encode.report import gap_order0

RESULTS = Path(__file__).parents[2] / "benchmarks" / "results"
OVERHEAD_BYTES = 8  # the range coder's flush: at most two 32-bit words beyond the ideal code length


def random_mask(shape, density, seed=0):
    return np.random.default_rng(seed).random(int(np.prod(shape))) < density


def structured_mask(seed=0):
    """A LeNet-300-100 fc1-like mask: 300 x 784, border input columns pruned, rows of varied density."""
    rng = np.random.default_rng(seed)
    image = np.zeros((28, 28))
    image[4:24, 4:24] = 1.0
    column = image.reshape(-1) * rng.uniform(0.3, 1.0, 784)
    row = rng.gamma(1.0, 0.08, size=(300, 1))
    return (rng.random((300, 784)) < np.clip(row * column, 0, 1)).reshape(-1)


@pytest.mark.parametrize("shape", [[1], [7], [1, 1], [1, 300], [300, 1], [17, 33], [4, 3, 5, 5], [2, 3, 4],
                                   [0, 5], [5, 0], [0]])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
@pytest.mark.parametrize("order", mask_model.ORDERS)
def test_masks_round_trip(shape, density, order):
    flat = random_mask(shape, density, seed=len(shape))
    code = mask_model.encode(flat, shape, order, 8, 32)
    assert code.count == int(flat.sum())
    assert np.array_equal(mask_model.decode(code.payload, shape, order, 8, 32, code.count, "t"), flat)


def test_best_encoding_round_trips_and_picks_the_cheapest_model():
    flat, shape = structured_mask(), [300, 784]
    code = mask_model.best_encoding(flat, shape)
    for order in mask_model.ORDERS:
        for a in mask_model.PRIORS:
            for b in mask_model.PRIORS:
                assert code.bound_bits <= mask_model.code_length_bits(flat, shape, order, a, b) + 1e-6
    assert np.array_equal(mask_model.decode(code.payload, shape, code.order, code.alpha, code.beta, code.count, "t"),
                          flat)
    assert mask_model.best_encoding(flat, shape, max_steps=10) is None  # no order fits 10 steps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_bytes_are_within_half_a_percent_of_the_model_bound_which_beats_the_gap_bound(seed):
    flat, shape = structured_mask(seed), [300, 784]
    code = mask_model.best_encoding(flat, shape)
    bound = code.bound_bits / 8
    assert len(code.payload) <= 1.005 * bound + OVERHEAD_BYTES
    _, _, gap_bits = gap_order0(flat, np.bincount(np.zeros(int(flat.sum()), np.int64), minlength=17), 0)
    assert bound < 0.97 * gap_bits / 8  # the structure is worth at least 3% of the order-0 gap bound
    # pruned border columns cost almost nothing: ~5 bits a column of 300 zeros, far below a dense column's
    image = np.zeros((28, 28), bool)
    image[4:24, 4:24] = True
    border = np.zeros((300, 784), bool)
    border[:, image.reshape(-1)] = flat.reshape(300, 784)[:, image.reshape(-1)]
    assert mask_model.code_length_bits(border.reshape(-1), shape, code.order, code.alpha, code.beta) <= code.bound_bits


def test_probabilities_follow_the_spec_formula():
    # line 1 (t = 1), element 0, first chunk: u = 1, S = 2, r = 0, e_m = 0, N = 4
    lines = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], bool)
    (_, p), = mask_model.probabilities(lines, 8, 32)
    g = (2 + 0.5) / (1 * 4 + 1.0)
    pc = (1 + 8 * g) / (1 + 8)
    pr = (0 + 32 * g) / (0 + 32)
    assert p[1, 0] == min(max((pc * pr) / g, 2.0 ** -16), 1 - 2.0 ** -16)
    assert mask_model.chunk_bounds(40) == [0, 8, 16, 32, 40] and mask_model.steps([3, 40], "rows") == 12
    assert mask_model.steps([3, 40], "columns") == 40 and mask_model.steps([0, 40], "rows") == 0


@pytest.mark.parametrize("alphabet,n", [(1, 50), (2, 0), (17, 1), (17, 15_000), (1000, 3000)])
def test_adaptive_streams_round_trip_near_their_bound(alphabet, n):
    rng = np.random.default_rng(alphabet)
    weights = rng.dirichlet(np.ones(alphabet) * 0.5)
    symbols = rng.choice(alphabet, size=n, p=weights)
    payload = adaptive.encode(symbols, alphabet)
    assert np.array_equal(adaptive.decode(payload, n, alphabet, "t"), symbols)
    assert len(payload) <= 1.005 * adaptive.code_length_bits(symbols, alphabet) / 8 + OVERHEAD_BYTES


def test_adaptive_decoding_refuses_bad_payloads():
    payload = adaptive.encode(np.arange(17).repeat(20), 17)
    for bad, message in [(payload[:-1], "whole number"), (payload + b"\0\0\0\x01", "not the encoding"),
                         (b"\xff" * 8, "decoding failed"), (b"\0\0\0\0", "not the encoding")]:
        with pytest.raises(FormatError, match=message):
            adaptive.decode(bad, 340, 17, "t")
    with pytest.raises(FormatError, match="alphabets of 1..65538"):
        adaptive.decode(b"", 3, 70_000, "t")


def test_mask_decoding_refuses_bad_payloads():
    flat = random_mask([20, 30], 0.1)
    code = mask_model.encode(flat, [20, 30], "rows", 8, 8)
    with pytest.raises(FormatError, match="header declares"):
        mask_model.decode(code.payload, [20, 30], "rows", 8, 8, code.count + 1, "t")
    with pytest.raises(FormatError, match="whole number"):
        mask_model.decode(code.payload[:-1], [20, 30], "rows", 8, 8, code.count, "t")
    with pytest.raises(FormatError, match="not the encoding of its mask"):
        mask_model.decode(code.payload + b"\x01\x02\x03\x04", [20, 30], "rows", 8, 8, code.count, "t")
    with pytest.raises(FormatError, match="empty payload"):
        mask_model.decode(b"\0\0\0\0", [0, 30], "rows", 8, 8, 0, "t")


def pruned_model(quantize=True):
    model = models.build("lenet300_100", input_shape=(1, 8, 8), seed=0)
    deepzip.prune(model, sparsity=0.8)
    if quantize:
        deepzip.quantize(model, bits=3)
    return model


@pytest.mark.parametrize("quantize", [True, False])
def test_models_round_trip_exactly_in_1_2_and_deterministically(quantize):
    model = pruned_model(quantize)
    data, report = encode_model(model)
    assert struct.unpack_from("<HH", data, 8) == (1, 2)
    assert data == encode_model(pruned_model(quantize))[0]  # writing twice: the same bytes
    header, state = decode_bytes(data)
    assert any(r.get("positions") and "mask" in r["positions"] for r in header["tensors"])
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in state.items():
        assert torch.equal(value, expected[key].to(value.dtype)), key
    old, _ = encode_model(model, coding="1.1")
    assert len(data) < len(old) and struct.unpack_from("<HH", old, 8) in ((1, 0), (1, 1))
    for stream in report["streams"]:
        assert stream["bytes"] <= 1.005 * stream["bound_bytes"] + OVERHEAD_BYTES or stream["coder"] in ("raw", "huffman")


def test_conv_weights_with_mask_positions_round_trip(tmp_path):
    model = models.build("lenet5", seed=0)
    deepzip.prune(model, sparsity=0.7)
    deepzip.quantize(model, bits=4)
    path = tmp_path / "lenet5.dz"
    deepzip.save(model, path)
    header, _ = read(path)
    conv = next(r for r in header["tensors"] if r["name"] == "conv2.weight")
    assert "mask" in conv["positions"] and len(conv["shape"]) == 4
    loaded = deepzip.load(path, keep_state=True)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", ["lenet300_100", "lenet5"])
def test_committed_1_0_files_read_and_rewrite_smaller_with_identical_weights(name):
    path = RESULTS / f"{name}.dz"
    data = path.read_bytes()
    assert struct.unpack_from("<HH", data, 8) == (1, 0)
    header, old_state = read(path)
    new, _ = encode_model(deepzip.load(path, keep_state=True), metadata=header["metadata"])
    assert len(new) < len(data)
    _, state = decode_bytes(new)
    assert state.keys() == old_state.keys() and all(torch.equal(state[k], old_state[k]) for k in state)


# ------------------------------------------------------------------------------ hostile headers

DATA = encode_model(pruned_model())[0]


def repack(mutate, version=(1, 2)) -> bytes:
    header, sections = container.unpack(DATA)
    header = json.loads(json.dumps(header))
    sections = list(sections)
    mutate(header, sections)
    text = json.dumps({**header, "sections": [[len(s), zlib.crc32(s)] for s in sections]}).encode()
    return container.frame(zlib.compress(text), sections, version)


def masked(header):
    return next(r for r in header["tensors"] if r.get("positions") and "mask" in r["positions"])


def setter(key, value):
    def mutate(header, sections):
        masked(header)["positions"]["mask"][key] = value
    return mutate


def test_the_unmutated_repack_decodes():
    decode_bytes(repack(lambda h, s: None))


@pytest.mark.parametrize("mutate,message", [
    (setter("order", "diagonal"), "order must be one of rows, columns"),
    (setter("order", ["rows"]), "order must be one of"),
    (setter("count", -1), r"count must be an integer in 0\.\."),
    (setter("count", 10 ** 19), r"count must be an integer in 0\.\."),
    (setter("count", 1.5), "count must be an integer"),
    (setter("alpha", 0), r"alpha must be an integer in 1\.\.1024"),
    (setter("beta", 1025), r"beta must be an integer in 1\.\.1024"),
    (setter("beta", True), "beta must be an integer"),
    (setter("section", 10 ** 6), "bad section number"),
    (setter("extra", 1), "unknown key"),
    (lambda h, s: masked(h)["positions"]["mask"].pop("alpha"), "lacks the key"),
    (lambda h, s: masked(h)["positions"].update(span_bits=3), "unknown key"),
    (lambda h, s: masked(h)["positions"].update(mask=[1, 2]), "must be an object"),
    (setter("count", 3), "indices: .* indices for 3 positions|kept positions, the header declares"),
])
def test_hostile_mask_fields_are_refused(mutate, message):
    with pytest.raises(FormatError, match=message):
        decode_bytes(repack(mutate))


def test_hostile_mask_payloads_and_shapes_are_refused():
    def truncate(header, sections):
        spec = masked(header)["positions"]["mask"]
        sections[spec["section"]] = sections[spec["section"]][:-3]

    def garbage(header, sections):
        spec = masked(header)["positions"]["mask"]
        sections[spec["section"]] = bytes(range(256))[: len(sections[spec["section"]]) // 4 * 4]

    def count_and_indices(header, sections):  # consistent counts, but the mask decodes to something else
        record = masked(header)
        record["positions"]["mask"]["count"] += 1
        record["indices"]["count"] += 1

    for mutate, message in [(truncate, "whole number of 32-bit words"),
                            (garbage, "decoding failed|not the encoding|header declares|indices"),
                            (count_and_indices, "header declares|indices|decoding failed|not the encoding")]:
        with pytest.raises(FormatError, match=message):
            decode_bytes(repack(mutate))


def test_the_mask_step_limit_bounds_decoding_time():
    def many_lines(header, sections):  # 2^20 lines of one element each: more steps than the file allows
        record = masked(header)
        record["shape"] = [1, 1 << 20]
        record["positions"]["mask"]["order"] = "columns"
        record["positions"]["mask"]["count"] = record["indices"]["count"]
    with pytest.raises(FormatError, match="mask decoding steps in all exceed the limit"):
        decode_bytes(repack(many_lines))


def test_1_2_features_are_refused_in_older_files():
    with pytest.raises(FormatError, match=r"positions lacks the key\(s\) 'span_bits', 'stream'"):
        decode_bytes(repack(lambda h, s: None, version=(1, 1)))

    def adaptive_only(header, sections):  # keep gap positions, but an adaptive indices stream
        header["tensors"] = [r for r in header["tensors"] if r["encoding"] == "dense"]
        header["tensors"].append({"name": "w", "shape": [40], "encoding": "shared",
                                  "codebook": {"dtype": "f32", "size": 2, "section": len(sections)},
                                  "positions": None,
                                  "indices": {"section": len(sections) + 1, "coder": "adaptive", "count": 40,
                                              "alphabet": 2}})
        used = {r["section"] for r in header["tensors"] if "section" in r}
        keep = sorted(used)
        remap = {old: new for new, old in enumerate(keep)}
        for r in header["tensors"][:-1]:
            r["section"] = remap[r["section"]]
        tail = [struct.pack("<2f", -1.0, 1.0), adaptive.encode(np.arange(40) % 2, 2)]
        sections[:] = [sections[i] for i in keep] + tail
        header["tensors"][-1]["codebook"]["section"] = len(keep)
        header["tensors"][-1]["indices"]["section"] = len(keep) + 1

    _, state = decode_bytes(repack(adaptive_only))
    assert torch.equal(state["w_index"].long(), torch.arange(40) % 2)
    with pytest.raises(FormatError, match="coder must be one of raw, huffman, rans, got 'adaptive'"):
        decode_bytes(repack(adaptive_only, version=(1, 1)))

    def big_alphabet(header, sections):
        record = next(r for r in header["tensors"] if r.get("positions") and "span_bits" in r["positions"]) \
            if any(r.get("positions") and "span_bits" in r["positions"] for r in header["tensors"]) else None
        stream = record["positions"]["stream"] if record else None
        if stream is None:  # every layer uses mask positions here: make one a gap layer's stream by hand
            record = masked(header)
            record["positions"] = {"span_bits": 20, "stream": {"section": record["positions"]["mask"]["section"],
                                                               "coder": "adaptive", "count": 1, "alphabet": 1 << 20}}
            return
        stream.update(coder="adaptive", alphabet=1 << 20)
        record["positions"]["span_bits"] = 20
    with pytest.raises(FormatError, match="adaptive coder takes alphabets of at most 65538"):
        decode_bytes(repack(big_alphabet))
