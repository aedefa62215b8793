"""Tensor records: a model's state turned into header entries + section payloads, and back.

Writing works from the explicit compression state (`weight_mask`, `weight_codebook`,
`weight_index`); reading rebuilds exactly that state, so a decoded model equals the saved one bit
for bit (with the default fp32 storage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from . import mask_model
from .sparse import positions_from_gaps, relative_indices
from .streams import CODERS, CODERS_1_0, CodedStream, decode_stream, encode_stream, max_span_bits, span_cost_bits

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64,
          "i64": torch.int64, "i32": torch.int32, "i16": torch.int16, "i8": torch.int8, "u8": torch.uint8,
          "bool": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_STORAGE = ("f32", "f16")


@dataclass
class Writer:
    """Collects section payloads; records refer to them by number. ``coding_1_2`` False keeps to the
    1.0 / 1.1 codings (gap positions; raw, Huffman, rANS streams)."""

    sections: list[bytes] = field(default_factory=list)
    coding_1_2: bool = True
    mask_steps: int = 0  # decoding steps of the masks written so far (the reader's file-wide limit)

    @property
    def coders(self) -> tuple[str, ...]:
        return CODERS if self.coding_1_2 else CODERS_1_0

    def add(self, payload: bytes) -> int:
        self.sections.append(payload)
        return len(self.sections) - 1

    def mask_budget(self) -> int:
        """Mask steps a next layer may use: the reader's limit for a file of at least the bytes written so
        far, so every file this writer makes is within it."""
        written = sum(len(section) for section in self.sections)
        return mask_model.STEPS_BASE + mask_model.STEPS_PER_BYTE * written - self.mask_steps

    def add_mask(self, code: mask_model.MaskCode, shape) -> dict[str, Any]:
        self.mask_steps += mask_model.steps(shape, code.order)
        return {"mask": code.spec(self.add(code.payload))}

    def add_stream(self, stream: CodedStream) -> dict[str, Any]:
        """A stream reference for the header; the payload becomes a section."""
        return {"section": self.add(stream.payload), "coder": stream.coder, "count": stream.count,
                "alphabet": stream.alphabet}


def _raw_bytes(t: torch.Tensor, dtype: str) -> bytes:
    # reshape(-1): a 0-dim tensor (e.g. BatchNorm's num_batches_tracked) cannot be viewed as bytes
    return t.detach().to(DTYPES[dtype]).reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _from_bytes(data: bytes, dtype: str, shape: list[int]) -> torch.Tensor:
    if not data:
        return torch.zeros(shape, dtype=DTYPES[dtype])
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(DTYPES[dtype]).reshape(shape).clone()


def dense_record(w: Writer, name: str, t: torch.Tensor, float_dtype: str) -> dict[str, Any]:
    dtype = NAMES.get(t.dtype)
    if dtype is None:
        raise TypeError(f"{name}: cannot store dtype {t.dtype}; supported: {', '.join(map(str, DTYPES.values()))}")
    record = {"name": name, "shape": list(t.shape), "encoding": "dense"}
    if t.dtype == torch.float32 and float_dtype != "f32":
        record["as"] = "f32"  # stored narrower, rebuilt as the model's fp32
        dtype = float_dtype
    return {**record, "dtype": dtype, "section": w.add(_raw_bytes(t, dtype))}


def best_span(gaps: np.ndarray, index_counts: np.ndarray, numel: int, entry_bits: int = 0) -> int:
    """The span bits minimising (gap stream + index stream or raw values) size for this layer."""
    best, best_bits = 1, None
    for b in range(1, max_span_bits(numel) + 1):
        gap_bits, index_bits = span_cost_bits(gaps, index_counts, b)
        entries = len(gaps) + int((-(-gaps // (1 << b)) - 1).sum())
        total = gap_bits + (index_bits if entry_bits == 0 else entries * entry_bits)
        if best_bits is None or total < best_bits:
            best, best_bits = b, total
    return best


@dataclass(frozen=True)
class GapPositions:
    """Positions as relative gaps with filler entries (format 1.0), not yet written."""

    span_bits: int
    stream: CodedStream
    positions: np.ndarray  # kept flat positions
    is_filler: np.ndarray  # one flag per entry


def gap_positions(flat_mask: np.ndarray, index: np.ndarray | None, k: int, entry_bits: int = 0,
                  coders=CODERS) -> GapPositions:
    positions = np.flatnonzero(flat_mask)
    gaps = np.diff(positions, prepend=-1)
    counts = np.bincount(index, minlength=k + 1) if index is not None else np.zeros(1, np.int64)
    span_bits = best_span(gaps, counts, len(flat_mask), entry_bits)
    symbols, is_filler = relative_indices(positions, span_bits)
    return GapPositions(span_bits, encode_stream(symbols, 1 << span_bits, coders), positions, is_filler)


def _mask_code(w: Writer, flat_mask: np.ndarray, shape) -> mask_model.MaskCode | None:
    """The mask coding of a layer, when the writer may use it and it fits the reader's step limit (counted
    against the bytes written before it: a lower bound of the file's size)."""
    if not w.coding_1_2 or len(flat_mask) == 0:
        return None
    return mask_model.best_encoding(flat_mask, list(shape), w.mask_budget())


def shared_record(w: Writer, name: str, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor | None,
                  codebook_dtype: str, outlier_mask: torch.Tensor | None = None,
                  outliers: torch.Tensor | None = None) -> dict[str, Any]:
    """A shared record: a layer ([k]) or per-row ([rows, k]) codebook, indices, optional pruning positions
    and exact outliers (format 1.1: the outlier symbol in the index stream, values in position order)."""
    k = codebook.shape[-1]
    flat_index = index.reshape(-1).long().numpy()
    spec = {"dtype": codebook_dtype, "size": k, "section": w.add(_raw_bytes(codebook, codebook_dtype))}
    if codebook.dim() == 2:
        spec["rows"] = codebook.shape[0]
    record = {"name": name, "shape": list(index.shape), "encoding": "shared", "codebook": spec}
    extra = 0
    if outlier_mask is not None:
        flat_outliers = outlier_mask.reshape(-1).numpy()
        if mask is not None and (flat_outliers & ~mask.reshape(-1).numpy()).any():
            raise ValueError(f"{name}: an outlier sits on a pruned position")
        flat_index = flat_index.copy()
        flat_index[flat_outliers] = k if mask is None else k + 1  # the outlier symbol
        record["outliers"] = {"dtype": codebook_dtype, "count": int(flat_outliers.sum()),
                              "section": w.add(_raw_bytes(outliers, codebook_dtype))}
        extra = 1
    if mask is None:
        record["positions"] = None
        record["indices"] = w.add_stream(encode_stream(flat_index, k + extra, w.coders))
        return _ordered(record)
    flat_mask = mask.reshape(-1).numpy()
    gap = gap_positions(flat_mask, flat_index[flat_mask], k + extra, coders=w.coders)
    entries = np.full(len(gap.is_filler), k, dtype=np.int64)  # fillers carry the symbol k
    entries[~gap.is_filler] = flat_index[gap.positions]
    gap_indices = encode_stream(entries, k + 1 + extra, w.coders)
    gap_bytes = len(gap.stream.payload) + len(gap_indices.payload)
    code = _mask_code(w, flat_mask, index.shape)
    if code is not None:
        # no fillers: one index per kept position, alphabet k (+ the outlier symbol k)
        kept = flat_index[gap.positions]
        if extra:
            kept = np.where(kept == k + 1, k, kept)
        mask_indices = encode_stream(kept, k + extra, w.coders)
        if len(code.payload) + len(mask_indices.payload) < gap_bytes:
            record["positions"] = w.add_mask(code, index.shape)
            record["indices"] = w.add_stream(mask_indices)
            return _ordered(record)
    record["positions"] = {"span_bits": gap.span_bits, "stream": w.add_stream(gap.stream)}
    record["indices"] = w.add_stream(gap_indices)
    return _ordered(record)


def _ordered(record: dict[str, Any]) -> dict[str, Any]:
    """The record's keys in the spec's order (outliers last), so files repeat byte for byte."""
    order = ["name", "shape", "encoding", "codebook", "positions", "indices", "outliers"]
    return {key: record[key] for key in order if key in record}


def sparse_record(w: Writer, name: str, weight: torch.Tensor, mask: torch.Tensor, dtype: str) -> dict[str, Any]:
    flat_mask = mask.reshape(-1).numpy()
    item = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    gap = gap_positions(flat_mask, None, 0, 8 * item, coders=w.coders)
    kept = weight.reshape(-1)[torch.from_numpy(gap.positions)].float()
    record = {"name": name, "shape": list(weight.shape), "encoding": "sparse", "dtype": dtype}
    gap_bytes = len(gap.stream.payload) + item * len(gap.is_filler)
    code = _mask_code(w, flat_mask, weight.shape)
    if code is not None and len(code.payload) + item * len(gap.positions) < gap_bytes:
        record["positions"] = w.add_mask(code, weight.shape)
        return {**record, "values": w.add(_raw_bytes(kept, dtype))}  # no fillers: one value per kept position
    values = torch.zeros(len(gap.is_filler), dtype=torch.float32)
    values[torch.from_numpy(~gap.is_filler)] = kept
    record["positions"] = {"span_bits": gap.span_bits, "stream": w.add_stream(gap.stream)}
    return {**record, "values": w.add(_raw_bytes(values, dtype))}


# ----------------------------------------------------------------------------------------- reading

def read_stream(stream: dict, sections: list[bytes], numel: int, what: str) -> np.ndarray:
    count, alphabet = stream["count"], stream["alphabet"]
    if not 0 <= count <= numel:
        raise FormatError(f"{what}: stream declares {count} symbols for a tensor of {numel} elements")
    return decode_stream(sections[stream["section"]], stream["coder"], count, alphabet, what)


def is_mask(positions: dict | None) -> bool:
    """Mask positions (1.2) rather than gaps with fillers."""
    return positions is not None and "mask" in positions


def read_mask(record: dict, sections: list[bytes], what: str) -> np.ndarray:
    """The flat bool mask of a record with mask positions."""
    spec = record["positions"]["mask"]
    return mask_model.decode(sections[spec["section"]], record["shape"], spec["order"], spec["alpha"], spec["beta"],
                             spec["count"], f"{what} positions")


def _read_positions(record: dict, sections: list[bytes], numel: int, what: str) -> np.ndarray:
    """Flat position of every entry: kept positions (mask), or every gap entry, fillers included."""
    spec = record["positions"]
    if is_mask(spec):
        return np.flatnonzero(read_mask(record, sections, what))
    symbols = read_stream(spec["stream"], sections, numel, f"{what} positions")
    if spec["stream"]["alphabet"] != 1 << spec["span_bits"]:
        raise FormatError(f"{what}: position alphabet must be 2**span_bits = {1 << spec['span_bits']}")
    return positions_from_gaps(symbols)


def _check_positions(positions: np.ndarray, real: np.ndarray, numel: int, what: str) -> None:
    if real.any() and positions[real].max() >= numel:
        raise FormatError(f"{what}: a kept position lies beyond the tensor's {numel} elements")


@dataclass(frozen=True)
class Entries:
    """The kept weights of a shared or sparse record: flat positions, and codes (+ codebook) or values."""

    positions: np.ndarray
    codes: np.ndarray | None
    values: torch.Tensor | None
    codebook: torch.Tensor | None


def decode_entries(record: dict, sections: list[bytes]) -> Entries:
    name, shape = record["name"], record["shape"]
    numel = int(np.prod(shape)) if shape else 1
    what = f"tensor {name!r}"
    if record["encoding"] == "shared":
        shared = decode_shared(record, sections)
        if shared.codebook.dim() == 1 and shared.outlier_values is None:
            return Entries(shared.positions, shared.codes, None, shared.codebook)
        # per-row codebooks or outliers: the runtime takes the decoded values
        return Entries(shared.positions, None, shared.values(), None)
    positions = _read_positions(record, sections, numel, what)
    data = sections[record["values"]]
    size = 2 if record["dtype"] == "f16" else 4
    if len(data) != len(positions) * size:
        raise FormatError(f"{what}: {len(data)} value bytes for {len(positions)} entries")
    values = _from_bytes(data, record["dtype"], [len(positions)]).float()
    if is_mask(record["positions"]):  # no fillers: every entry is kept, zero or not
        return Entries(positions, None, values, None)
    real = (values != 0).numpy()
    _check_positions(positions, real, numel, what)
    return Entries(positions[real], None, values[torch.from_numpy(real)], None)


@dataclass(frozen=True)
class Shared:
    """A decoded shared record: kept positions (flat, increasing), their codes (0 at outliers), the
    codebook ([k] or [rows, k]), and the outliers (a bool per kept position, exact values) if any."""

    positions: np.ndarray
    codes: np.ndarray
    codebook: torch.Tensor
    numel: int
    is_outlier: np.ndarray | None
    outlier_values: torch.Tensor | None

    def values(self) -> torch.Tensor:
        """fp32 value of each kept position."""
        codes = torch.from_numpy(self.codes.astype(np.int64))
        if self.codebook.dim() == 1:
            out = self.codebook[codes]
        else:
            rows, k = self.codebook.shape
            row_of = torch.from_numpy(self.positions.astype(np.int64)) // max(self.numel // rows, 1)
            out = self.codebook.reshape(-1)[row_of * k + codes]
        if self.is_outlier is not None:
            out[torch.from_numpy(self.is_outlier)] = self.outlier_values
        return out


def decode_shared(record: dict, sections: list[bytes]) -> Shared:
    name, shape = record["name"], record["shape"]
    numel = int(np.prod(shape)) if shape else 1
    what = f"tensor {name!r}"
    cb = record["codebook"]
    rows = cb.get("rows")
    k = cb["size"]
    data = sections[cb["section"]]
    if rows is not None and (not shape or rows != shape[0]):
        raise FormatError(f"{what}: {rows} codebook rows for a tensor of shape {shape}")
    if len(data) != (rows or 1) * k * (2 if cb["dtype"] == "f16" else 4):
        raise FormatError(f"{what}: codebook section has {len(data)} bytes for {rows or 1} x {k} {cb['dtype']} values")
    codebook = _from_bytes(data, cb["dtype"], [rows, k] if rows is not None else [k]).float()
    extra = 1 if record.get("outliers") is not None else 0
    if record["positions"] is None:
        symbols = read_stream(record["indices"], sections, numel, f"{what} indices")
        if record["indices"]["alphabet"] != k + extra or len(symbols) != numel:
            raise FormatError(f"{what}: a dense shared layer needs {numel} indices over {k + extra} symbols")
        positions, outlier_symbol = np.arange(numel), k
    elif is_mask(record["positions"]):
        positions = _read_positions(record, sections, numel, what)
        symbols = read_stream(record["indices"], sections, numel, f"{what} indices")
        if record["indices"]["alphabet"] != k + extra or len(symbols) != len(positions):
            raise FormatError(f"{what}: {len(symbols)} indices (alphabet {record['indices']['alphabet']}) "
                              f"for {len(positions)} kept positions and {k} values")
        outlier_symbol = k
    else:
        positions = _read_positions(record, sections, numel, what)
        symbols = read_stream(record["indices"], sections, numel, f"{what} indices")
        if record["indices"]["alphabet"] != k + 1 + extra or len(symbols) != len(positions):
            raise FormatError(f"{what}: {len(symbols)} indices (alphabet {record['indices']['alphabet']}) "
                              f"for {len(positions)} positions and {k} values")
        real = symbols != k
        _check_positions(positions, real, numel, what)
        positions, symbols, outlier_symbol = positions[real], symbols[real], k + 1
    if not extra:
        return Shared(positions, symbols, codebook, numel, None, None)
    spec = record["outliers"]
    is_outlier = symbols == outlier_symbol
    found = int(is_outlier.sum())
    if found != spec["count"]:
        raise FormatError(f"{what}: {found} outlier symbols for {spec['count']} declared outliers")
    data = sections[spec["section"]]
    if len(data) != found * (2 if spec["dtype"] == "f16" else 4):
        raise FormatError(f"{what}: outliers section has {len(data)} bytes for {found} {spec['dtype']} values")
    values = _from_bytes(data, spec["dtype"], [found]).float()
    symbols = np.where(is_outlier, 0, symbols)
    return Shared(positions, symbols, codebook, numel, is_outlier, values)


def read_record(record: dict, sections: list[bytes]) -> dict[str, torch.Tensor]:
    """The state_dict entries a record stands for."""
    name, shape, encoding = record["name"], record["shape"], record["encoding"]
    numel = int(np.prod(shape)) if shape else 1
    what = f"tensor {name!r}"
    if encoding == "dense":
        data = sections[record["section"]]
        need = numel * torch.tensor([], dtype=DTYPES[record["dtype"]]).element_size()
        if len(data) != need:
            raise FormatError(f"{what}: dense section has {len(data)} bytes, shape {shape} as {record['dtype']} needs {need}")
        tensor = _from_bytes(data, record["dtype"], shape)
        return {name: tensor.to(DTYPES[record["as"]]) if "as" in record else tensor}
    if encoding not in ("shared", "sparse"):
        raise FormatError(f"{what}: unknown encoding {encoding!r}; this reader knows dense, shared, sparse")
    mask = torch.zeros(numel, dtype=torch.bool)
    if encoding == "sparse":
        entries = decode_entries(record, sections)
        positions = torch.from_numpy(entries.positions)
        mask[positions] = True
        weight = torch.zeros(numel)
        weight[positions] = entries.values
        return {name: weight.reshape(shape), name + "_mask": mask.reshape(shape)}
    shared = decode_shared(record, sections)
    positions = torch.from_numpy(shared.positions)
    mask[positions] = True
    k = shared.codebook.shape[-1]
    index = torch.zeros(numel, dtype=torch.int16 if k <= 32767 else torch.int32)
    index[positions] = torch.from_numpy(shared.codes).to(index.dtype)
    out = {name + "_codebook": shared.codebook, name + "_index": index.reshape(shape)}
    if record["positions"] is not None:
        out[name + "_mask"] = mask.reshape(shape)
    if shared.is_outlier is not None:
        outlier_mask = torch.zeros(numel, dtype=torch.bool)
        outlier_mask[positions[torch.from_numpy(shared.is_outlier)]] = True
        out[name + "_outlier_mask"] = outlier_mask.reshape(shape)
        out[name + "_outliers"] = shared.outlier_values
    return out
