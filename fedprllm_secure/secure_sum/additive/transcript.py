"""Byte strings that are signed, encrypted or masked: one definition shared by both sides."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ProtocolError
from .primitives import keystream_words, u32, word_dtype
from .shamir import SHARE_BYTES

# a share plaintext: self-mask share || mask-key share (both for the same aggregation)


def advertise_payload(session_id: bytes, owner: int, cipher_public: bytes) -> bytes:
    return b"advertise-keys" + session_id + u32(owner) + cipher_public


def mask_key_payload(session_id: bytes, aggregation: int, owner: int, mask_public: bytes) -> bytes:
    return b"mask-key" + session_id + u32(aggregation) + u32(owner) + mask_public


def survivors_payload(session_id: bytes, aggregation: int, survivors: Sequence[int]) -> bytes:
    ids = b"".join(u32(c) for c in survivors)
    return b"consistency-check" + session_id + u32(aggregation) + u32(len(survivors)) + ids


def share_plaintext(self_share: bytes, key_share: bytes) -> bytes:
    return self_share + key_share


def parse_share_plaintext(plain: bytes) -> tuple[bytes, bytes]:
    """(self-mask share, mask-key share); ProtocolError unless exactly two encoded shares."""
    if len(plain) != 2 * SHARE_BYTES:
        raise ProtocolError("a share plaintext must hold two shares")
    return plain[:SHARE_BYTES], plain[SHARE_BYTES:]


def mask_vector(
    self_seed: bytes | None,
    pair_seeds: dict[int, bytes],
    owner: int,
    aggregation: int,
    offset: int,
    length: int,
    bits: int,
) -> np.ndarray:
    """PRG(self_seed) + sum over peers v of sign(owner, v) * PRG(s_owner,v), mod 2^(8 * itemsize).

    `offset` and `length` count words; sign is +1 when owner < v and -1 otherwise; callers reduce
    mod 2^bits at the end.
    """
    total = np.zeros(length, dtype=word_dtype(bits))
    if self_seed is not None:
        total += keystream_words(self_seed, aggregation, offset, length, bits)
    for peer, seed in pair_seeds.items():
        words = keystream_words(seed, aggregation, offset, length, bits)
        if owner < peer:
            total += words
        else:
            total -= words
    return total
