"""Base-B slot packing of count vectors, and its inverse.

Layout: entry i of a chunk is digit (i mod K) of slot i // K, least significant digit first:
`slot[j] = sum_k x[j*K + k] * B**k`. The last slot is zero-padded. A chunk of L entries therefore
fills S = ceil(L / K) slots, and ciphertext c holds slots [c * slots, (c + 1) * slots).

Because every entry of every client is <= bound and B = clients * bound + 1, the digit-wise sum of
any set of clients never carries, so the sum of packed slots is the packing of the summed vector.

Every slot carries a one-time pad (pads.py): a client encrypts `(slot + pad) mod M`, M = t for BFV
and M = 2**K' > B**K - 1 for CKKS. CKKS values are also *centred*: the client encodes
`(slot + pad) mod M - M / 2`, which halves the largest magnitude and so the floating-point error;
a sum over c clients is shifted by `c * M / 2`, which the decryptor adds back knowing c. All of
this is exact in float64 because c * M < 2**52.
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


def padded_values(packed: np.ndarray, pads: np.ndarray, packing: Packing) -> np.ndarray:
    """One client's slot values: (packed + pad) mod M; for CKKS centred to [-M/2, M/2) float64
    (exact: M <= 2**52), for BFV the residues in [0, t)."""
    modulus = np.uint64(packing.pad_modulus)
    padded = (np.asarray(packed, dtype=np.uint64) % modulus + pads) % modulus
    if not packing.centered:
        return padded
    return padded.astype(np.float64) - packing.pad_modulus / 2


def sum_residues(raw: np.ndarray, packing: Packing, clients: int) -> np.ndarray:
    """The decrypted sum of `clients` padded slots as residues mod M (uint64), before the pads
    are removed. CKKS: refuses (ProtocolError) any slot farther than `packing.error_bound` from
    an integer, or outside [0, clients * (M - 1)] once the centring is added back; such a slot
    means a ciphertext under another key, a manipulated sum, or a broken precision model."""
    modulus = packing.pad_modulus
    if not packing.centered:
        return np.asarray(raw, dtype=np.uint64) % np.uint64(modulus)
    shifted = np.asarray(raw, dtype=np.float64) + clients * (modulus / 2)
    if not np.all(np.isfinite(shifted)):
        raise ProtocolError("a decrypted slot is not a finite number")
    nearest = np.rint(shifted)
    if shifted.size and float(np.max(np.abs(shifted - nearest))) > packing.error_bound:
        raise ProtocolError(
            "a decrypted slot is not within the CKKS error bound of an integer; refusing to "
            "release it (ciphertext under another key, a manipulated sum, or an input out of range)"
        )
    if nearest.size and (
        float(nearest.min()) < 0 or float(nearest.max()) > clients * (modulus - 1)
    ):
        raise ProtocolError("a decrypted slot lies outside the range of a sum of padded slots")
    return nearest.astype(np.uint64) % np.uint64(modulus)
