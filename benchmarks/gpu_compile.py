"""The GPU kernels compiled for an NVIDIA H100 (sm_90a) without a GPU: what each tuned configuration costs
in registers, spills and load instructions, read from Triton's offline compiler and the ptxas it ships.

    python benchmarks/gpu_compile.py [--quick] [--out benchmarks/results]

This costs no device time and answers what a lent GPU should not have to: does every configuration the
autotuner may pick compile, does any spill registers to local memory, and are the weights' loads wide
(16-byte `ld.global.v4`) or byte by byte. Compiled as launched for layers whose sizes are multiples of 16
(AlexNet's, MiniLM's): every pointer 16-byte aligned (torch's allocations are) and every int argument a
multiple of 16, as Triton's launcher specializes them, except the sliced layout's group arguments. Counts are of load instructions in the code (a
loop body once), not of loads executed. --quick: the first configuration of each kernel and the sliced
kernel's 16-row one; prints, writes nothing (the JSON goes to --json when given).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":  # the kernels must be compiled, not interpreted
    sys.exit("benchmarks/gpu_compile.py compiles the kernels: run it without TRITON_INTERPRET=1")

import _common  # noqa: E402,F401  (sys.path)
from _common import RESULTS, table, write_results  # noqa: E402

CSR_ARGS = {"indptr": "*i32", "cols": "*u16", "data": "*u8", "codebook": "*fp32", "x": "*fp32", "bias": "*fp32",
            "y": "*fp32", "rows": "i32"}
SLICED_ARGS = {"lengths": "*i32", "order": "*i32", "cols": "*u16", "data": "*u8", "codebook": "*fp32", "x": "*fp32",
               "bias": "*fp32", "y": "*fp32", "rows": "i32",
               **{f"f{g}": "i32" for g in range(1, 8)}, **{f"n{g}": "i32" for g in range(8)}}  # the slice groups
CODES_ARGS = {"packed": "*u8", "codebook": "*fp32", "x": "*fp32", "bias": "*fp32", "y": "*fp32", "rows": "i32"}
BATCH_ARGS = {"batch": "i32", "stride_x": "i32", "stride_y": "i32"}
CODED = {"CODED": True, "HAS_BIAS": True}
# Triton's launcher specializes an int argument that is a multiple of 16 (and 16-byte aligned pointers): the
# AlexNet / MiniLM layers' sizes, strides and buckets all are, and stride_xt always is (`_transposed`); the
# slice groups' arguments are never specialized (do_not_specialize), so they are left as plain ints.
GROUP_ARGS = tuple(f"f{g}" for g in range(1, 8)) + tuple(f"n{g}" for g in range(8))
DENSE_CODES = {"width": 4096, "row_bytes": 2048, "BITS": 4, "HAS_BIAS": True}  # a 4096-wide layer's 4-bit codes
KERNELS = {  # name -> (the tuned kernel in triton_kernels, its runtime arguments' types, constants besides the config's)
    "csr_mv": ("_csr_mv_tuned", {**CSR_ARGS, "nnz_bucket": "i32"}, CODED),
    "csr_mm": ("_csr_mm_tuned", {**CSR_ARGS, **BATCH_ARGS, "nnz_bucket": "i32"}, CODED),
    "sliced_mv": ("_sliced_mv_tuned", {**SLICED_ARGS, "steps_bucket": "i32"}, CODED),
    "sliced_mm": ("_sliced_mm_tuned", {**{k: v for k, v in SLICED_ARGS.items() if k != "x"}, "xt": "*fp32",
                                       "batch": "i32", "stride_xt": "i32", "stride_y": "i32", "steps_bucket": "i32"},
                  CODED),
    "codes_mv": ("_codes_mv_tuned", CODES_ARGS, DENSE_CODES),
    "codes_mm": ("_codes_mm_tuned", {**CODES_ARGS, **BATCH_ARGS}, DENSE_CODES),
}


def ptxas() -> Path:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not path.exists():
        raise SystemExit(f"Triton's CUDA backend has no ptxas at {path}; install the triton wheel from PyPI")
    return path


def compile_for_h100(tuned, types: dict, constants: dict, config) -> dict:
    """One configuration compiled: its load instructions by kind, registers, spills and shared memory."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, names = tuned.fn, tuned.fn.arg_names
    consts = {**constants, **config.kwargs}
    signature = {n: ("constexpr" if n in consts else types[n]) for n in names}
    aligned = [n for n, t in signature.items() if t.startswith("*") or (t == "i32" and n not in GROUP_ARGS)]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32),
                            options={"num_warps": config.num_warps, "num_stages": config.num_stages})
    ptx = kernel.asm["ptx"]
    target = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)  # sm_90a: Hopper's own instructions allowed
    done = subprocess.run([str(ptxas()), f"-arch={target}", "-v", "-", "-o", os.devnull], input=ptx,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed: {done.stderr[-1000:]}")
    report = done.stdout + done.stderr
    loads = collections.Counter(re.findall(r"ld\.global(?:\.[a-z0-9]+)*", ptx))
    return {"config": {**config.kwargs, "num_warps": config.num_warps}, "loads": dict(sorted(loads.items())),
            "registers": int(re.search(r"Used (\d+) registers", report).group(1)),
            "spill_bytes": int(re.search(r"(\d+) bytes spill stores", report).group(1)),
            "shared_bytes": kernel.metadata.shared}


def compile_all(quick: bool) -> list[dict]:
    from deepzip.runtime import triton_kernels as tk

    rows = []
    for name, (attribute, types, constants) in KERNELS.items():
        tuned = getattr(tk, attribute)
        configs = tuned.configs
        if quick:
            wide = [c for c in configs if name == "sliced_mv" and c.kwargs["BLOCK_R"] == tk.SLICE][:1]
            configs = [configs[0]] + [c for c in wide if c is not configs[0]]
        for config in configs:
            try:
                rows.append({"kernel": name, **compile_for_h100(tuned, types, constants, config)})
            except Exception as exc:  # noqa: BLE001  (recorded: the point is to find the ones that fail)
                rows.append({"kernel": name, "config": {**config.kwargs, "num_warps": config.num_warps},
                             "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500]})
    return rows


def _config_text(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def render(rows: list[dict], info: dict) -> str:
    lines = ["# GPU kernels compiled for an H100 (sm_90a), no GPU needed", "",
             f"Triton {info['triton']}, ptxas from its CUDA backend, {info['date']}; every tuned configuration of "
             f"every kernel (`deepzip.runtime.triton_kernels`), as launched for layers whose sizes are multiples of "
             f"16 (pointers 16-byte aligned, int arguments multiples of 16 but the slice groups'). Loads: the global load "
             f"instructions in the code by width (`v4.b32` = 16 bytes; the gathers of the input and the codebook "
             f"are 4-byte loads by nature), not loads executed.", ""]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["kernel"], _config_text(r["config"]), "-", "-", "-", f"**{r['error'][:120]}**"])
        else:
            loads = ", ".join(f"{k.removeprefix('ld.global.')} x{v}" for k, v in r["loads"].items())
            body.append([r["kernel"], _config_text(r["config"]), r["registers"], r["spill_bytes"], r["shared_bytes"], loads])
    lines.append(table(["kernel", "configuration", "registers", "spill bytes", "shared bytes", "global loads"], body))
    failed = [r for r in rows if "error" in r]
    spilled = [r for r in rows if r.get("spill_bytes")]
    lines += ["", f"{len(rows)} configurations: {len(failed)} failed to compile, {len(spilled)} spill."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few configurations; prints, writes nothing")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where gpu_compile.json / .md go")
    parser.add_argument("--json", type=Path, help="also write the rows here (used by the tests)")
    args = parser.parse_args()
    import triton

    info = {"triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    rows = compile_all(args.quick)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=2) + "\n")
    markdown = render(rows, info)
    if args.quick:
        print(markdown)
    else:
        write_results("gpu_compile", {"info": info, "rows": rows}, markdown, args.out)


if __name__ == "__main__":
    main()
