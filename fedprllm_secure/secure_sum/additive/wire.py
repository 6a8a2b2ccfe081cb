"""Fast bit-packing for the masked vectors, byte-identical to `packing.pack_uint`.

Widths that divide 8 (1, 2, 4) are packed with whole-array shifts; 8/16/32/64 and other widths go
through `packing` (its layout: entry i at stream bits [i*b, (i+1)*b), LSB first).
"""

from __future__ import annotations

import numpy as np

from ...errors import MessageDecodeError
from ..packing import pack_uint, packed_size, unpack_uint


def pack(values: np.ndarray, bits: int) -> bytes:
    """Pack entries < 2**bits; `values` must already be reduced mod 2**bits."""
    if bits not in (2, 4) or values.size == 0:
        return pack_uint(values, bits)
    per = 8 // bits
    flat = values.astype(np.uint8, copy=False).reshape(-1)
    pad = (-flat.size) % per
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, dtype=np.uint8)])
    grid = flat.reshape(-1, per)
    out = grid[:, 0].copy()
    for j in range(1, per):
        out |= grid[:, j] << np.uint8(j * bits)
    return out.tobytes()


def unpack(data: bytes, bits: int, length: int, dtype: np.dtype) -> np.ndarray:
    """Inverse of `pack` into `dtype`; MessageDecodeError on a wrong size or non-zero padding."""
    if bits not in (2, 4) or length == 0:
        return unpack_uint(data, bits, length).astype(dtype)
    if len(data) != packed_size(length, bits):
        raise MessageDecodeError(
            f"packed vector has {len(data)} bytes, expected {packed_size(length, bits)}"
        )
    per = 8 // bits
    raw = np.frombuffer(data, dtype=np.uint8)
    low = np.uint8((1 << bits) - 1)
    grid = np.empty((raw.size, per), dtype=np.uint8)
    for j in range(per):
        grid[:, j] = (raw >> np.uint8(j * bits)) & low
    flat = grid.reshape(-1)
    if flat[length:].any():
        raise MessageDecodeError("packed vector has non-zero padding bits")
    return flat[:length].astype(dtype, copy=False)
