"""The paper's Table 2/3 for a .dz file, computed from the file itself (so `save` and `inspect` agree).

Per layer: weights, % kept, weight bits and index bits with fixed-width codes (P+Q) and as coded in
the file (P+Q+H), compress rates against dense fp32; per stream: coder, bytes, Shannon bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bits import width
from .records import read_stream
from .streams import entropy_bits


def _stream_stats(tensor: str, role: str, stream: dict, sections: list[bytes], numel: int):
    symbols = read_stream(stream, sections, numel, f"tensor {tensor!r} {role}")
    payload = len(sections[stream["section"]])
    stats = {"tensor": tensor, "stream": role, "coder": stream["coder"], "count": stream["count"],
             "alphabet": stream["alphabet"], "bytes": payload, "fixed_bytes": stream["count"] * width(stream["alphabet"]) / 8,
             "entropy_bytes": entropy_bits(symbols, stream["alphabet"]) / 8}
    return symbols, stats


def _compressed_row(t: dict, sections: list[bytes], numel: int, streams: list[dict]) -> dict[str, Any]:
    entries, pos_bytes, pos_fixed = numel, 0, 0.0
    if t.get("positions"):
        symbols, stats = _stream_stats(t["name"], "positions", t["positions"]["stream"], sections, numel)
        streams.append(stats)
        entries, pos_bytes, pos_fixed = len(symbols), stats["bytes"], stats["fixed_bytes"]
    if t["encoding"] == "shared":
        symbols, stats = _stream_stats(t["name"], "indices", t["indices"], sections, numel)
        streams.append(stats)
        k = t["codebook"]["size"]
        nonzero = int((symbols != k).sum()) if t.get("positions") else numel
        extra = len(sections[t["codebook"]["section"]]) + (len(sections[t["outliers"]["section"]]) if t.get("outliers") else 0)
        value_bytes, value_fixed, value_bits = stats["bytes"], stats["fixed_bytes"], width(k)
    else:  # sparse: raw values, fillers are zeros
        raw = len(sections[t["values"]])
        size = raw // max(entries, 1) if entries else 4
        values = np.frombuffer(sections[t["values"]], dtype=np.float16 if t["dtype"] == "f16" else np.float32)
        nonzero, extra = int(np.count_nonzero(values)), 0
        value_bytes = value_fixed = raw
        value_bits = 8 * size
    stored = extra + value_bytes + pos_bytes
    fixed = extra + value_fixed + pos_fixed
    return {"layer": t["name"], "encoding": t["encoding"], "weights": numel, "nonzero": nonzero,
            "kept": nonzero / max(numel, 1), "entries": entries, "bytes": stored, "fixed_bytes": fixed,
            "weight_bits_pq": value_bits, "weight_bits_pqh": 8 * value_bytes / max(entries, 1),
            "index_bits_pq": t["positions"]["span_bits"] if t.get("positions") else 0,
            "index_bits_pqh": 8 * pos_bytes / max(entries, 1)}


def build_report(header: dict, sections: list[bytes], file_bytes: int) -> dict[str, Any]:
    layers, streams, dense_total = [], [], 0
    for t in header["tensors"]:
        numel = int(np.prod(t["shape"])) if t["shape"] else 1
        dense_total += 4 * numel
        if t["encoding"] == "dense":
            size = len(sections[t["section"]])
            row = {"layer": t["name"], "encoding": "dense", "weights": numel, "nonzero": numel, "kept": 1.0,
                   "entries": numel, "bytes": size, "fixed_bytes": size, "weight_bits_pq": 8 * size / max(numel, 1),
                   "weight_bits_pqh": 8 * size / max(numel, 1), "index_bits_pq": 0, "index_bits_pqh": 0.0}
        else:
            row = _compressed_row(t, sections, numel, streams)
        row["rate_pq"] = 4 * numel / max(row["fixed_bytes"], 1)
        row["rate_pqh"] = 4 * numel / max(row["bytes"], 1)
        layers.append(row)
    payload = sum(len(s) for s in sections)
    fixed_total = sum(l["fixed_bytes"] for l in layers) + (file_bytes - payload)
    return {"layers": layers, "dense_bytes": dense_total, "file_bytes": file_bytes, "overhead_bytes": file_bytes - payload,
            "compression_pq": dense_total / fixed_total, "compression": dense_total / file_bytes, "streams": streams}


def format_table(report: dict[str, Any]) -> str:
    """The paper's table as Markdown."""
    head = ("| layer | # weights | weights % (P) | weight bits (P+Q) | weight bits (P+Q+H) | index bits (P+Q) "
            "| index bits (P+Q+H) | compress rate (P+Q) | compress rate (P+Q+H) |\n" + "|---" * 9 + "|")
    rows = []
    for l in report["layers"]:
        rows.append(f"| {l['layer']} | {l['weights']:,} | {100 * l['kept']:.1f}% | {l['weight_bits_pq']:.0f} | "
                    f"{l['weight_bits_pqh']:.2f} | {l['index_bits_pq']} | {l['index_bits_pqh']:.2f} | "
                    f"{l['rate_pq']:.1f}x | {l['rate_pqh']:.1f}x |")
    kept = sum(l["nonzero"] for l in report["layers"]) / max(sum(l["weights"] for l in report["layers"]), 1)
    total = sum(l["weights"] for l in report["layers"])
    rows.append(f"| **total** (file, headers included) | {total:,} | {100 * kept:.1f}% | | | | | "
                f"{report['compression_pq']:.1f}x | **{report['compression']:.1f}x** |")
    return head + "\n" + "\n".join(rows) + (f"\n\nDense fp32: {report['dense_bytes']:,} bytes; file: "
                                            f"{report['file_bytes']:,} bytes ({report['overhead_bytes']:,} of "
                                            f"header, checksums and framing).")


def format_streams(report: dict[str, Any]) -> str:
    head = "| tensor | stream | coder | symbols | alphabet | bytes | fixed-width bytes | entropy bound bytes |\n" + "|---" * 8 + "|"
    rows = [f"| {s['tensor']} | {s['stream']} | {s['coder']} | {s['count']:,} | {s['alphabet']} | {s['bytes']:,} | "
            f"{s['fixed_bytes']:,.0f} | {s['entropy_bytes']:,.0f} |" for s in report["streams"]]
    return head + "\n" + "\n".join(rows)
