"""Trained quantization of the pruned LeNets on Fashion-MNIST (issue 5).

    python benchmarks/quantize.py         # needs the pruned models of benchmarks/prune.py (reused or made)

Measures: accuracy vs bits (fc 1..8, conv 2..8) for k-means with each init and for uniform
quantization, with and without centroid fine-tuning; the paper's setting (8-bit conv, 5-bit fc,
fine-tuned) against the pruned model; the lowest lossless bits per layer type; automatic per-layer
bits for an accuracy budget; and kmeans_1d speed on 1M weights at k=256.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, RUNS, table, write_results
from prune import pruned_model
from deepzip import quantize as Q
from deepzip.config import hashname
from deepzip.prune import prunable_weights
from deepzip.report.plots import accuracy_vs_bits, codebook_histograms
from deepzip.train import BASELINES, QuantizeConfig, evaluate, train

FINETUNE = QuantizeConfig(finetune_epochs=1)  # the sweep's fine-tuning budget: one epoch per point
LOSSLESS = 0.001  # "no loss": within 0.1 point of the pruned model


def quantized(model, bits, method="kmeans", init="linear", finetune: QuantizeConfig | None = None,
              splits=None, name="", tag=""):
    """A copy of ``model`` quantized with ``bits`` (and fine-tuned); returns (copy, test accuracy).

    Layers of a kind ``bits`` does not mention stay fp32 (the sweeps vary one kind at a time).
    """
    trial = copy.deepcopy(model)
    _, kinds = prunable_weights(trial)
    keep_fp32 = [n for n, kind in kinds.items() if isinstance(bits, dict) and kind not in bits and n not in bits]
    options = {"init": init} if method == "kmeans" else {}
    Q.quantize(trial, bits, method, exclude=keep_fp32, **options)
    if finetune is None:
        return trial, evaluate(trial, splits.test)[1]
    run_dir = RUNS / f"{hashname(finetune, 'quantize_' + name)}_{tag}"
    result = train(trial, splits, finetune.finetune_config(BASELINES[name]), run_dir=run_dir, resume=True, progress=False)
    return trial, result.final["test_acc"]


def sweep(name, model, splits, kind, bit_range, fine_tune_methods):
    """Accuracy vs bits of one layer kind (the other kind stays fp32)."""
    series = {}
    methods = [("kmeans", i) for i in ("linear", "density", "random", "optimal")] + [("uniform", "linear")]
    for method, init in methods:
        label = "uniform" if method == "uniform" else f"k-means {init}"
        for tuned in (False, True):
            if tuned and label not in fine_tune_methods:
                continue
            points = []
            for b in bit_range:
                _, acc = quantized(model, {kind: b}, method, init, FINETUNE if tuned else None, splits, name,
                                   f"{kind}{b}_{method}_{init}")
                points.append((b, acc))
                print(f"{name} {kind} {label} {'ft' if tuned else 'no-ft'} {b} bits: {acc:.4f}", flush=True)
            series[f"{label}, {'fine-tuned' if tuned else 'no fine-tune'}"] = points
    return series


def kmeans_speed() -> dict:
    w = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    out = {}
    for init in ("linear", "density", "random"):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            Q.kmeans_1d(w, 256, init)
            times.append(time.perf_counter() - started)
        out[init] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results, md = {}, ["# Trained quantization (Fashion-MNIST, pruned LeNets)\n"]
    speed = kmeans_speed()
    md += ["`kmeans_1d` on 1M weights, k=256 (median of 5): " +
           ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in speed.items()) + "\n"]
    for name in args.models:
        model, record, dense_acc, splits = pruned_model(name)
        pruned_acc = evaluate(model, splits.test)[1]
        entry = {"dense_test_acc": dense_acc, "pruned_test_acc": pruned_acc}
        kinds = {"fc": range(1, 9)} if name == "lenet300_100" else {"conv": range(2, 9), "fc": range(1, 9)}
        tuned_methods = ({"k-means linear", "k-means density", "k-means random", "uniform"} if name == "lenet300_100"
                         else {"k-means linear", "uniform"})
        entry["sweeps"] = {}
        for kind, bit_range in kinds.items():
            series = sweep(name, model, splits, kind, bit_range, tuned_methods)
            entry["sweeps"][kind] = series
            accuracy_vs_bits(series, RESULTS / f"quantize_{name}_{kind}.png",
                             f"{name}: {kind} layers quantized (others fp32)", pruned_acc)
            tuned = series["k-means linear, fine-tuned"]
            lossless = min((b for b, acc in tuned if acc >= pruned_acc - LOSSLESS), default=None)
            entry.setdefault("lowest_lossless_bits", {})[kind] = lossless

        # The paper's setting: 8-bit conv, 5-bit fc, linear init, fine-tuned (2 epochs).
        paper_cfg = QuantizeConfig(finetune_epochs=2)
        paper_model, _ = quantized(model, paper_cfg.bits_spec(), splits=splits)
        paper_before = evaluate(paper_model, splits.test)[1]
        codebooks_before = {n: cb.detach().clone() for n, (cb, _) in Q.codebooks(paper_model).items()}
        original = {n: w.detach().clone() for n, w in prunable_weights(model)[0].items()}
        paper_model, paper_acc = quantized(model, paper_cfg.bits_spec(), finetune=paper_cfg, splits=splits,
                                           name=name, tag="paper")
        codebook_histograms({n: (original[n], codebooks_before[n], cb.detach()) for n, (cb, _) in
                             Q.codebooks(paper_model).items()}, RESULTS / f"codebooks_{name}.png",
                            f"{name}: weights and shared values (8-bit conv, 5-bit fc)")
        entry["paper_setting"] = {"bits": Q.layer_bits(paper_model), "test_acc_quantized": paper_before,
                                  "test_acc_finetuned": paper_acc, "drop_points": 100 * (pruned_acc - paper_acc),
                                  "meets_target": pruned_acc - paper_acc <= 0.001}

        # Automatic bits: fewest bits per layer whose validation drop (layer alone) is within 0.1 point.
        val = lambda m: evaluate(m, splits.val)[1]  # noqa: E731
        curves = Q.bits_sensitivity(model, val, range(1, 9), progress=False)
        auto_bits = Q.allocate_bits(curves, val(model), Q.nonzero_counts(model), max_drop=LOSSLESS)
        _, auto_acc = quantized(model, auto_bits, finetune=paper_cfg, splits=splits, name=name, tag="auto")
        counts = Q.nonzero_counts(model)
        entry["automatic"] = {"bits": auto_bits, "test_acc_finetuned": auto_acc,
                              "mean_bits": sum(auto_bits[n] * counts[n] for n in counts) / sum(counts.values())}
        results[name] = entry

        md += [f"## {name}\n", f"Dense {dense_acc:.2%}; pruned (92%) {pruned_acc:.2%}.\n",
               table(["setting", "bits per layer", "test acc", "vs pruned"],
                     [["paper: 8-bit conv, 5-bit fc, quantized", _bits(entry["paper_setting"]["bits"]),
                       f"{paper_before:.2%}", f"{100 * (paper_before - pruned_acc):+.2f}"],
                      ["paper: 8-bit conv, 5-bit fc, fine-tuned", _bits(entry["paper_setting"]["bits"]),
                       f"{paper_acc:.2%}", f"{100 * (paper_acc - pruned_acc):+.2f}"],
                      [f"automatic (drop <= {LOSSLESS:.1%} per layer), fine-tuned", _bits(auto_bits),
                       f"{auto_acc:.2%}", f"{100 * (auto_acc - pruned_acc):+.2f}"]]),
               f"\nTarget: the paper's setting within 0.1 point of the pruned model: "
               f"{'met' if entry['paper_setting']['meets_target'] else '**missed**'}. "
               f"Lowest lossless bits (k-means linear, fine-tuned 1 epoch): "
               + ", ".join(f"{k}: {v}" for k, v in entry["lowest_lossless_bits"].items()) + "\n"]
        for kind, series in entry["sweeps"].items():
            bits = [b for b, _ in next(iter(series.values()))]
            md += [f"### {name}: {kind} layers, accuracy vs bits (`quantize_{name}_{kind}.png`)\n",
                   table(["method"] + [f"{b} bit" for b in bits],
                         [[label] + [f"{acc:.2%}" for _, acc in points] for label, points in series.items()]), ""]
        write_results("quantize", {"kmeans_speed_s": speed, "results": results}, "\n".join(md))


def _bits(bits: dict) -> str:
    return ", ".join(f"{n.removesuffix('.weight')} {b}" for n, b in bits.items())


if __name__ == "__main__":
    main()
