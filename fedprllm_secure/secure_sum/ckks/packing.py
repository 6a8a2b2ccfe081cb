"""Base-B slot packing of count vectors, and its inverse.

Layout: entry i of a chunk is digit (i mod K) of slot i // K, least significant digit first:
`slot[j] = sum_k x[j*K + k] * B**k`. The last slot is zero-padded. A chunk of L entries therefore
fills S = ceil(L / K) slots, and ciphertext c holds slots [c * slots, (c + 1) * slots).

Because every entry of every client is <= bound and B = clients * bound + 1, the digit-wise sum of
any set of clients never carries, so the sum of packed slots is the packing of the summed vector.

CKKS slots are *centred*: a client encodes `slot - bound * R / 2` with R = (B**K - 1) / (B - 1)
(the value with every digit equal to one), which halves the largest magnitude and so the
floating-point error. A sum over c clients is shifted by `c * bound * R / 2`, which the decryptor
adds back knowing c. All of this is exact in float64 because |slot| < 2**52.
"""

from __future__ import annotations

import numpy as np

from ...errors import ProtocolError
from .params import Packing


def slot_count(length: int, per_slot: int) -> int:
    return -(-length // per_slot)


def ciphertext_count(length: int, per_slot: int, slots: int) -> int:
    return -(-slot_count(length, per_slot) // slots)


def ciphertext_sizes(length: int, per_slot: int, slots: int) -> list[int]:
    """Number of slots used by each ciphertext of a chunk (all full but the last)."""
    total = slot_count(length, per_slot)
    return [min(slots, total - start) for start in range(0, total, slots)]


def pack(values: np.ndarray, base: int, per_slot: int) -> np.ndarray:
    """Pack entries in [0, base) into uint64 slots, K = per_slot digits each (base**K <= 2**64)."""
    flat = np.asarray(values).reshape(-1).astype(np.uint64)
    if flat.size and int(flat.max()) >= base:
        raise ValueError(f"an entry does not fit a base-{base} digit")
    slots = slot_count(flat.size, per_slot)
    padded = np.zeros(slots * per_slot, dtype=np.uint64)
    padded[: flat.size] = flat
    digits = padded.reshape(slots, per_slot)
    packed = np.zeros(slots, dtype=np.uint64)
    # Horner from the most significant digit keeps every intermediate below base**K.
    for k in range(per_slot - 1, -1, -1):
        packed = packed * np.uint64(base) + digits[:, k]
    return packed


def unpack(packed: np.ndarray, base: int, per_slot: int, length: int, max_digit: int) -> np.ndarray:
    """Inverse of `pack`; refuses slots >= base**K, digits > max_digit and non-zero padding."""
    slots = np.asarray(packed, dtype=np.uint64).reshape(-1)
    if slots.size != slot_count(length, per_slot):
        raise ProtocolError(f"{slots.size} slots cannot hold {length} entries")
    if slots.size and int(slots.max()) > base**per_slot - 1:
        raise ProtocolError("a decrypted slot exceeds the packing range")
    digits = np.empty((slots.size, per_slot), dtype=np.uint64)
    rest = slots.copy()
    for k in range(per_slot):
        digits[:, k] = rest % np.uint64(base)
        rest //= np.uint64(base)
    flat = digits.reshape(-1)
    if flat.size and int(flat.max()) > max_digit:
        raise ProtocolError(f"a decrypted count exceeds the largest possible sum {max_digit}")
    if flat[length:].any():
        raise ProtocolError("the padding of the last slot is not zero")
    return flat[:length]


def center_offset2(packing: Packing, bound: int, clients: int) -> int:
    """Twice the centring shift of a sum over `clients` clients: clients * bound * R (an int)."""
    repunit = (packing.base**packing.per_slot - 1) // (packing.base - 1)
    return clients * bound * repunit


def to_ckks_values(packed: np.ndarray, packing: Packing, bound: int) -> np.ndarray:
    """One client's centred float64 slot values (exact: |value| < 2**52)."""
    shift = center_offset2(packing, bound, 1) / 2
    return packed.astype(np.float64) - shift


def from_ckks_values(raw: np.ndarray, packing: Packing, bound: int, clients: int) -> np.ndarray:
    """Round a decrypted centred sum over `clients` clients back to packed uint64 slots.

    Refuses (ProtocolError) any slot farther than `packing.error_bound` from the lattice of
    possible values, or outside the packing range: such a slot means a ciphertext under another
    key, an input out of range, or a broken precision model, and must not be released.
    """
    offset2 = center_offset2(packing, bound, clients)
    parity = offset2 % 2  # the true centred sum lies in Z + parity / 2
    shifted = np.asarray(raw, dtype=np.float64) - parity / 2
    if not np.all(np.isfinite(shifted)):
        raise ProtocolError("a decrypted slot is not a finite number")
    nearest = np.rint(shifted)
    if shifted.size and float(np.max(np.abs(shifted - nearest))) > packing.error_bound:
        raise ProtocolError(
            "a decrypted slot is not within the CKKS error bound of a valid sum; refusing to "
            "release it (ciphertext under another key, or an input out of range)"
        )
    low, high = -(offset2 + parity) // 2, packing.max_packed - (offset2 + parity) // 2
    if nearest.size and (float(nearest.min()) < low or float(nearest.max()) > high):
        raise ProtocolError("a decrypted slot lies outside the range of a valid sum")
    return (nearest.astype(np.int64) + (offset2 + parity) // 2).astype(np.uint64)
