"""The .dz container (docs/format.md): preamble, JSON header, sections, checksums. Untrusted input.

`pack` assembles bytes from a header and section payloads; `unpack` checks a file in the spec's
reading order and returns the header and the (checksum-verified) section payloads.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

from ..errors import FormatError
from .schema import MAX_SECTIONS, check_header

MAGIC = b"\x89DZP\r\n\x1a\n"
END_MAGIC = b"DZEN"
VERSION = (1, 2)  # the newest version this code reads and writes
FIRST_VERSION = (1, 0)
ROWS_VERSION = (1, 1)  # per-row codebooks, outliers
MASK_VERSION = (1, 2)  # mask positions, the adaptive coder
MAX_HEADER = 4 << 20
MAX_DIGITS = 20  # the longest integer a header may hold (a u64 has 20 digits)
PREAMBLE = struct.Struct("<8sHHI")
TRAILER = struct.Struct("<I4s")
MIN_SIZE = PREAMBLE.size + 2 + 4 + TRAILER.size


class TruncatedFileError(FormatError):
    """The file ends before a structure it declares."""


class ChecksumError(FormatError):
    """A CRC-32 does not match: the file is corrupted."""


class UnsupportedVersionError(FormatError):
    """The file's format version is not one this reader knows."""


def pack(header: dict[str, Any], sections: list[bytes]) -> bytes:
    """The file's bytes, marked with the lowest version whose features the header uses."""
    header = {**header, "sections": [[len(payload), zlib.crc32(payload)] for payload in sections]}
    text = json.dumps(header, separators=(",", ":"), sort_keys=False, allow_nan=False).encode()
    if len(text) > MAX_HEADER:
        raise ValueError(f"header of {len(text)} bytes exceeds the format's {MAX_HEADER}-byte cap")
    return frame(zlib.compress(text, 9), sections, needed_version(header))


def needed_version(header: dict[str, Any]) -> tuple[int, int]:
    """1.2 when a record uses mask positions or the adaptive coder, else 1.1 when one uses per-row codebooks
    or outliers, else 1.0 (readable by a 1.0 reader)."""
    version = FIRST_VERSION
    for record in header.get("tensors", ()):
        if not isinstance(record, dict):
            continue
        if _uses_1_2(record):
            return MASK_VERSION
        if record.get("outliers") is not None or (isinstance(record.get("codebook"), dict) and "rows" in record["codebook"]):
            version = ROWS_VERSION
    return version


def _uses_1_2(record: dict[str, Any]) -> bool:
    positions = record.get("positions")
    streams = [record.get("indices")]
    if isinstance(positions, dict):
        if "mask" in positions:
            return True
        streams.append(positions.get("stream"))
    return any(isinstance(s, dict) and s.get("coder") == "adaptive" for s in streams)


def frame(deflated_header: bytes, sections: list[bytes], version: tuple[int, int] = VERSION) -> bytes:
    """Preamble, header, checksums and trailer around an already deflated header."""
    head = PREAMBLE.pack(MAGIC, *version, len(deflated_header)) + deflated_header
    body = head + struct.pack("<I", zlib.crc32(head)) + b"".join(sections)
    return body + TRAILER.pack(zlib.crc32(body), END_MAGIC)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_HEADER)
    except zlib.error as exc:
        raise FormatError(f"header is not a valid zlib stream ({exc})") from None
    if inflater.unconsumed_tail:
        raise FormatError(f"header inflates to more than the {MAX_HEADER}-byte cap")
    if not inflater.eof or inflater.unused_data:
        raise FormatError("header zlib stream is incomplete or followed by extra bytes")
    return text


def _parse_json(text: bytes) -> dict:
    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise FormatError("header has duplicate keys")
        return dict(pairs)

    def no_constants(name):
        raise FormatError(f"header contains the non-JSON constant {name}")

    def bounded_int(digits):
        if len(digits.lstrip("-")) > MAX_DIGITS:
            raise FormatError(f"header holds an integer of {len(digits.lstrip('-'))} digits; at most {MAX_DIGITS} "
                              f"are allowed")
        return int(digits)

    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constants,
                            parse_int=bounded_int)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError("header must be a JSON object")
    return header


def unpack(data: bytes) -> tuple[dict, list[bytes]]:
    """Validate the container and return (header, section payloads)."""
    if len(data) < MIN_SIZE:
        raise TruncatedFileError(f"file has {len(data)} bytes; a .dz file has at least {MIN_SIZE}")
    magic, major, minor, header_len = PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise FormatError(f"not a deepzip file (magic {magic!r}, expected {MAGIC!r})")
    if major != VERSION[0] or minor > VERSION[1]:
        raise UnsupportedVersionError(f"format version {major}.{minor} is not supported; this deepzip reads "
                                      f"{VERSION[0]}.0 to {VERSION[0]}.{VERSION[1]}")
    if not 2 <= header_len <= MAX_HEADER:
        raise FormatError(f"header length {header_len} outside 2..{MAX_HEADER}")
    data_start = PREAMBLE.size + header_len + 4
    if data_start + TRAILER.size > len(data):
        raise TruncatedFileError(f"header of {header_len} bytes does not fit in a {len(data)}-byte file")
    (header_crc,) = struct.unpack_from("<I", data, PREAMBLE.size + header_len)
    if zlib.crc32(data[: PREAMBLE.size + header_len]) != header_crc:
        raise ChecksumError("header checksum mismatch: the header is corrupted")
    header = _parse_json(_inflate(data[PREAMBLE.size: PREAMBLE.size + header_len]))
    file_crc, end = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if end != END_MAGIC:
        raise TruncatedFileError(f"end magic missing (found {end!r}): the file is truncated or has trailing bytes")
    if zlib.crc32(data[: len(data) - TRAILER.size]) != file_crc:
        raise ChecksumError("file checksum mismatch: the data is corrupted")
    sections = _sections(header, data, data_start, len(data) - TRAILER.size)
    check_header(header, [len(payload) for payload in sections], len(data), minor)
    return header, sections


def _sections(header: dict, data: bytes, start: int, end: int) -> list[bytes]:
    table = header.get("sections")
    if not isinstance(table, list) or len(table) > MAX_SECTIONS:
        raise FormatError(f"header 'sections' must be a list of at most {MAX_SECTIONS} entries")
    expected, payloads = 0, []
    for i, entry in enumerate(table):
        if not (isinstance(entry, list) and len(entry) == 2 and all(_is_uint(v) for v in entry)):
            raise FormatError(f"section {i}: needs [length, crc32] as non-negative integers")
        length, crc = entry
        if start + expected + length > end:
            raise TruncatedFileError(f"section {i} ends at {start + expected + length}, beyond the data end {end}")
        payload = data[start + expected: start + expected + length]
        expected += length
        if zlib.crc32(payload) != crc:
            raise ChecksumError(f"section {i} checksum mismatch")
        payloads.append(payload)
    if start + expected != end:
        raise FormatError(f"{end - start - expected} bytes of data are not covered by any section")
    return payloads


def _is_uint(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
