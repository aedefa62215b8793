"""``deepzip bench model.dz``: batch-1 latency of deepzip's runtime against dense, per layer and whole."""

from __future__ import annotations

import copy

import torch

from ..api import load
from ..prune import remove
from ..quantize import finalize
from ..runtime import FUSE, PRECISIONS, convert, decisions as runtime_decisions, fusion
from ..runtime.convert import MODES
from ..runtime.timing import compare_models

HELP = "batch-1 latency of the sparse runtime vs dense for a .dz file, per layer and whole model"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="a .dz file of a registry model")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per measurement (median reported)")
    parser.add_argument("--mode", default="auto", choices=MODES,
                        help="auto: calibrate each layer and keep the faster of sparse and dense")
    parser.add_argument("--fuse", default="auto", choices=FUSE,
                        help="auto: run the whole model as one compiled chain where that is faster (runtime.chain)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="how weight-shared layers run from 4-bit codes multiply (runtime.panels): fp32 (exact), "
                             "or int8 (int8 dot products, dynamic int8 inputs; needs AVX-512 VNNI)")


def run(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {args.repeats}")
    compressed = load(args.file, keep_state=True)  # parsed once; the runtime is built from its masks and codebooks
    description = getattr(compressed, "_deepzip_description", {})
    example = torch.randn(1, *description.get("input_shape", (1, 28, 28)))
    fast = convert(copy.deepcopy(compressed), example=example, mode=args.mode, fuse=args.fuse, precision=args.precision)
    dense = remove(finalize(compressed)).eval()
    decisions = runtime_decisions(fast)
    # layer alone: sparse / dense us; model: the whole model's us with this layer sparse / dense
    print(f"{'layer':<12}{'density':>9}{'kernel':>8}{'sparse us':>11}{'dense us':>10}{'model sparse':>14}"
          f"{'model dense':>13}{'bytes':>10}{'dense bytes':>13}")
    us = lambda d, key: f"{d[key] * 1e6:.1f}" if key in d else "-"  # noqa: E731
    for d in decisions:
        print(f"{d['layer']:<12}{d['density']:>9.2%}{d['kernel']:>8}{us(d, 'sparse_s'):>11}{us(d, 'dense_s'):>10}"
              f"{us(d, 'model_sparse_s'):>14}{us(d, 'model_dense_s'):>13}{d['sparse_bytes']:>10,}{d['dense_bytes']:>13,}")
    grouped = [d["layer"] for d in decisions if "group_s" in d]
    if grouped:
        print(f"({', '.join(grouped)}: each too small a part of the model to race alone; raced together)")
    reverted = [d["layer"] for d in decisions if "whole_model_s" in d and d["kernel"] == "dense"]
    if reverted:
        print(f"({', '.join(reverted)} won alone, but together did not make the whole model faster: kept dense)")
    chain = fusion(fast)
    if chain["fused"]:
        forms = ", ".join(f"{d['layer']} {d['chain_kernel']}" for d in decisions if "chain_kernel" in d)
        print(f"whole model compiled into one chain ({chain['reason']}): {forms}")
    else:
        print(f"whole model not compiled into one chain: {chain['reason']}")
    whole = compare_models(fast, dense, example, args.repeats)
    with torch.inference_mode():
        error = (fast(example) - dense(example)).abs().max().item()
    print(f"\nwhole model, batch 1, {torch.get_num_threads()} torch thread(s): deepzip {whole['deepzip'] * 1e6:.1f} us, "
          f"dense {whole['dense'] * 1e6:.1f} us: {whole['speedup']:.2f}x (max output difference {error:.1e})")
    return 0
