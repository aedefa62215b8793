"""The panel kernels alone on a transformer's Linear shapes (issue 17), side by side in one process.

    python benchmarks/panels.py [--quick] [--out benchmarks/results]

all-MiniLM-L6-v2's Linear shapes (384x384: attention q/k/v/output, 384->1536 and 1536->384: the MLP) with
a random 16-value codebook, at 1, 17 (a sentence) and 32 input rows, 1 thread: torch fp32 (`nn.Linear`,
MKL), torch int8 dynamic quantization (`quantize_dynamic`, fbgemm), and deepzip's panel kernels
(`runtime.panels.PanelMatrix.matmul`, as `CodedLinear` calls it): fp32, int8 on AVX-512 VNNI, int8 on AMX
tiles (each where the CPU has it). Medians of interleaved calls (shuffled order), as speedups over torch
fp32; each output checked against its reference first (fp32: the dense product; int8: the exact integer
product of the quantized operands). --quick: one shape, few repeats, prints only.

A second table: the pretrained pipeline's format (`WeightedKMeans`: a 16-value codebook per output row,
optionally 0.5% exact outliers) on the same shapes and rows: torch fp32, the gather-based row kernels
(`runtime.codes.CodedMatrix`), and the row-table kernel (`runtime.rowtables.RowTableMatrix`, without and
with the outliers' CSR correction), fp32 and int8 (`precision="int8"`: each row's table on its own int8
grid, inputs quantized per row, `vpdpbusd`; the outliers added in fp32 before the store).
"""

from __future__ import annotations

import argparse
import copy
import warnings
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import numpy as np
import torch

from _common import RESULTS, table, write_results
from deepzip.runtime import panels, rowtables
from deepzip.runtime.codes import CodedMatrix
from deepzip.runtime.layers import SparseMatrix
from deepzip.runtime.timing import interleaved

SHAPES = [("attention q/k/v/output", 384, 384), ("MLP in", 1536, 384), ("MLP out", 384, 1536)]  # (outputs, inputs)
ROWS = (1, 17, 32)
OUTLIERS = 0.005  # compress-pretrained's share of exact weights


def contenders(outputs: int, inputs: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """name -> callable(x) for one layer, plus its codes, codebook and bias."""
    rng = np.random.default_rng(0)
    table_values = np.sort(rng.standard_normal(16)).astype(np.float32) * 0.05
    index = rng.integers(0, 16, (outputs, inputs)).astype(np.uint8)
    bias = rng.standard_normal(outputs).astype(np.float32)
    linear = torch.nn.Linear(inputs, outputs).eval().requires_grad_(False)
    linear.weight.copy_(torch.from_numpy(table_values[index]))
    linear.bias.copy_(torch.from_numpy(bias))
    with warnings.catch_warnings():  # torch.ao's deprecation notice: it is still what users run
        warnings.simplefilter("ignore")
        int8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(copy.deepcopy(linear)), {torch.nn.Linear},
                                                      dtype=torch.qint8)
    fns = {"torch fp32": lambda x: linear(torch.from_numpy(x)), "torch int8 dynamic": lambda x: int8(torch.from_numpy(x))}
    if panels.available("fp32"):
        fp32 = panels.PanelMatrix((outputs, inputs), index, table_values)
        fns["panels fp32"] = lambda x: fp32.matmul(x, bias)
    if panels.available("int8"):
        vnni = panels.PanelMatrix((outputs, inputs), index, table_values, "int8")
        fns["panels int8 (VNNI)"] = lambda x: _without_amx(vnni, x, bias)
        if panels.amx_available():
            fns["panels int8 (AMX)"] = lambda x: vnni.matmul(x, bias)
    return fns, index, table_values, bias


def per_row_contenders(outputs: int, inputs: int) -> tuple[dict, dict, np.ndarray]:
    """name -> callable(x) for one layer with a codebook per row, name -> the dense weight it multiplies by,
    and the bias."""
    rng = np.random.default_rng(1)
    tables = np.sort(rng.standard_normal((outputs, 16)), axis=1).astype(np.float32) * 0.05
    index = rng.integers(0, 16, (outputs, inputs)).astype(np.uint8)
    bias = rng.standard_normal(outputs).astype(np.float32)
    weight = np.take_along_axis(tables, index.astype(np.int64), axis=1)
    exact = weight.copy()
    where = rng.random((outputs, inputs)) < OUTLIERS
    exact[where] = rng.standard_normal(int(where.sum())).astype(np.float32) * 0.5
    linear = torch.nn.Linear(inputs, outputs).eval().requires_grad_(False)
    linear.weight.copy_(torch.from_numpy(exact))
    linear.bias.copy_(torch.from_numpy(bias))
    rows_kernel = CodedMatrix.from_index(torch.from_numpy(tables), torch.from_numpy(index.astype(np.int64)))
    fns = {"torch fp32": lambda x: linear(torch.from_numpy(x)), "rows (gathers)": lambda x: rows_kernel.matmul(x, bias)}
    weights = {"torch fp32": exact, "rows (gathers)": weight}
    if rowtables.available():
        plain = rowtables.RowTableMatrix((outputs, inputs), index, tables)
        correction = SparseMatrix.from_dense(torch.from_numpy(exact - weight), mask=torch.from_numpy(where))
        with_outliers = rowtables.RowTableMatrix((outputs, inputs), index, tables, correction)
        fns["row tables"] = lambda x: plain.matmul(x, bias)
        fns[f"row tables + {OUTLIERS:.1%} outliers"] = lambda x: with_outliers.matmul(x, bias)
        weights["row tables"], weights[f"row tables + {OUTLIERS:.1%} outliers"] = weight, exact
    if rowtables.available("int8"):
        plain8 = rowtables.RowTableMatrix((outputs, inputs), index, tables, precision="int8")
        outliers8 = rowtables.RowTableMatrix((outputs, inputs), index, tables, correction, precision="int8")
        fns["row tables int8"] = lambda x: plain8.matmul(x, bias)
        fns[f"row tables int8 + {OUTLIERS:.1%} outliers"] = lambda x: outliers8.matmul(x, bias)
        weights["row tables int8"], weights[f"row tables int8 + {OUTLIERS:.1%} outliers"] = weight, exact
    return fns, weights, bias


def _without_amx(matrix, x, bias):
    """The VNNI kernel on a CPU that also has AMX: the same matrix, the tile path switched off for the call."""
    original = panels.amx_available
    panels.amx_available = lambda: False
    try:
        return matrix.matmul(x, bias)
    finally:
        panels.amx_available = original


def check(fns: dict, x: np.ndarray, dense: np.ndarray | dict, bias: np.ndarray) -> None:
    """Each contender's output against the dense product (``dense``: one weight, or name -> its weight)."""
    for name, fn in fns.items():
        weight = dense[name] if isinstance(dense, dict) else dense
        want = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
        scale = np.abs(want).max()
        got = np.asarray(fn(x), dtype=np.float64)
        limit = 0.03 if "int8" in name else 1e-5  # int8: its rounding
        if np.abs(got - want).max() > limit * scale:
            raise AssertionError(f"{name} differs from the dense product by {np.abs(got - want).max():.2e}")


def measure(quick: bool, repeats: int, per_row: bool = False) -> list[dict]:
    """Timings on every shape and row count: one codebook (the panel kernels) or, ``per_row``, a codebook
    per row (the row tables)."""
    torch.set_num_threads(1)
    rows_out = []
    for label, outputs, inputs in SHAPES[:1] if quick else SHAPES:
        if per_row:
            fns, weights, bias = per_row_contenders(outputs, inputs)
        else:
            fns, index, table_values, bias = contenders(outputs, inputs)
            weights = table_values[index]
        for rows in ROWS[1:2] if quick else ROWS:
            x = np.random.default_rng(rows).standard_normal((rows, inputs)).astype(np.float32)
            check(fns, x, weights, bias)
            times = interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeats=repeats)
            rows_out.append({"layer": f"{label} {inputs}->{outputs}", "rows": rows, "us": {k: v * 1e6 for k, v in times.items()},
                             "speedup": {k: times["torch fp32"] / v for k, v in times.items()}})
            print(rows_out[-1], flush=True)
    return rows_out


def _table(rows: list[dict]) -> str:
    names = list(rows[0]["us"])
    lines = [[r["layer"], r["rows"], f"{r['us']['torch fp32']:.0f}"] + [f"{r['speedup'][n]:.2f}x" for n in names[1:]]
             for r in rows]
    return table(["layer", "rows", "torch fp32 us", *names[1:]], lines)


def render(rows: list[dict], per_row: list[dict]) -> str:
    return "\n".join([
        "# Panel kernels on MiniLM's Linear shapes (1 thread)\n",
        "Speedup over torch fp32 (`nn.Linear`, MKL) of the same layer, median of interleaved calls; a random "
        "16-value codebook; rows: input rows (17: one sentence's tokens). `panels int8`: the codebook on an int8 "
        "grid and each input row quantized to int8 (dynamic int8 quantization's rounding); VNNI: `vpdpbusd`; "
        "AMX: tiles (`tdpbusd`). Written by `benchmarks/panels.py`.\n",
        _table(rows),
        "\n## A codebook per row (the pretrained pipeline's `WeightedKMeans` format)\n",
        "The same shapes with a random 16-value codebook per output row: the gather-based row "
        "kernels (`runtime.codes`), the row-table kernel (`runtime.rowtables`: the row's table in a register, "
        f"`vpermps`), and the row tables with {OUTLIERS:.1%} of the weights exact (a CSR correction the kernel adds "
        "before its reduction; torch multiplies that exact weight). `row tables int8`: each row's table on its own "
        "int8 grid, each input row quantized to int8, `vpshufb` + `vpdpbusd` (the outliers added in fp32 to the scaled "
        "sums before the store).\n",
        _table(per_row)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one shape at 17 rows, few repeats; prints, writes nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where panels.json / panels.md go")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls of each contender")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    repeats = min(args.repeats, 20) if args.quick else args.repeats
    rows, per_row = measure(args.quick, repeats), measure(args.quick, repeats, per_row=True)
    markdown = render(rows, per_row)
    if args.quick:
        print(markdown)
    else:
        write_results("panels", {"rows": rows, "per_row": per_row}, markdown, args.out)


if __name__ == "__main__":
    main()
