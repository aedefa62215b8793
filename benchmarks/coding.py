"""Coding at the bound (issue 19): the committed .dz files re-encoded with format 1.2's coders.

    python benchmarks/coding.py [--quick] [--out benchmarks/results]

Decodes benchmarks/results/lenet300_100.dz and lenet5.dz (format 1.0 files), encodes the decoded models
again with the 1.2 writer (mask positions under an adaptive row x column context model, the adaptive
order-0 coder; the writer keeps the smaller coding per layer and stream), and reports per stream: the old
bytes and order-0 bound, the new bytes, the bound of the model the new stream uses, bytes / bound, and
the whole file's size and compression ratio (dense fp32 bytes of the state_dict / file bytes) before and
after. Also checks that the decoded weights are bit-identical and that writing the decoded model with
the 1.0 / 1.1 codings gives the committed bytes back. --quick: LeNet-5 only, no timing repeats.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (sys.path)
import torch

from _common import RESULTS, table, write_results
import deepzip
from deepzip.encode import build_report, decode_bytes, encode_model, open_file, read

MODELS = ("lenet300_100", "lenet5")


def compare(name: str) -> dict:
    path = RESULTS / f"{name}.dz"
    old = path.read_bytes()
    header, sections, size = open_file(path)
    old_report = build_report(header, sections, size)
    _, old_state = read(path)
    model = deepzip.load(path, keep_state=True)
    start = time.perf_counter()
    new, new_report = encode_model(model, metadata=header["metadata"])
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    _, new_state = decode_bytes(new)
    decode_s = time.perf_counter() - start
    identical = new_state.keys() == old_state.keys() and all(torch.equal(new_state[k], old_state[k]) for k in new_state)
    rewrite_1_1, _ = encode_model(model, metadata=header["metadata"], coding="1.1")
    old_streams = {(s["tensor"], s["stream"]): s for s in old_report["streams"]}
    streams = []
    for s in new_report["streams"]:
        o = old_streams[(s["tensor"], s["stream"])]
        streams.append({"tensor": s["tensor"], "stream": s["stream"], "old_coder": o["coder"], "old_bytes": o["bytes"],
                        "old_order0_bytes": o["entropy_bytes"], "coder": s["coder"], "bytes": s["bytes"],
                        "bound_bytes": s["bound_bytes"], "order0_bytes": s["entropy_bytes"],
                        "bytes_per_bound": s["bytes"] / max(s["bound_bytes"], 1e-9),
                        "within_half_percent": s["bytes"] <= 1.005 * s["bound_bytes"],
                        "within_half_percent_plus_8_bytes": s["bytes"] <= 1.005 * s["bound_bytes"] + 8})
    dense = new_report["dense_bytes"]
    return {"model": name, "old_version": f"{old[8]}.{old[10]}", "new_version": f"{new[8]}.{new[10]}",
            "dense_bytes": dense, "old_file_bytes": len(old), "new_file_bytes": len(new),
            "old_ratio": dense / len(old), "new_ratio": dense / len(new), "weights_bit_identical": identical,
            "rewrite_1_1_identical": rewrite_1_1 == old, "encode_s": encode_s, "decode_s": decode_s,
            "streams": streams}


def markdown(results: list[dict]) -> str:
    out = ["# Coding at the bound (issue 19): format 1.2 on the committed LeNet files", "",
           "Each committed 1.0 file decoded and encoded again by the 1.2 writer. *Bound*: the ideal code length of "
           "the model the new stream uses (mask positions: the row x column context model; `adaptive`: its KT "
           "counts); *order-0*: `n x H(symbols)` (for mask positions, of the gap stream the 1.0 writer makes).", ""]
    rows = [[r["model"], f"{r['old_version']} -> {r['new_version']}", f"{r['old_file_bytes']:,}", f"{r['new_file_bytes']:,}",
             f"{100 * (r['new_file_bytes'] / r['old_file_bytes'] - 1):+.1f}%", f"{r['old_ratio']:.1f}x",
             f"{r['new_ratio']:.1f}x", "yes" if r["weights_bit_identical"] else "**NO**",
             "yes" if r["rewrite_1_1_identical"] else "**NO**", f"{r['encode_s']:.2f} / {r['decode_s']:.2f}"]
            for r in results]
    out.append(table(["model", "version", "old bytes", "new bytes", "change", "old ratio", "new ratio",
                      "weights bit-identical", "1.1 rewrite = committed bytes", "encode / decode s"], rows))
    for r in results:
        out += ["", f"## {r['model']}", ""]
        rows = [[s["tensor"], s["stream"], s["old_coder"], f"{s['old_bytes']:,}", f"{s['old_order0_bytes']:,.0f}",
                 s["coder"], f"{s['bytes']:,}", f"{s['bound_bytes']:,.1f}", f"{s['bytes_per_bound']:.4f}",
                 f"{s['order0_bytes']:,.0f}", "yes" if s["within_half_percent"] else
                 ("+8 B" if s["within_half_percent_plus_8_bytes"] else "**no**")] for s in r["streams"]]
        out.append(table(["tensor", "stream", "old coder", "old bytes", "old order-0 bound", "new coder", "new bytes",
                          "model bound", "bytes / bound", "new order-0 bound", "within 0.5%"], rows))
    misses = [f"{r['model']} {s['tensor']} {s['stream']} ({s['bytes_per_bound']:.4f})" for r in results
              for s in r["streams"] if not s["within_half_percent"]]
    out += ["", "Streams over 1.005 x bound: " + (", ".join(misses) + " (all within 0.5% + 8 bytes of the range "
            "coder's flush)" if misses and all(s["within_half_percent_plus_8_bytes"] for r in results for s in r["streams"])
            else ", ".join(misses) or "none") + "."]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="LeNet-5 only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = [compare(name) for name in (("lenet5",) if args.quick else MODELS)]
    write_results("coding", {"quick": args.quick, "results": results}, markdown(results), args.out)


if __name__ == "__main__":
    main()
