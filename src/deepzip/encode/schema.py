"""The header schema (docs/format.md section 2-4): every key, type, range and size, before any decoding.

`check_header` looks only at the parsed header, the section lengths and the file size. When it
returns, every record has exactly its keys with the right types, every size agrees with the shape
and with the bytes present, every section is used by exactly one record, and the file's total
element count is bounded: what decoding may allocate is a small multiple of what is checked here.
`check_fits` compares the records with a model's tensors (names, shapes, kinds) before any payload
is decoded. Pure functions; every failure is one `FormatError` naming the field.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import FormatError
from . import mask_model
from .adaptive import MAX_ALPHABET as MAX_ADAPTIVE_ALPHABET

MAX_TENSORS = 65_536
MAX_SECTIONS = 1 << 20
MAX_DIMS = 8
MAX_ELEMENTS = (1 << 31) - 1  # one tensor
FILE_ELEMENTS_BASE = 1 << 22  # a whole file: this many elements, plus ...
FILE_ELEMENTS_PER_BYTE = 256  # ... this many per byte of the file (Deep Compression reaches ~12)
MAX_NAME = 1024
MAX_WRITER = 256
MAX_CODEBOOK = 65_536
NEWEST_MINOR = 2  # 1.1: per-row codebooks ("rows") and outliers in shared records; 1.2: mask positions, adaptive coder
MAX_SPAN_BITS = 24
MAX_ALPHABET = (1 << 24) + 1
CODERS = ("raw", "huffman", "rans")
CODERS_1_2 = ("adaptive",)
ITEM_SIZE = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1, "u8": 1, "bool": 1}
FLOAT_STORAGE = ("f32", "f16")
HEADER_KEYS = {"writer", "model", "metadata", "sections", "tensors"}
RECORD_KEYS = {
    "dense": ({"name", "shape", "encoding", "dtype", "section"}, {"as"}),
    "shared": ({"name", "shape", "encoding", "codebook", "positions", "indices"}, set()),
    "sparse": ({"name", "shape", "encoding", "dtype", "positions", "values"}, set()),
}
STREAM_KEYS = {"section", "coder", "count", "alphabet"}
CODEBOOK_KEYS = {"dtype", "size", "section"}
CODEBOOK_KEYS_1_1 = {"rows"}
RECORD_KEYS_1_1 = {"shared": {"outliers"}}  # optional keys new in 1.1
OUTLIER_KEYS = {"dtype", "count", "section"}
POSITIONS_KEYS = {"span_bits", "stream"}
POSITIONS_KEYS_1_2 = {"mask"}  # mask positions: {"mask": {...}} instead of span_bits + stream
MASK_KEYS = {"order", "count", "alpha", "beta", "section"}


class ModelFitError(FormatError, ValueError):
    """The file is well formed but does not fit the model it is loaded into (names, shapes, kinds)."""


# ------------------------------------------------------------------------------------------ helpers

def require(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


def is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def require_uint(value: Any, low: int, high: int, what: str) -> int:
    require(is_uint(value) and low <= value <= high, f"{what} must be an integer in {low}..{high}, got {_short(value)}")
    return value


def require_choice(value: Any, choices, what: str) -> str:
    require(isinstance(value, str) and value in choices,
            f"{what} must be one of {', '.join(choices)}, got {_short(value)}")
    return value


def require_keys(obj: Any, required: set[str], optional: set[str], what: str) -> dict:
    require(isinstance(obj, dict), f"{what} must be an object, got {type(obj).__name__}")
    missing = sorted(required - obj.keys())
    require(not missing, f"{what} lacks the key(s) {', '.join(map(repr, missing))}")
    unknown = sorted(obj.keys() - required - optional)
    require(not unknown, f"{what} has unknown key(s) {', '.join(map(repr, unknown[:5]))}")
    return obj


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def width(alphabet: int) -> int:
    """Bits per symbol of the raw coder (as encode.bits.width)."""
    return max(1, int(alphabet - 1).bit_length())


def element_count(shape: list[int]) -> int:
    numel = 1
    for size in shape:
        numel *= size
    return numel


def file_element_limit(file_size: int) -> int:
    """The most elements, all tensors together, a file of ``file_size`` bytes may declare."""
    return min(MAX_ELEMENTS, FILE_ELEMENTS_BASE + FILE_ELEMENTS_PER_BYTE * file_size)


# ------------------------------------------------------------------------------------------ header

class _Sections:
    """Section lengths, and which record claimed each (every section belongs to exactly one field)."""

    def __init__(self, sizes: list[int], minor: int = NEWEST_MINOR):
        self.sizes = sizes
        self.minor = minor  # the file's minor version: which keys it may use
        self.owner: dict[int, str] = {}
        self.mask_steps = 0  # chunks the reader will decode one at a time (mask positions, 1.2)

    def claim(self, value: Any, what: str) -> int:
        require(is_uint(value) and value < len(self.sizes),
                f"{what}: bad section number {_short(value)} (the file has {len(self.sizes)} sections)")
        index = value
        require(index not in self.owner, f"{what}: section {index} is already used by {self.owner.get(index)}")
        self.owner[index] = what
        return index

    def check_all_used(self) -> None:
        unused = [i for i in range(len(self.sizes)) if i not in self.owner]
        require(not unused, f"sections {unused[:5]} are not used by any tensor record")


def check_header(header: dict, section_sizes: list[int], file_size: int, minor: int = NEWEST_MINOR) -> None:
    """The whole header against the schema, the section lengths and the file size (no decoding);
    ``minor``: the file's minor version (1.1 keys are refused in a 1.0 file)."""
    require_keys(header, HEADER_KEYS, set(), "header")
    require(isinstance(header["writer"], str) and len(header["writer"]) <= MAX_WRITER,
            f"header 'writer' must be a string of at most {MAX_WRITER} characters")
    require(header["model"] is None or isinstance(header["model"], dict), "header 'model' must be an object or null")
    require(isinstance(header["metadata"], dict), "header 'metadata' must be an object")
    tensors = header["tensors"]
    require(isinstance(tensors, list) and len(tensors) <= MAX_TENSORS,
            f"header 'tensors' must be a list of at most {MAX_TENSORS}")
    sections = _Sections(section_sizes, minor)
    names, total = set(), 0
    for i, record in enumerate(tensors):
        require(isinstance(record, dict) and isinstance(record.get("name"), str)
                and 0 < len(record["name"]) <= MAX_NAME, f"tensor {i}: needs a string name of 1..{MAX_NAME} characters")
        what = f"tensor {record['name']!r}"
        require(record["name"] not in names, f"{what}: duplicate name")
        names.add(record["name"])
        total += check_record(record, sections, what)
    sections.check_all_used()
    limit = file_element_limit(file_size)
    require(total <= limit, f"header 'tensors': {total} elements in all exceed the limit {limit} "
                            f"for a file of {file_size} bytes")
    steps = mask_step_limit(file_size)
    require(sections.mask_steps <= steps, f"header 'tensors': {sections.mask_steps} mask decoding steps in all "
                                          f"exceed the limit {steps} for a file of {file_size} bytes")


def mask_step_limit(file_size: int) -> int:
    """The most mask decoding steps (chunks), all tensors together, a file of ``file_size`` bytes may declare."""
    return mask_model.STEPS_BASE + mask_model.STEPS_PER_BYTE * file_size


def check_shape(shape: Any, what: str) -> int:
    require(isinstance(shape, list) and len(shape) <= MAX_DIMS and all(is_uint(s) for s in shape),
            f"{what}: shape must be a list of at most {MAX_DIMS} non-negative integers")
    require(all(s <= MAX_ELEMENTS for s in shape), f"{what}: shape {_short(shape)}: a size exceeds the limit {MAX_ELEMENTS}")
    # A zero size makes the tensor empty, but its other sizes still make strides: bound them too
    # (found by fuzzing: [0, 2^31-1, 2^31-1, 2^31-1] overflowed torch's stride calculation).
    require(0 not in shape or element_count([max(s, 1) for s in shape]) <= MAX_ELEMENTS,
            f"{what}: shape {_short(shape)}: its nonzero sizes multiply to more than {MAX_ELEMENTS}")
    numel = element_count(shape)
    require(numel <= MAX_ELEMENTS, f"{what}: {numel} elements exceed the limit {MAX_ELEMENTS}")
    return numel


def check_record(record: dict, sections: _Sections, what: str) -> int:
    """One tensor record; returns its element count."""
    encoding = record.get("encoding")
    require(isinstance(encoding, str) and encoding in RECORD_KEYS,
            f"{what}: unknown encoding {_short(encoding)}; this reader knows dense, shared, sparse")
    required, optional = RECORD_KEYS[encoding]
    require_keys(record, required, optional | (RECORD_KEYS_1_1.get(encoding, set()) if sections.minor >= 1 else set()),
                 what)
    numel = check_shape(record["shape"], what)
    if encoding == "dense":
        check_dense(record, sections, numel, what)
    elif encoding == "shared":
        check_shared(record, sections, numel, what)
    else:
        check_sparse(record, sections, numel, what)
    return numel


def check_dense(record: dict, sections: _Sections, numel: int, what: str) -> None:
    dtype = require_choice(record["dtype"], tuple(ITEM_SIZE), f"{what}: dtype")
    if "as" in record:
        require_choice(record["as"], ("f32",), f"{what}: 'as'")
        require(dtype in FLOAT_STORAGE, f"{what}: 'as' needs a float dtype (f32, f16), got {dtype}")
    section = sections.claim(record["section"], f"{what} section")
    need = numel * ITEM_SIZE[dtype]
    require(sections.sizes[section] == need,
            f"{what}: dense section has {sections.sizes[section]} bytes, shape {record['shape']} as {dtype} needs {need}")


def check_shared(record: dict, sections: _Sections, numel: int, what: str) -> None:
    codebook = require_keys(record["codebook"], CODEBOOK_KEYS, CODEBOOK_KEYS_1_1 if sections.minor >= 1 else set(),
                            f"{what} codebook")
    dtype = require_choice(codebook["dtype"], FLOAT_STORAGE, f"{what} codebook dtype")
    k = require_uint(codebook["size"], 1, MAX_CODEBOOK, f"{what} codebook size")
    rows = 1
    if "rows" in codebook:
        shape = record["shape"]
        require(len(shape) >= 1, f"{what}: per-row codebooks need a tensor of at least one dimension")
        rows = require_uint(codebook["rows"], 1, MAX_ELEMENTS, f"{what} codebook rows")
        require(rows == shape[0], f"{what}: {rows} codebook rows for a tensor of {shape[0]} rows")
    section = sections.claim(codebook["section"], f"{what} codebook section")
    require(sections.sizes[section] == rows * k * ITEM_SIZE[dtype],
            f"{what}: codebook section has {sections.sizes[section]} bytes for {rows} x {k} {dtype} values")
    outliers = check_outliers(record["outliers"], sections, numel, what) if "outliers" in record else 0
    if record["positions"] is None:
        check_stream(record["indices"], sections, numel, k + outliers, f"{what} indices")
        require(record["indices"]["count"] == numel, f"{what} indices: a dense shared layer needs {numel} indices, "
                                                     f"the stream declares {record['indices']['count']}")
        return
    entries = check_positions(record["positions"], sections, record["shape"], f"{what} positions")
    filler = 0 if "mask" in record["positions"] else 1  # mask positions have no filler entries
    check_stream(record["indices"], sections, numel, k + filler + outliers, f"{what} indices")
    require(record["indices"]["count"] == entries,
            f"{what} indices: {record['indices']['count']} indices for {entries} positions")


def check_outliers(spec: Any, sections: _Sections, numel: int, what: str) -> int:
    """A shared record's optional outliers (1.1); returns 1 when present (the extra index symbol), else 0."""
    spec = require_keys(spec, OUTLIER_KEYS, set(), f"{what} outliers")
    dtype = require_choice(spec["dtype"], FLOAT_STORAGE, f"{what} outliers dtype")
    count = require_uint(spec["count"], 0, numel, f"{what} outliers count")
    section = sections.claim(spec["section"], f"{what} outliers section")
    require(sections.sizes[section] == count * ITEM_SIZE[dtype],
            f"{what}: outliers section has {sections.sizes[section]} bytes for {count} {dtype} values")
    return 1


def check_sparse(record: dict, sections: _Sections, numel: int, what: str) -> None:
    dtype = require_choice(record["dtype"], FLOAT_STORAGE, f"{what}: sparse values dtype")
    entries = check_positions(record["positions"], sections, record["shape"], f"{what} positions")
    section = sections.claim(record["values"], f"{what} values section")
    require(sections.sizes[section] == entries * ITEM_SIZE[dtype],
            f"{what}: {sections.sizes[section]} value bytes for {entries} entries of {dtype}")


def check_positions(spec: Any, sections: _Sections, shape: list[int], what: str) -> int:
    """A positions spec (gaps, or a mask in 1.2); returns its number of entries."""
    require(spec is not None, f"{what}: positions are required")
    numel = element_count(shape)
    if isinstance(spec, dict) and "mask" in spec and sections.minor >= 2:
        require_keys(spec, POSITIONS_KEYS_1_2, set(), what)
        return check_mask(spec["mask"], sections, shape, numel, f"{what} mask")
    spec = require_keys(spec, POSITIONS_KEYS, set(), what)
    span_bits = require_uint(spec["span_bits"], 1, MAX_SPAN_BITS, f"{what}: span_bits")
    check_stream(spec["stream"], sections, numel, 1 << span_bits, f"{what} stream")
    return spec["stream"]["count"]


def check_mask(spec: Any, sections: _Sections, shape: list[int], numel: int, what: str) -> int:
    """Mask positions (1.2): keys, ranges, the payload's words; adds its decoding steps; returns its count."""
    require_keys(spec, MASK_KEYS, set(), what)
    order = require_choice(spec["order"], mask_model.ORDERS, f"{what}: order")
    count = require_uint(spec["count"], 0, numel, f"{what}: count")
    require_uint(spec["alpha"], 1, mask_model.MAX_PRIOR, f"{what}: alpha")
    require_uint(spec["beta"], 1, mask_model.MAX_PRIOR, f"{what}: beta")
    size = sections.sizes[sections.claim(spec["section"], f"{what} section")]
    require(size % 4 == 0, f"{what}: mask payload of {size} bytes is not a whole number of 32-bit words")
    require(numel > 0 or size == 0, f"{what}: an empty tensor's mask must have an empty payload")
    sections.mask_steps += mask_model.steps(shape, order)
    return count


def check_stream(stream: Any, sections: _Sections, numel: int, alphabet: int, what: str) -> None:
    """A stream: keys, coder, alphabet (must equal ``alphabet``), count against the tensor and the payload."""
    require_keys(stream, STREAM_KEYS, set(), what)
    coder = require_choice(stream["coder"], CODERS + (CODERS_1_2 if sections.minor >= 2 else ()), f"{what}: coder")
    require(stream["alphabet"] == alphabet and is_uint(stream["alphabet"]),
            f"{what}: alphabet must be {alphabet}, got {_short(stream['alphabet'])}")
    count = stream["count"]
    require(is_uint(count), f"{what}: count must be a non-negative integer, got {_short(count)}")
    # every entry advances the position by at least one and the last one is a kept position < numel
    require(count <= numel, f"{what}: stream declares {count} symbols for a tensor of {numel} elements")
    size = sections.sizes[sections.claim(stream["section"], f"{what} section")]
    if coder == "raw":
        need = -(-count * width(alphabet) // 8)
        require(size == need, f"{what}: raw stream holds {size} bytes, {count} symbols of {width(alphabet)} bits need {need}")
    elif coder == "huffman":
        require(count <= 8 * size, f"{what}: {count} symbols cannot fit in {size} bytes of Huffman code")
    elif coder == "adaptive":
        require(alphabet <= MAX_ADAPTIVE_ALPHABET,
                f"{what}: the adaptive coder takes alphabets of at most {MAX_ADAPTIVE_ALPHABET}, got {alphabet}")
        require(size % 4 == 0, f"{what}: adaptive payload of {size} bytes is not a whole number of 32-bit words")
    # rans: the count is checked against the payload once the symbol table is read (ans.decode)


# ------------------------------------------------------------------------------------------ model fit

SHARED_PARTS = ("_codebook", "_index")
OUTLIER_PARTS = ("_outlier_mask", "_outliers")  # stripped before "_mask"
MASK = "_mask"


def model_tensors(model) -> dict[str, tuple[tuple[int, ...], bool, bool]]:
    """name -> (shape, is a parameter, is floating) of what a file may store for ``model``.

    A weight-shared layer's codebook + index count as the weight (shape of the index); masks of a
    pruned layer belong to their weight. Works on `meta` models (no memory).
    """
    state = model.state_dict(keep_vars=True)
    out = {}
    for key, tensor in state.items():
        if key.endswith(SHARED_PARTS[1]) and key[: -len(SHARED_PARTS[1])] + SHARED_PARTS[0] in state:
            out[key[: -len(SHARED_PARTS[1])]] = (tuple(tensor.shape), True, True)
    for key, tensor in state.items():
        base = _strip(key)
        if base in out or (base != key and base in state):
            continue
        out[key] = (tuple(tensor.shape), isinstance(tensor, torch.nn.Parameter),
                    tensor.is_floating_point())
    return out


def _strip(key: str) -> str:
    for suffix in (*SHARED_PARTS, *OUTLIER_PARTS, MASK):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def check_fits(header: dict, model) -> None:
    """Raise ModelFitError unless the checked header's records match ``model`` name for name."""
    expected = model_tensors(model)
    records = {r["name"]: r for r in header["tensors"]}
    for name, record in records.items():
        what = f"tensor {name!r}"
        if name not in expected:
            raise ModelFitError(f"{what} does not fit this model: the model has no such parameter or buffer")
        shape, is_parameter, is_float = expected[name]
        if tuple(record["shape"]) != shape:
            raise ModelFitError(f"{what} does not fit this model: shape {record['shape']} in the file, "
                                f"{list(shape)} in the model")
        if record["encoding"] != "dense" and not (is_parameter and is_float):
            raise ModelFitError(f"{what} does not fit this model: a {record['encoding']} record needs a "
                                f"floating-point parameter")
    missing = [name for name in expected if name not in records]
    if missing:
        raise ModelFitError(f"the file does not fit this model: it lacks {', '.join(map(repr, missing[:5]))}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
