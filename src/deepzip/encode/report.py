"""The paper's Table 2/3 for a .dz file, computed from the file itself (so `save` and `inspect` agree).

Per layer: weights, % kept, weight bits and index bits with fixed-width codes (P+Q) and as coded in
the file (P+Q+H), compress rates against dense fp32; per stream: coder, bytes, the bound of the model
its coder uses (`bound_bytes`: the adaptive and mask models' ideal code length, else the order-0 bound) and
the order-0 Shannon bound (`entropy_bytes`; for mask positions, that of the gap stream at its best span).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import mask_model
from .bits import width
from .records import best_span, is_mask, read_mask, read_stream
from .sparse import relative_indices
from .streams import entropy_bits, model_bound_bits


def _stream_stats(tensor: str, role: str, stream: dict, sections: list[bytes], numel: int):
    symbols = read_stream(stream, sections, numel, f"tensor {tensor!r} {role}")
    payload = len(sections[stream["section"]])
    order0 = entropy_bits(symbols, stream["alphabet"])
    stats = {"tensor": tensor, "stream": role, "coder": stream["coder"], "count": stream["count"],
             "alphabet": stream["alphabet"], "bytes": payload, "fixed_bytes": stream["count"] * width(stream["alphabet"]) / 8,
             "entropy_bytes": order0 / 8,
             "bound_bytes": model_bound_bits(symbols, stream["alphabet"], stream["coder"], order0) / 8}
    return symbols, stats


def gap_order0(flat_mask: np.ndarray, index_counts: np.ndarray, entry_bits: int) -> tuple[int, int, float]:
    """(span bits, entries, order-0 bits) of the gap stream a 1.0 / 1.1 writer makes of this mask (its span
    choice, `records.best_span`): what mask positions are compared with."""
    positions = np.flatnonzero(flat_mask)
    span_bits = best_span(np.diff(positions, prepend=-1), index_counts, len(flat_mask), entry_bits)
    symbols, _ = relative_indices(positions, span_bits)
    return span_bits, len(symbols), entropy_bits(symbols, 1 << span_bits)


def _gap_index_counts(t: dict, sections: list[bytes], numel: int) -> tuple[np.ndarray, int]:
    """(index symbol counts in the gap layout, value bits per entry of a sparse record)."""
    if t["encoding"] == "sparse":
        return np.zeros(1, np.int64), 16 if t["dtype"] == "f16" else 32
    k = t["codebook"]["size"]
    symbols = read_stream(t["indices"], sections, numel, f"tensor {t['name']!r} indices")
    if t.get("outliers") is not None:  # the outlier symbol is k + 1 beside the gap layout's filler k
        symbols = np.where(symbols == k, k + 1, symbols)
    return np.bincount(symbols, minlength=k + 1), 0


def _mask_stats(t: dict, sections: list[bytes], numel: int):
    spec = t["positions"]["mask"]
    flat = read_mask(t, sections, f"tensor {t['name']!r}")
    span_bits, entries, order0 = gap_order0(flat, *_gap_index_counts(t, sections, numel))
    bound = mask_model.code_length_bits(flat, t["shape"], spec["order"], spec["alpha"], spec["beta"])
    stats = {"tensor": t["name"], "stream": "positions", "coder": f"mask ({spec['order']}, a={spec['alpha']}, "
             f"b={spec['beta']})", "count": spec["count"], "alphabet": 2, "bytes": len(sections[spec["section"]]),
             "fixed_bytes": entries * span_bits / 8, "entropy_bytes": order0 / 8, "bound_bytes": bound / 8}
    return span_bits, stats


def _compressed_row(t: dict, sections: list[bytes], numel: int, streams: list[dict]) -> dict[str, Any]:
    entries, pos_bytes, pos_fixed, span_bits = numel, 0, 0.0, 0
    mask = is_mask(t.get("positions"))
    if mask:
        span_bits, stats = _mask_stats(t, sections, numel)
        streams.append(stats)
        entries, pos_bytes, pos_fixed = stats["count"], stats["bytes"], stats["fixed_bytes"]
    elif t.get("positions"):
        symbols, stats = _stream_stats(t["name"], "positions", t["positions"]["stream"], sections, numel)
        streams.append(stats)
        entries, pos_bytes, pos_fixed = len(symbols), stats["bytes"], stats["fixed_bytes"]
        span_bits = t["positions"]["span_bits"]
    if t["encoding"] == "shared":
        symbols, stats = _stream_stats(t["name"], "indices", t["indices"], sections, numel)
        streams.append(stats)
        k = t["codebook"]["size"]
        nonzero = int((symbols != k).sum()) if t.get("positions") and not mask else len(symbols)
        extra = len(sections[t["codebook"]["section"]]) + (len(sections[t["outliers"]["section"]]) if t.get("outliers") else 0)
        value_bytes, value_fixed, value_bits = stats["bytes"], stats["fixed_bytes"], width(k)
    else:  # sparse: raw values, fillers are zeros
        raw = len(sections[t["values"]])
        size = raw // max(entries, 1) if entries else 4
        values = np.frombuffer(sections[t["values"]], dtype=np.float16 if t["dtype"] == "f16" else np.float32)
        nonzero, extra = (entries if mask else int(np.count_nonzero(values))), 0
        value_bytes = value_fixed = raw
        value_bits = 8 * size
    stored = extra + value_bytes + pos_bytes
    fixed = extra + value_fixed + pos_fixed
    return {"layer": t["name"], "encoding": t["encoding"], "weights": numel, "nonzero": nonzero,
            "kept": nonzero / max(numel, 1), "entries": entries, "bytes": stored, "fixed_bytes": fixed,
            "weight_bits_pq": value_bits, "weight_bits_pqh": 8 * value_bytes / max(entries, 1),
            "index_bits_pq": span_bits,
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
    head = ("| tensor | stream | coder | symbols | alphabet | bytes | fixed-width bytes | model bound bytes | bytes / bound "
            "| order-0 bound bytes |\n" + "|---" * 10 + "|")
    rows = [f"| {s['tensor']} | {s['stream']} | {s['coder']} | {s['count']:,} | {s['alphabet']} | {s['bytes']:,} | "
            f"{s['fixed_bytes']:,.0f} | {s['bound_bytes']:,.0f} | {s['bytes'] / max(s['bound_bytes'], 1e-9):.4f} | "
            f"{s['entropy_bytes']:,.0f} |" for s in report["streams"]]
    return head + "\n" + "\n".join(rows)
