"""Fixed-width bit packing and LEB128 varints: the raw building blocks of every stream."""

from __future__ import annotations

import numpy as np

from ..errors import FormatError


def width(alphabet: int) -> int:
    """Bits per symbol of a fixed-width code for ``alphabet`` symbols (at least 1)."""
    return max(1, int(alphabet - 1).bit_length())


def pack_fixed(symbols: np.ndarray, bits: int) -> bytes:
    """``bits``-wide unsigned symbols, LSB-first."""
    s = np.asarray(symbols, dtype=np.uint64)
    matrix = (s[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)
    return np.packbits(matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_fixed(data: bytes, count: int, bits: int) -> np.ndarray:
    need = -(-count * bits // 8)
    if len(data) != need:
        raise FormatError(f"raw stream holds {len(data)} bytes, {count} symbols of {bits} bits need {need}")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: count * bits]
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64))
    return (flat.reshape(count, bits).astype(np.uint64) * weights).sum(axis=1).astype(np.int64)


def write_varint(value: int, out: bytearray) -> None:
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def varint(value: int) -> bytes:
    """``value`` as LEB128 bytes (what `write_varint` appends)."""
    out = bytearray()
    write_varint(value, out)
    return bytes(out)


def read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, next position); at most 5 bytes (a u32)."""
    value = 0
    for shift in range(0, 35, 7):
        if pos >= len(data):
            raise FormatError(f"{what}: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 1 << 32:
                raise FormatError(f"{what}: varint {value} exceeds 32 bits")
            return value, pos
    raise FormatError(f"{what}: varint longer than 5 bytes")


def write_table(symbols: np.ndarray, values: np.ndarray, out: bytearray, value_as_byte: bool) -> None:
    """A sparse symbol table: count, then (symbol delta, value) pairs; symbols strictly increasing."""
    write_varint(len(symbols), out)
    previous = -1
    for symbol, value in zip(symbols.tolist(), values.tolist()):
        write_varint(symbol - previous, out)
        previous = symbol
        if value_as_byte:
            out.append(value)
        else:
            write_varint(value, out)


def read_table(data: bytes, alphabet: int, value_as_byte: bool, what: str) -> tuple[np.ndarray, np.ndarray, int]:
    used, pos = read_varint(data, 0, what)
    if not 0 <= used <= alphabet:
        raise FormatError(f"{what}: table lists {used} symbols, alphabet has {alphabet}")
    symbols, values = np.empty(used, np.int64), np.empty(used, np.int64)
    previous = -1
    for i in range(used):
        delta, pos = read_varint(data, pos, what)
        previous += delta
        if delta < 1 or previous >= alphabet:
            raise FormatError(f"{what}: table symbol {previous} out of order or outside alphabet {alphabet}")
        symbols[i] = previous
        if value_as_byte:
            if pos >= len(data):
                raise FormatError(f"{what}: truncated table")
            values[i], pos = data[pos], pos + 1
        else:
            values[i], pos = read_varint(data, pos, what)
    return symbols, values, pos
