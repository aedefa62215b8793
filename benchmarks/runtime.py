"""Batch-1 sparse inference vs dense (issue 7), side by side in one process.

    python benchmarks/runtime.py          # needs a quiet machine: it measures time

For each layer and setting (batch 1 and 32, 1 and 2 threads), the median of many interleaved calls of:
dense F.linear / conv2d, torch CSR, scipy CSR, deepzip (fp32 values) and deepzip (uint8 codebook
codes), as speedups over dense; plus the bytes of each representation. Layers: (a) the paper's
AlexNet fc shapes at its densities, (b) the pruned LeNet layers of benchmarks/compress.py's files,
(c) the whole compressed LeNets end to end (runtime.load with calibration vs the dense model).
"""

from __future__ import annotations

import argparse
import copy

import _common  # noqa: F401  (sys.path)
import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from _common import RESULTS, table, write_results
import deepzip
from deepzip import models, runtime
from deepzip.prune import apply_masks, get_masks
from deepzip.quantize import codebooks
from deepzip.runtime import SparseLinear, SparseMatrix
from deepzip.runtime.timing import compare_models, interleaved

ALEXNET = [("fc6 9216x4096", (4096, 9216), 0.09), ("fc7 4096x4096", (4096, 4096), 0.09), ("fc8 4096x1000", (1000, 4096), 0.25)]
METHODS = ("dense", "torch CSR", "scipy CSR", "deepzip", "deepzip codes", "deepzip auto")


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
    return fns, memory, {name: coded_w if name == "deepzip codes" else w for name in (*fns, "deepzip auto", "dense module", "dense module again")}


def calibrated(w: torch.Tensor, x: torch.Tensor):
    """deepzip as a user gets it: runtime.convert of the pruned layer, calibrated on ``x`` (sparse or dense)."""
    model = torch.nn.Sequential(torch.nn.Linear(w.shape[1], w.shape[0], bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(w)
    plain = copy.deepcopy(model)  # the same module left dense: module-call overhead on both sides
    apply_masks(model, {"0.weight": w != 0})
    fast = runtime.convert(model, example=x)
    return fast, runtime.decisions(fast)[0]["kernel"], plain


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
            fns["dense module again"] = copy.deepcopy(fns["dense module"])  # the noise floor of the auto column
            with torch.no_grad():
                for name, fn in fns.items():  # every contender computes the same product
                    out = torch.as_tensor(np.asarray(fn(x))).float()
                    reference = F.linear(x, weights[name])
                    if not torch.allclose(out, reference, rtol=1e-4, atol=1e-3):
                        raise AssertionError(f"{label}: {name} differs from dense by {(out - reference).abs().max():.2e}")
            ratios = measure(fns, x, repeats)
            ratios["deepzip auto"] /= ratios["dense module"]  # auto against the dense module it replaces
            ratios["noise"] = ratios.pop("dense module again") / ratios.pop("dense module")
            results.append({"layer": label, "threads": threads, "batch": batch, **ratios, "memory": memory,
                            "auto_kernel": kernel})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--only", default="", help="measure only the AlexNet layers or LeNet models whose name contains this "
                        "(e.g. 'fc7', 'lenet5'); the results are then printed, not written")
    args = parser.parse_args()
    rows: list[dict] = []
    for label, shape, density in ALEXNET:
        if args.only not in f"AlexNet {label}":
            continue
        g = torch.Generator().manual_seed(0)
        w = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < density)
        fns, memory, weights = linear_contenders(w)
        layer_rows(f"AlexNet {label} at {density:.0%}", fns, memory, weights, shape[1], args.repeats, rows)
        print(rows[-4:], flush=True)
    whole = {}
    for name in ("lenet300_100", "lenet5"):
        if args.only and args.only not in name:
            continue
        path = RESULTS / f"{name}.dz"
        if not path.exists():
            print(f"skipping {name}: run benchmarks/compress.py first to make {path}")
            continue
        model = deepzip.load(path, keep_state=True)
        masks, shared = get_masks(model), codebooks(model)
        for layer, (codebook, index) in shared.items():
            module = model.get_submodule(layer.rsplit(".", 1)[0])
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight.detach().clone()
            fns, memory, weights = linear_contenders(w, codebook.detach(), index, masks.get(layer, torch.ones_like(w, dtype=torch.bool)))
            layer_rows(f"{name} {layer} at {masks[layer].float().mean():.1%}", fns, memory, weights, w.shape[1],
                       args.repeats, rows)
        for threads in (1, 2):
            set_threads(threads)
            example = torch.randn(1, 1, 28, 28)
            fast = runtime.load(path, models.from_description, example=example)
            decisions = runtime.decisions(fast)
            dense = deepzip.load(path).eval()
            timing = compare_models(fast, dense, example, args.repeats * 2, control=copy.deepcopy(dense))
            whole[f"{name}, {threads} thread(s)"] = {**timing, "kernels": {d["layer"]: d["kernel"] for d in decisions},
                                                     "bytes": sum(d["sparse_bytes"] if d["kernel"] == "sparse" else d["dense_bytes"] for d in decisions)}
    md = ["# Sparse inference vs dense (batch 1 and 32)\n",
          "Speedup over dense `F.linear` (higher is better), median of interleaved calls in one process. "
          "`deepzip codes`: uint8 codebook indices + uint16 columns (weight sharing); AlexNet rows use a random "
          "5-bit codebook on the same pattern. `deepzip auto`: what `runtime.convert(model, example=x)` gives a "
          "user, deepzip's sparse kernel or dense as its calibration on that input chose (in brackets), as a speedup "
          "over the same `nn.Linear` module left dense (module-call overhead on both sides). `noise`: that dense module "
          "against a copy of itself, timed the same way: how far from 1.00x a ratio strays by chance.\n"]
    md.append(table(["layer", "threads", "batch", "dense us"] + list(METHODS[1:]) + ["noise"],
                    [[r["layer"], r["threads"], r["batch"], f"{r['dense_us']:.0f}"] + [f"{r[m]:.2f}x" for m in METHODS[1:-1]]
                     + [f"{r['deepzip auto']:.2f}x ({r['auto_kernel']})", f"{r['noise']:.2f}x"] for r in rows]))
    md += ["", "## Memory of each representation (bytes)\n",
           table(["layer"] + list(METHODS[:-1]), [[r["layer"]] + [f"{r['memory'][m]:,}" for m in METHODS[:-1]]
                                             for r in rows if r["threads"] == 1 and r["batch"] == 1])]
    if whole:
        md += ["", "## Whole compressed models, batch 1 (runtime.load with per-layer calibration vs dense)\n",
               table(["model", "deepzip us", "dense us", "speedup", "noise", "kernels"],
                     [[k, f"{v['deepzip'] * 1e6:.0f}", f"{v['dense'] * 1e6:.0f}", f"{v['speedup']:.2f}x", f"{v['noise']:.2f}x",
                       ", ".join(f"{a}: {b}" for a, b in v["kernels"].items())] for k, v in whole.items()])]
    if args.only:  # a partial run must not overwrite the committed results
        print("\n".join(md))
    else:
        write_results("runtime", {"layers": rows, "whole_models": whole}, "\n".join(md))


if __name__ == "__main__":
    main()
