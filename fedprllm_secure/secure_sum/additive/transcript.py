"""Byte strings that are signed, encrypted or masked: one definition shared by both sides.

`binding` is the session's `api.config_digest` (never the bare session id): every signature, key
derivation and commitment is bound to everything the parties agreed on (protocols/additive.md 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ...errors import ProtocolError
from .primitives import PREFIX, keystream_words, u32
from .shamir import SHARE_BYTES

# a share plaintext: self-mask share || mask-key share (both for the same aggregation)


def _ids(ids: Sequence[int]) -> bytes:
    return u32(len(ids)) + b"".join(u32(c) for c in ids)


def graph_seed(binding: bytes) -> bytes:
    """The communication graph's seed: a function of the session's config digest only, so every
    client that agreed on the config builds the same graph (a server that could hand each client
    its own seed could give each a different connected graph and split one sum into partial
    sums; protocols/additive.md section 3.6)."""
    return hashlib.sha256(PREFIX + b"graph-seed" + binding).digest()


def advertise_payload(binding: bytes, owner: int, cipher_public: bytes) -> bytes:
    return b"advertise-keys" + binding + u32(owner) + cipher_public


def mask_key_payload(binding: bytes, aggregation: int, owner: int, mask_public: bytes) -> bytes:
    return b"mask-key" + binding + u32(aggregation) + u32(owner) + mask_public


def view_payload(binding: bytes, aggregation: int, owner: int, view: Sequence[int]) -> bytes:
    """What `owner` signs at masked-input chunk 0: the neighbours it masks with, ascending."""
    return b"masking-view" + binding + u32(aggregation) + u32(owner) + _ids(view)


def survivors_payload(binding: bytes, aggregation: int, survivors: Sequence[int]) -> bytes:
    return b"consistency-check" + binding + u32(aggregation) + _ids(survivors)


def share_plaintext(self_share: bytes, key_share: bytes) -> bytes:
    return self_share + key_share


def parse_share_plaintext(plain: bytes) -> tuple[bytes, bytes]:
    """(self-mask share, mask-key share); ProtocolError unless exactly two encoded shares."""
    if len(plain) != 2 * SHARE_BYTES:
        raise ProtocolError("a share plaintext must hold two shares")
    return plain[:SHARE_BYTES], plain[SHARE_BYTES:]


def add_masks(
    total: np.ndarray,
    self_seed: bytes | None,
    pair_seeds: dict[int, bytes],
    owner: int,
    aggregation: int,
    offset: int,
    bits: int,
    sign: int = 1,
) -> None:
    """total += sign * (PRG(self_seed) + sum over peers v of s(owner, v) * PRG(s_owner,v)), in place.

    `total` holds words in `word_dtype(bits)` (wrapping arithmetic, callers reduce mod 2^bits at
    the end); `offset` counts words. s(owner, v) is +1 when owner < v and -1 otherwise; the client
    adds its masks (sign +1), the server removes them (sign -1).
    """
    length = total.size
    plus, minus = (np.add, np.subtract) if sign > 0 else (np.subtract, np.add)
    if self_seed is not None:
        plus(total, keystream_words(self_seed, aggregation, offset, length, bits), out=total)
    for peer, seed in pair_seeds.items():
        words = keystream_words(seed, aggregation, offset, length, bits)
        (plus if owner < peer else minus)(total, words, out=total)
