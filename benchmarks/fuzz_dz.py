"""Fuzz the .dz reader: mutated files, almost all behind recomputed checksums, in guarded workers.

    python benchmarks/fuzz_dz.py [--quick] [--cases N] [--workers 2] [--out benchmarks/results]

Seeds: small valid files made here from tiny models of every record kind (dense of every dtype, f16
"as", shared with and without positions, sparse f32/f16, BatchNorm buffers, each stream coder forced
to raw, huffman and rans), plus benchmarks/results/lenet300_100.dz and lenet5.dz.

Families: raw bit flips (the only family without recomputed checksums), truncation with a new
trailer, bit flips and byte edits of the header JSON, header fields set to hostile values, section
bit flips and byte edits, crafted cases (the reliability campaign's nine findings with random
parameters: one/two-symbol rANS with huge counts, huge sparse/shared shapes, edited dimensions, list
dtypes, [0, 10**19] shapes, integers of thousands of digits, missing keys, renamed records and
changed kinds, hostile model descriptions), and stacks of several of these.

Every case goes through `decode_bytes`; a file that decodes is also loaded into a fresh model
(`deepzip.load(path, model=...)`) and, for registry seeds, rebuilt from its description
(`deepzip.load(path)`). The outcome is `FormatError` (any stage refused it with deepzip's error),
`loaded` (every stage succeeded; `same` if the weights equal the seed's), or a failure: `other`
(any other exception), `crash` (the worker died: abort, segfault, out of memory), `hang` (a case
over --hang-s). Workers (torch 1 thread, RLIMIT_AS = their size after imports + --mem-mb) run many
cases per request; the peak RSS growth of every case is measured (VmHWM after clear_refs). A batch
that crashes or times out is rerun one case at a time to name the culprit.

Writes OUT/fuzz.json and OUT/fuzz.md (and OUT/fuzz_cases/ with the bytes of failing cases).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
BENCH_SEEDS = ("lenet300_100", "lenet5")
OUTCOMES = ("FormatError", "loaded_same", "loaded_diff", "other", "crash", "hang")
GOOD = ("FormatError", "loaded_same", "loaded_diff")
# (family, weight in the schedule, checksums recomputed?)
FAMILIES = [
    ("raw_bitflip", 1, False),
    ("truncate_retrailer", 1, True),
    ("hdr_text_bitflip", 4, True),
    ("hdr_text_bytes", 4, True),
    ("hdr_field", 6, True),
    ("section_bitflip", 3, True),
    ("section_bytes", 3, True),
    ("crafted", 4, True),
    ("stacked", 4, True),
]
RECOMPUTED = {name for name, _, fix in FAMILIES if fix}
HUGE_DIGITS = "__HUGE_DIGITS__"


# ============================================================================ seeds (made in the parent)

def _tiny_models():
    """name -> (builder of a fresh model, preparation making the saved state, save options)."""
    import torch
    from torch import nn

    import deepzip

    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)
            for i, dtype in enumerate((torch.float64, torch.bfloat16, torch.int64, torch.int32, torch.int16,
                                       torch.int8, torch.uint8, torch.bool)):
                self.register_buffer(f"b{i}", torch.zeros(2, 3, dtype=dtype))
            self.register_buffer("scalar", torch.tensor(7, dtype=torch.int64))

    def fill_buffers(m):
        g = torch.Generator().manual_seed(1)
        for name, b in m.named_buffers():
            b.copy_((torch.randint(0, 5, b.shape, generator=g)).to(b.dtype))

    def mlp():
        return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))

    def conv_bn():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))

    def embed():
        return nn.Sequential(nn.Embedding(20, 6), nn.Linear(6, 2))

    def run_bn(m):
        m.train()
        m(torch.randn(4, 1, 6, 6))

    return {
        "dense_dtypes": (Buffers, fill_buffers, {}),
        "dense_f16": (mlp, lambda m: None, {"float_dtype": "f16"}),
        "shared_dense": (mlp, lambda m: deepzip.quantize(m, bits=3), {}),
        "shared_pruned": (mlp, lambda m: (deepzip.prune(m, sparsity=0.7), deepzip.quantize(m, bits=2)), {}),
        "shared_f16_embed": (embed, lambda m: (deepzip.prune(m, sparsity=0.6, extra=["0.weight"]),
                                                deepzip.quantize(m, bits=3, extra=["0.weight"])),
                             {"codebook_dtype": "f16"}),
        "sparse_f32_bn": (conv_bn, lambda m: (run_bn(m), deepzip.prune(m, sparsity=0.8)), {}),
        "sparse_f16": (mlp, lambda m: deepzip.prune(m, sparsity=0.9), {"float_dtype": "f16"}),
        "registry_tiny": (lambda: __import__("deepzip.models", fromlist=["build"]).build(
            "lenet300_100", input_shape=(1, 4, 4), num_classes=3, seed=0),
            lambda m: (deepzip.prune(m, sparsity=0.8), deepzip.quantize(m, bits=3)), {}),
    }


def fresh_model(seed_name: str, header: dict):
    """A fresh instance of a seed's architecture (what `deepzip.load(path, model=)` is given)."""
    import torch

    if seed_name.split("@")[0] in BENCH_SEEDS or seed_name.startswith("registry_tiny"):
        from deepzip import models

        d = SEED_DESCRIPTIONS[seed_name.split("@")[0]]
        return models.build(d["model"], d["input_shape"], d["num_classes"])
    torch.manual_seed(0)
    return _tiny_models()[seed_name.split("@")[0]][0]()


SEED_DESCRIPTIONS: dict[str, dict] = {}


def _force_coder(data: bytes, coder: str) -> bytes | None:
    """The same file with every stream re-encoded by ``coder`` (None if nothing changes)."""
    from deepzip.encode import container
    from deepzip.encode.streams import decode_stream, encode_stream

    header, sections = container.unpack(data)
    sections, changed = list(sections), False
    for record in header["tensors"]:
        streams = [record.get("indices"), (record.get("positions") or {}).get("stream")]
        for s in filter(None, streams):
            if s["coder"] == coder:
                continue
            symbols = decode_stream(sections[s["section"]], s["coder"], s["count"], s["alphabet"], "seed")
            new = encode_stream(symbols, s["alphabet"], coders=(coder,))
            sections[s["section"]], s["coder"], changed = new.payload, coder, True
    if not changed:
        return None
    header.pop("sections")
    return container.pack(header, sections)


def make_seeds(directory: Path) -> list[Path]:
    import torch

    import deepzip
    from deepzip.encode import encode_model

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (builder, prepare, options) in _tiny_models().items():
        torch.manual_seed(0)
        model = builder()
        with torch.no_grad():
            prepare(model)
        data, _ = encode_model(model, **options)
        paths.append(directory / f"{name}.dz")
        paths[-1].write_bytes(data)
        if name.startswith("shared") or name.startswith("sparse"):
            for coder in ("raw", "huffman", "rans"):
                forced = _force_coder(data, coder)
                if forced is not None:
                    paths.append(directory / f"{name}@{coder}.dz")
                    paths[-1].write_bytes(forced)
    for name in BENCH_SEEDS:
        paths.append(directory / f"{name}.dz")
        paths[-1].write_bytes((ROOT / "benchmarks" / "results" / f"{name}.dz").read_bytes())
    for p in paths:  # every seed must load cleanly, or the fuzzing measures nothing
        deepzip.encode.decode_bytes(p.read_bytes())
    return paths


# ============================================================================ mutations (in the worker)

def varint(value: int) -> bytes:
    from deepzip.encode.bits import varint as leb128  # the library's writer (deepzip loads in the workers)

    return leb128(value)


class Seed:
    def __init__(self, name: str, data: bytes):
        from deepzip.encode import container

        self.name, self.data = name, data
        self.header, self.sections = container.unpack(data)
        self.text = json.dumps(self.header, separators=(",", ":")).encode()
        self.registry = bool(self.header.get("model"))
        if self.registry:
            SEED_DESCRIPTIONS[name.split("@")[0]] = self.header["model"]

    def header_copy(self) -> dict:
        return json.loads(self.text)


def frame_text(text: bytes, sections: list[bytes]) -> bytes:
    from deepzip.encode import container

    return container.frame(zlib.compress(text, 1), sections)


def dump(header: dict) -> bytes:
    text = json.dumps(header, separators=(",", ":"))
    if HUGE_DIGITS in text:
        text = text.replace(f'"{HUGE_DIGITS}"', "9" * 5000)
    return text.encode()


def frame_header(header: dict, sections: list[bytes], fix_table: bool = True) -> bytes:
    if fix_table:
        header["sections"] = [[len(s), zlib.crc32(s)] for s in sections]
    return frame_text(dump(header), sections)


def nodes(obj, path=()):
    """Every (path, value) of a JSON tree (the root excluded)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + (k,), v
            yield from nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield path + (i,), v
            yield from nodes(v, path + (i,))


def parent_of(root, path):
    for key in path[:-1]:
        root = root[key]
    return root


def hostile_value(rng: random.Random, old=None):
    ints = [0, 1, -1, 2, 3, 7, 8, 24, 25, 255, 256, 65535, 65536, 65537, (1 << 24) + 1, (1 << 24) + 2,
            (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, 1 << 64, 10 ** 19, -(1 << 63),
            16_777_216, 100_000, HUGE_DIGITS]
    pick = rng.random()
    if isinstance(old, int) and not isinstance(old, bool) and pick < 0.5:
        return rng.choice([old + 1, old - 1, old * 2, old // 2, old + rng.randint(-5, 5), old ^ (1 << rng.randint(0, 40)),
                           -old, old * 1000])
    choices = [
        lambda: rng.choice(ints),
        lambda: rng.choice([None, True, False, 0.5, 1e308, -0.0, 1.0, 2.0 ** 31]),
        lambda: rng.choice(["", "f32", "f16", "bf16", "f64", "i64", "bool", "u8", "dense", "shared", "sparse", "raw",
                            "huffman", "rans", "x", "weight", "fc1.weight", "lenet5", "conv6", "\u00e9\u0000",
                            "a" * 2000]),
        lambda: rng.choice([[], [0], [1, 2], [0, 10 ** 19], [1 << 31, 0], [-1], ["a"], [[1]], [1] * 9, [None],
                            [1, 100000, 100000], [1, 3000, 3000], [16_777_216, 300], [(1 << 31) - 1]]),
        lambda: rng.choice([{}, {"a": 1}, {"section": 0}, {"dtype": "f32", "size": 1, "section": 0},
                            {"span_bits": 1, "stream": None}]),
    ]
    return rng.choice(choices)()


def mutate_field(rng: random.Random, header: dict) -> bool:
    """One hostile edit of a random node; returns whether the section table was touched."""
    all_nodes = [n for n in nodes(header) if n[0][0] != "sections" or rng.random() < 0.05]
    if not all_nodes:
        return False
    path, value = rng.choice(all_nodes)
    parent = parent_of(header, path)
    op = rng.random()
    if op < 0.12 and isinstance(parent, dict):
        del parent[path[-1]]
    elif op < 0.18 and isinstance(parent, dict):
        parent[rng.choice(["extra", "as", "positions", "model", "count", "name"]) + rng.choice(["", "_"])] = hostile_value(rng)
    elif op < 0.24 and isinstance(parent, list):
        if rng.random() < 0.5:
            parent.insert(rng.randint(0, len(parent)), json.loads(json.dumps(value)))
        else:
            del parent[path[-1]]
    elif op < 0.28 and isinstance(parent, list) and len(parent) > 1:
        i, j = rng.sample(range(len(parent)), 2)
        parent[i], parent[j] = parent[j], parent[i]
    else:
        parent[path[-1]] = hostile_value(rng, value)
    return path[0] == "sections"


def mutate_section(rng: random.Random, sections: list[bytes]) -> None:
    if not sections:
        sections.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))))
        return
    i = rng.randrange(len(sections))
    s = bytearray(sections[i])
    op = rng.random()
    if op < 0.35 and s:
        for _ in range(rng.randint(1, 3)):
            s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
    elif op < 0.55 and s:
        for _ in range(rng.randint(1, 4)):
            s[rng.randrange(len(s))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    elif op < 0.65:
        del s[rng.randint(0, len(s)):]
    elif op < 0.75:
        s += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif op < 0.82:
        s = bytearray(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    elif op < 0.88:
        s = bytearray(len(s))
    elif op < 0.94 and len(sections) > 1:
        j = rng.randrange(len(sections))
        sections[i], sections[j] = sections[j], sections[i]
        return
    else:  # a hostile stream table: varint count then pairs
        table = varint(rng.choice([1, 2, 3, 255, 1 << 24])) + b"".join(
            varint(rng.choice([1, 2, 1 << 20])) + varint(rng.choice([1, 2, 1 << 20, (1 << 31) - 1, (1 << 32) - 1]))
            for _ in range(rng.randint(1, 3)))
        s = bytearray(table + bytes(rng.randrange(256) for _ in range(4 * rng.randint(0, 3))))
    sections[i] = bytes(s)


def crafted(rng: random.Random, seed: Seed) -> tuple[dict, list[bytes]]:
    """The campaign's findings, with random parameters: (header, sections) of the case."""
    header, sections = seed.header_copy(), list(seed.sections)
    tensors = header["tensors"]
    base = len(sections)
    kind = rng.randrange(12)
    big = rng.choice([1 << rng.randint(0, 31), (1 << 31) - 1, rng.randint(1, 1 << 26), 16_777_216, 1 << 22])
    if kind == 0:  # one-symbol rANS, huge count
        k = rng.randint(1, 3)
        tensors.append({"name": "x.weight", "shape": [big], "encoding": "shared",
                        "codebook": {"dtype": "f32", "size": k, "section": base}, "positions": None,
                        "indices": {"section": base + 1, "coder": "rans", "count": big, "alphabet": k}})
        sections += [struct.pack(f"<{k}f", *range(k)), varint(1) + varint(rng.randint(1, k)) + varint(big)]
    elif kind == 1:  # two-symbol rANS with a count the words cannot hold
        a = rng.randint(1, big)
        tensors.append({"name": "x.weight", "shape": [big], "encoding": "shared",
                        "codebook": {"dtype": "f32", "size": 2, "section": base}, "positions": None,
                        "indices": {"section": base + 1, "coder": "rans", "count": big, "alphabet": 2}})
        sections += [struct.pack("<2f", 1, 2), varint(2) + varint(1) + varint(a) + varint(1) + varint(max(1, big - a))
                     + bytes(rng.randrange(256) for _ in range(4 * rng.randint(0, 4)))]
    elif kind == 2:  # sparse / shared record of a huge shape with empty streams
        shape = rng.choice([[big], [big, rng.randint(1, 1 << 12)], [rng.randint(0, 3), big, big]])
        stream = {"section": base, "coder": rng.choice(["raw", "huffman", "rans"]), "count": 0, "alphabet": 2}
        if rng.random() < 0.5:
            tensors.append({"name": "x.weight", "shape": shape, "encoding": "sparse", "dtype": "f32",
                            "values": base + 1, "positions": {"span_bits": 1, "stream": stream}})
            sections += [b"" if stream["coder"] == "raw" else b"\0", b""]
        else:
            tensors.append({"name": "x.weight", "shape": shape, "encoding": "shared",
                            "codebook": {"dtype": "f32", "size": 1, "section": base + 1},
                            "positions": {"span_bits": 1, "stream": stream},
                            "indices": {**stream, "section": base + 2}})
            sections += [b"" if stream["coder"] == "raw" else b"\0", struct.pack("<f", 1),
                         b"" if stream["coder"] == "raw" else b"\0"]
    elif kind == 3 and tensors:  # one dimension of a valid record edited
        r = rng.choice(tensors)
        if r["shape"]:
            r["shape"][rng.randrange(len(r["shape"]))] = rng.choice([16_777_216, big, 0, 1, 10 ** 19])
        else:
            r["shape"] = [big]
    elif kind == 4 and tensors:  # dtypes of the wrong type
        r = rng.choice(tensors)
        target = r.get("codebook", r) if rng.random() < 0.5 else r
        target["dtype"] = rng.choice([[], ["f32"], {}, 4, None, "f8", "F32", True])
    elif kind == 5 and tensors:  # shapes that overflow, are negative, or too deep
        rng.choice(tensors)["shape"] = rng.choice([[0, 10 ** 19], [10 ** 19, 0], [0, -1], [1 << 31, 0], [1] * 9,
                                                   [0, 1 << 63], [2 ** 64], "3", None, [1.5]])
    elif kind == 6:  # an integer of thousands of digits anywhere
        path, _ = rng.choice(list(nodes(header)))
        parent_of(header, path)[path[-1]] = HUGE_DIGITS
    elif kind == 7 and tensors:  # a key missing from a record or one of its parts
        r = rng.choice(tensors)
        holders = [r] + [v for v in (r.get("codebook"), r.get("indices"), r.get("positions"),
                                     (r.get("positions") or {}).get("stream")) if isinstance(v, dict)]
        holder = rng.choice(holders)
        if holder:
            del holder[rng.choice(list(holder))]
    elif kind == 8 and tensors:  # renamed records (the model lacks the name) or a changed kind
        r = rng.choice(tensors)
        if rng.random() < 0.6:
            r["name"] = rng.choice([r["name"] + rng.choice(["_codebook", "_mask", "_index", "x"]),
                                    "fc7.weight", "zz." + r["name"], r["name"].replace("weight", "weigjt"),
                                    r["name"].replace("bias", "weight"), rng.choice(tensors)["name"]])
        else:
            r["encoding"] = rng.choice(["dense", "shared", "sparse"])
    elif kind == 9:  # hostile model descriptions
        header["model"] = rng.choice([
            {"model": "lenet300_100", "input_shape": rng.choice([[1, 100000, 100000], [1, 3000, 3000], "abc", [],
                                                                  [0, 28, 28], [-1, 28, 28], [1, 28, 28, 1, 1]]),
             "num_classes": 10},
            {"model": rng.choice(["lenet300_100", "lenet5", "conv2", "conv4", "conv6"]),
             "input_shape": [rng.randint(1, 3), rng.randint(1, 4096), rng.randint(1, 4096)],
             "num_classes": rng.choice([1, 10, 2_000_000, 0, -3, True, "10"])},
            {"model": rng.choice(["resnet", "", None, 5, "LENET5"])}, None, [], "lenet5",
            {**(seed.header.get("model") or {"model": "lenet5"}), "num_classes": rng.randint(1, 20)},
        ])
    elif kind == 10 and tensors:  # stream counts and coders against the payload
        streams = [s for r in tensors for s in (r.get("indices"), (r.get("positions") or {}).get("stream")) if s]
        if streams:
            s = rng.choice(streams)
            if rng.random() < 0.6:
                s["count"] = rng.choice([0, 1, s["count"] + 1, s["count"] * 2 + 1, s["count"] * 8, big])
            else:
                s["coder"] = rng.choice(["raw", "huffman", "rans"])
    elif kind == 11 and len(tensors) > 1:  # section numbers swapped between fields
        refs = []
        for r in tensors:
            for holder, key in ((r, "section"), (r, "values"), (r.get("codebook"), "section"),
                                (r.get("indices"), "section"), ((r.get("positions") or {}).get("stream"), "section")):
                if isinstance(holder, dict) and key in holder:
                    refs.append((holder, key))
        (h1, k1), (h2, k2) = rng.sample(refs, 2)
        h1[k1], h2[k2] = h2[k2], h1[k1]
    return header, sections


def make_case(family: str, rng: random.Random, seed: Seed) -> bytes:
    data = seed.data
    if family == "raw_bitflip":
        out = bytearray(data)
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if family == "truncate_retrailer":
        cut = rng.randint(0, len(data) - 8)
        body = data[:cut]
        return body + struct.pack("<I", zlib.crc32(body)) + b"DZEN"
    if family == "hdr_text_bitflip":
        text = bytearray(seed.text)
        for _ in range(1 if rng.random() < 0.8 else 2):
            text[rng.randrange(len(text))] ^= 1 << rng.randrange(8)
        return frame_text(bytes(text), seed.sections)
    if family == "hdr_text_bytes":
        text = bytearray(seed.text)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text))
            byte = rng.choice(b'",:{}[]-0123456789e.tfn ') if rng.random() < 0.8 else rng.randrange(256)
            op = rng.random()
            if op < 0.6:
                text[i] = byte
            elif op < 0.8:
                text.insert(i, byte)
            else:
                del text[i]
        return frame_text(bytes(text), seed.sections)
    if family == "hdr_field":
        header = seed.header_copy()
        touched = mutate_field(rng, header)
        return frame_header(header, list(seed.sections), fix_table=not touched)
    if family in ("section_bitflip", "section_bytes"):
        sections = list(seed.sections)
        if family == "section_bitflip":
            if not sections:
                return seed.data
            i = rng.randrange(len(sections))
            s = bytearray(sections[i])
            if not s:
                return seed.data
            s[rng.randrange(len(s))] ^= 1 << rng.randrange(8)
            sections[i] = bytes(s)
        else:
            mutate_section(rng, sections)
        return frame_header(seed.header_copy(), sections)
    if family == "crafted":
        header, sections = crafted(rng, seed)
        return frame_header(header, sections)
    if family == "stacked":
        header, sections, touched = seed.header_copy(), list(seed.sections), False
        for _ in range(rng.randint(2, 4)):
            op = rng.random()
            if op < 0.45:
                touched |= mutate_field(rng, header)
            elif op < 0.8:
                mutate_section(rng, sections)
            else:
                header, sections = crafted(rng, _Derived(header, sections))
        return frame_header(header, sections, fix_table=not touched)
    raise ValueError(family)


class _Derived:
    """A mutated header + sections standing in for a seed (for stacked crafted edits)."""

    def __init__(self, header, sections):
        self.header, self.sections, self.text = header, sections, json.dumps(header).encode()

    def header_copy(self):
        return json.loads(self.text)


# ============================================================================ the worker

def worker(seed_dir: str, mem_mb: int, hang_s: float) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import resource
    import traceback

    import torch

    torch.set_num_threads(1)
    import deepzip
    from deepzip import FormatError
    from deepzip.encode import decode_bytes

    seeds = {p.stem: Seed(p.stem, p.read_bytes()) for p in sorted(Path(seed_dir).glob("*.dz"))}
    seed_states = {name: decode_bytes(s.data)[1] for name, s in seeds.items()}
    names = sorted(seeds)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz_dz_", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    case_path = scratch / "case.dz"

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) // 1024
        return 0

    limit = (status("VmSize:") + mem_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def reset_peak() -> int:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        return status("VmRSS:")

    def same(a, b) -> bool:
        return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)

    def where(exc: BaseException) -> str:
        tb = traceback.extract_tb(exc.__traceback__)
        frame = tb[-1] if tb else None
        place = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        return f"{type(exc).__name__}@{place}: {str(exc)[:160]}"

    def run_case(seed: Seed, data: bytes) -> tuple[str, str]:
        try:
            header, state = decode_bytes(data, "case")
        except FormatError:
            return "FormatError", ""
        outcome = "loaded_same" if same(state, seed_states[seed.name]) else "loaded_diff"
        del state
        case_path.write_bytes(data)
        try:
            model = fresh_model(seed.name, header)
        except Exception as exc:  # the harness itself failed: report it
            return "other", "harness " + where(exc)
        try:
            deepzip.load(case_path, model=model)
            if seed.registry:
                deepzip.load(case_path)
        except FormatError:
            return "FormatError", ""
        return outcome, ""

    for line in sys.stdin:
        request = json.loads(line)
        counts, by_seed, bad = Counter(), Counter(), []
        peak_mb, slowest = 0, 0.0
        peaks = []
        for case_id in range(request["start"], request["start"] + request["count"]):
            family = request["family"]
            rng = random.Random(f"{request['salt']}:{family}:{case_id}")
            seed = seeds[names[rng.randrange(len(names))]]
            try:
                data = make_case(family, rng, seed)
            except Exception:  # a stacked edit found no place to apply on an already mangled header
                counts["unmade"] += 1
                continue
            if data == seed.data:
                counts["noop"] += 1
                continue
            rss = reset_peak()
            start = time.perf_counter()
            try:
                outcome, detail = run_case(seed, data)
            except MemoryError as exc:
                outcome, detail = "other", where(exc)
            except Exception as exc:
                outcome, detail = "other", where(exc)
            elapsed = time.perf_counter() - start
            grown = max(0, status("VmHWM:") - rss)
            if elapsed > hang_s:
                outcome, detail = "hang", f"{elapsed:.1f} s"
            counts[outcome] += 1
            by_seed[seed.name] += 1
            peak_mb, slowest = max(peak_mb, grown), max(slowest, elapsed)
            peaks.append(grown)
            if outcome not in GOOD:
                bad.append({"family": family, "case": case_id, "seed": seed.name, "outcome": outcome,
                            "detail": detail, "mb": grown, "s": round(elapsed, 3)})
        big = sorted(peaks)[-3:]
        print(json.dumps({"counts": counts, "by_seed": by_seed, "bad": bad, "peak_mb": peak_mb,
                          "slowest_s": slowest, "top_mb": big}), flush=True)


# ============================================================================ the parent

class Worker:
    def __init__(self, seed_dir: Path, args):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen([sys.executable, str(HERE), "--worker", str(seed_dir), "--mem-mb", str(args.mem_mb),
                                      "--hang-s", str(args.hang_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, preexec_fn=lambda: os.nice(args.nice))

    def ask(self, request: dict, timeout: float) -> dict | None:
        """The worker's answer, or None if it died or ran past ``timeout``."""
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


def schedule(total: int, batch: int) -> list[dict]:
    """Batches of one family each, interleaved by weight, numbered per family."""
    weights = [(name, w) for name, w, _ in FAMILIES]
    cycle = [name for name, w in weights for _ in range(w)]
    rng = random.Random(0)
    rng.shuffle(cycle)
    next_id, out, done = Counter(), [], 0
    while done < total:
        for family in cycle:
            n = min(batch, total - done)
            if n <= 0:
                break
            out.append({"family": family, "start": next_id[family], "count": n})
            next_id[family] += n
            done += n
    return out


def run(args) -> dict:
    seed_dir = Path(tempfile.mkdtemp(prefix="fuzz_seeds_"))
    seeds = make_seeds(seed_dir)
    batches = [{**b, "salt": args.salt} for b in schedule(args.cases, args.batch)]
    totals = {"counts": Counter(), "family": defaultdict(Counter), "seed": Counter(), "bad": [], "peak_mb": 0,
              "slowest_s": 0.0, "top_mb": []}
    started = time.time()
    workers: list[Worker | None] = [None] * args.workers
    pending = list(reversed(batches))
    in_flight: dict[int, dict] = {}
    sent_at: dict[int, float] = {}

    def merge(family: str, answer: dict) -> None:
        for k, v in answer["counts"].items():
            totals["counts"][k] += v
            totals["family"][family][k] += v
        totals["seed"].update(answer["by_seed"])
        totals["bad"] += answer["bad"]
        totals["peak_mb"] = max(totals["peak_mb"], answer["peak_mb"])
        totals["slowest_s"] = max(totals["slowest_s"], answer["slowest_s"])
        totals["top_mb"] = sorted(totals["top_mb"] + answer["top_mb"])[-10:]

    def one_by_one(batch: dict) -> None:
        """A batch whose worker crashed or hung: each case alone, to name the culprits."""
        for case_id in range(batch["start"], batch["start"] + batch["count"]):
            w = Worker(seed_dir, args)
            single = {**batch, "start": case_id, "count": 1}
            answer = w.ask(single, args.timeout_s + 30)
            code = w.stop() if answer is None else None
            if answer is None:
                outcome = "hang" if code in (-9, None) else "crash"
                merge(batch["family"], {"counts": {outcome: 1}, "by_seed": {}, "bad": [
                    {"family": batch["family"], "case": case_id, "outcome": outcome, "detail": f"exit {code}"}],
                    "peak_mb": 0, "slowest_s": 0.0, "top_mb": []})
            else:
                w.stop()
                merge(batch["family"], answer)

    reported = 0
    while pending or in_flight:
        for i in range(args.workers):
            if i not in in_flight and pending:
                if workers[i] is None:
                    workers[i] = Worker(seed_dir, args)
                batch = pending.pop()
                workers[i].proc.stdin.write(json.dumps(batch) + "\n")
                workers[i].proc.stdin.flush()
                in_flight[i], sent_at[i] = batch, time.time()
        streams = {workers[i].proc.stdout: i for i in in_flight}
        ready, _, _ = select.select(list(streams), [], [], 1.0)
        for stream in ready:
            i = streams[stream]
            line = stream.readline()
            batch = in_flight.pop(i)
            if line:
                merge(batch["family"], json.loads(line))
            else:
                workers[i].stop()
                workers[i] = None
                one_by_one(batch)
        for i in list(in_flight):  # a batch past its time: kill and rerun its cases one by one
            batch = in_flight[i]
            if time.time() - sent_at[i] > args.timeout_s + args.hang_s * batch["count"] / 10:
                in_flight.pop(i)
                workers[i].stop()
                workers[i] = None
                one_by_one(batch)
        done = sum(totals["counts"].values())
        if done - reported >= args.progress:
            reported = done
            rate = done / max(time.time() - started, 1e-9)
            print(f"{done} cases, {rate:.0f}/s, bad {len(totals['bad'])}, peak +{totals['peak_mb']} MB",
                  file=sys.stderr, flush=True)
    for w in workers:
        if w is not None:
            w.stop()
    wall = time.time() - started
    counts = totals["counts"]
    cases = sum(v for k, v in counts.items() if k not in ("noop", "unmade"))
    recomputed = sum(v for fam, c in totals["family"].items() if fam in RECOMPUTED
                     for k, v in c.items() if k not in ("noop", "unmade"))
    return {
        "cases": cases, "cases_behind_recomputed_checksums": recomputed, "noop_mutations_skipped": counts["noop"],
        "unmade_mutations_skipped": counts["unmade"],
        "outcomes": {k: counts[k] for k in OUTCOMES},
        "bad": len(totals["bad"]), "peak_rss_growth_mb": totals["peak_mb"], "largest_growths_mb": totals["top_mb"],
        "slowest_case_s": round(totals["slowest_s"], 3), "wall_s": round(wall, 1), "workers": args.workers,
        "cases_per_s": round(cases / wall, 1), "mem_limit_mb": args.mem_mb, "hang_s": args.hang_s,
        "salt": args.salt, "commit": _commit(), "seeds": [p.stem for p in seeds],
        "families": {fam: {k: c[k] for k in (*OUTCOMES, "noop", "unmade")} for fam, c in sorted(totals["family"].items())},
        "by_seed": dict(sorted(totals["seed"].items())), "bad_cases": totals["bad"][:200],
    }


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def markdown(result: dict) -> str:
    o = result["outcomes"]
    lines = [
        "# .dz reader fuzzing (`benchmarks/fuzz_dz.py`)", "",
        f"**{result['cases']:,} cases** ({result['cases_behind_recomputed_checksums']:,} behind recomputed "
        f"checksums) in {result['wall_s']:.0f} s with {result['workers']} worker(s) "
        f"({result['cases_per_s']:.0f} cases/s); **{result['bad']} failures** (other exception, crash or hang).", "",
        f"- outcomes: FormatError {o['FormatError']:,}; loaded, weights as the seed {o['loaded_same']:,}; loaded, "
        f"weights different {o['loaded_diff']:,}; other exception {o['other']}; crash {o['crash']}; hang {o['hang']}",
        f"- peak RSS growth of any case: {result['peak_rss_growth_mb']} MB (largest: {result['largest_growths_mb']}); "
        f"workers limited to {result['mem_limit_mb']} MB of address space beyond their start",
        f"- slowest case: {result['slowest_case_s']} s (a hang is > {result['hang_s']} s)",
        f"- skipped: {result['noop_mutations_skipped']:,} no-op mutations, {result['unmade_mutations_skipped']:,} stacked "
        f"edits with no place to apply; salt {result['salt']!r}; commit {result.get('commit', 'unknown')}",
        f"- seeds: {', '.join(result['seeds'])}", "",
        "| family | checksums | cases | FormatError | loaded same | loaded diff | other | crash | hang |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fam, c in result["families"].items():
        n = sum(v for k, v in c.items() if k not in ("noop", "unmade"))
        lines.append(f"| {fam} | {'recomputed' if fam in RECOMPUTED else 'as mutated'} | {n:,} | {c['FormatError']:,} "
                     f"| {c['loaded_same']:,} | {c['loaded_diff']:,} | {c['other']} | {c['crash']} | {c['hang']} |")
    lines += ["", "Outcome per case: `FormatError` if decoding, `deepzip.load(path, model=fresh)` or (registry seeds) "
              "`deepzip.load(path)` refused the file with deepzip's error; `loaded` if every stage succeeded "
              "(a mutation of the weights' bytes behind recomputed checksums is undetectable by design)."]
    if result["bad_cases"]:
        lines += ["", "## Failures", ""] + [f"- {json.dumps(b)}" for b in result["bad_cases"][:50]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small sample (seconds), for the tests")
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--mem-mb", type=int, default=2048)
    parser.add_argument("--hang-s", type=float, default=5.0)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--salt", default="dz1")
    parser.add_argument("--progress", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.mem_mb, args.hang_s)
        return 0
    if args.quick:
        # one batch for each entry of the family schedule: every family runs
        args.workers, args.batch, args.progress = 1, 60, 10 ** 9
        args.cases = args.batch * sum(w for _, w, _ in FAMILIES)
    sys.path.insert(0, str(ROOT / "src"))
    result = run(args)
    text = markdown(result)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "fuzz.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "fuzz.md").write_text(text)
    print(text)
    return 0 if result["bad"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
