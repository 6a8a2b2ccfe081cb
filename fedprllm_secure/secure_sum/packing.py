"""Bit-packing of unsigned integer vectors to a fixed width.

Layout: entry i occupies stream bits [i*b, (i+1)*b), least significant bit first; stream bit j is
bit (j mod 8) of byte j // 8 (LSB first). The last byte is zero-padded; `unpack_uint` refuses
non-zero padding and a wrong byte count, so every vector has exactly one encoding.
"""

from __future__ import annotations

import numpy as np

from ..errors import MessageDecodeError


def bits_for(max_value: int) -> int:
    """Bits needed for values in [0, max_value] (at least 1)."""
    return max(1, int(max_value).bit_length())


def packed_size(length: int, bits: int) -> int:
    return (length * bits + 7) // 8


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers < 2**bits into `packed_size(len, bits)` bytes."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.size == 0:
        return b""
    if np.issubdtype(flat.dtype, np.signedinteger) and int(flat.min()) < 0:
        raise ValueError("cannot pack negative values")
    data = flat.astype(np.uint64)
    if bits < 64 and int(data.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    if bits in (8, 16, 32, 64):
        return data.astype(f"<u{bits // 8}").tobytes()
    if bits == 1:
        return np.packbits(data.astype(np.uint8), bitorder="little").tobytes()
    if bits < 8:
        return _pack_in_words(data, bits)
    shifts = np.arange(bits, dtype=np.uint64)
    planes = ((data[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def _pack_in_words(data: np.ndarray, bits: int) -> bytes:
    """Widths below 8: eight entries fill exactly `bits` bytes, built as one 64-bit word."""
    length = data.size
    padded = np.zeros(-(-length // 8) * 8, dtype=np.uint64)
    padded[:length] = data
    shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
    words = np.bitwise_or.reduce(padded.reshape(-1, 8) << shifts, axis=1)
    raw = words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :bits]
    return raw.reshape(-1)[: packed_size(length, bits)].tobytes()


def _unpack_in_words(raw: np.ndarray, bits: int, length: int) -> np.ndarray:
    groups = -(-length // 8)
    buffer = np.zeros(groups * bits, dtype=np.uint8)
    buffer[: raw.size] = raw
    octets = np.zeros((groups, 8), dtype=np.uint8)
    octets[:, :bits] = buffer.reshape(groups, bits)
    words = octets.reshape(-1).view("<u8")
    shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
    values = ((words[:, None] >> shifts) & np.uint64((1 << bits) - 1)).reshape(-1)
    if values[length:].any():
        raise MessageDecodeError("packed vector has non-zero padding bits")
    return values[:length]


def unpack_uint(data: bytes, bits: int, length: int) -> np.ndarray:
    """Inverse of `pack_uint`; returns uint64. Raises MessageDecodeError on malformed input."""
    if not 1 <= bits <= 64:
        raise MessageDecodeError("bit width must be in 1..64")
    if len(data) != packed_size(length, bits):
        raise MessageDecodeError(
            f"packed vector has {len(data)} bytes, expected {packed_size(length, bits)}"
        )
    if length == 0:
        return np.zeros(0, dtype=np.uint64)
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(np.uint64)
    if 1 < bits < 8:
        return _unpack_in_words(raw, bits, length)
    total = length * bits
    stream = np.unpackbits(raw, bitorder="little")
    if stream[total:].any():
        raise MessageDecodeError("packed vector has non-zero padding bits")
    if bits == 1:
        return stream[:total].astype(np.uint64)
    planes = stream[:total].reshape(length, bits).astype(np.uint64)
    weights = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (planes * weights).sum(axis=1, dtype=np.uint64)
