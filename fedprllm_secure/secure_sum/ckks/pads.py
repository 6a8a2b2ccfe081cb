"""Authority-keyed one-time pads inside every slot (protocols/ckks.md, "One-time pads").

Client j draws an X25519 key e_j once per session and signs e_j^pub into every upload. With the
key authority's published X25519 key A (option "ckks.authority_pad_key"), both compute

    k_j = HKDF-SHA256(X25519(e_j, A); salt = config_digest;
                      info = "fedprllm-secure/additive/v1/" || "ckks/pad-key" || u32(j))

and, for one request of a chunk, the pad of slot s is word s of the PRG

    seed = HMAC-SHA256(k_j, "ckks/pad/v1\\0" || context)
    context = u32(aggregation) || u32(len(name)) || name || u64(length) || u64(offset)
              || u64(bound) || u64(base) || u32(per_slot)          (`pad_context`)

The context is everything that decides how the slots are packed: a chunk asked for again under
another bound, length or packing gets other pads, so two differently packed plaintexts of one
client never share a pad (otherwise a server could put one client's upload into a sum under the
other request's statement, where the authority removes the very pad it carries).
    words: AES-256-CTR(seed) (primitives.keystream_words, counter domain 0), reduced to
           bits(M) bits; BFV (M = t prime): words >= t are rejected and replaced in order by
           words of counter domain 1, 2, ... (probability about 2^-38 per word at t).

The server sees e_j^pub and A but not X25519(e_j, A), so the pads are unknown to it. Pads are
uniform modulo M (M = 2**K' for CKKS: a plain bit mask; M = t for BFV: rejection sampling).
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ...errors import ProtocolError
from ..additive import primitives as P
from .identity import u64

PAD_KEY_LABEL = b"ckks/pad-key"
PAD_LABEL = b"ckks/pad/v1\x00"
MAX_DOMAINS = 64  # rejection rounds for BFV before giving up (each rejects ~2^-38 of words)


def pad_key(shared: bytes, binding: bytes, sender: int) -> bytes:
    """k_j from the X25519 shared secret, bound to the session's config digest and sender."""
    info = P.PREFIX + PAD_KEY_LABEL + P.u32(sender)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=binding, info=info).derive(shared)


def client_pad_key(private: bytes, authority_public: bytes, binding: bytes, sender: int) -> bytes:
    secret = P.agree(P.X25519PrivateKey.from_private_bytes(private), authority_public)
    return pad_key(secret, binding, sender)


def authority_pad_key(private: bytes, client_public: bytes, binding: bytes, sender: int) -> bytes:
    secret = P.agree(P.X25519PrivateKey.from_private_bytes(private), client_public)
    return pad_key(secret, binding, sender)


def pad_context(
    aggregation: int, name: str, length: int, offset: int, bound: int, base: int, per_slot: int
) -> bytes:
    """The bytes a chunk's pads are derived from: the request's every packing-relevant field."""
    encoded = name.encode("utf-8")
    return (
        P.u32(aggregation) + P.u32(len(encoded)) + encoded + u64(length) + u64(offset)
        + u64(bound) + u64(base) + P.u32(per_slot)
    )  # fmt: skip


def chunk_pads(key: bytes, context: bytes, slots: int, modulus: int) -> np.ndarray:
    """The `slots` pads (uint64, uniform in [0, modulus)) for `context` (`pad_context`) under
    pad key `key`."""
    if modulus < 2 or modulus > 2**63:
        raise ProtocolError(f"pad modulus {modulus} out of range")
    seed = hmac.new(key, PAD_LABEL + bytes(context), hashlib.sha256).digest()
    bits = (modulus - 1).bit_length()
    words = P.keystream_words(seed, 0, 0, slots, bits).astype(np.uint64)
    if modulus == 1 << bits:
        return words
    limit = np.uint64(modulus)
    bad = np.flatnonzero(words >= limit)
    domain = 1
    while bad.size:
        if domain > MAX_DOMAINS:
            raise ProtocolError("pad rejection sampling did not terminate")
        fresh = P.keystream_words(seed, domain, 0, bad.size, bits).astype(np.uint64)
        words[bad] = fresh
        bad = bad[fresh >= limit]
        domain += 1
    return words


def add_mod(total: np.ndarray, pads: np.ndarray, modulus: int) -> np.ndarray:
    """(total + pads) mod modulus for uint64 arrays already reduced (modulus <= 2**63)."""
    out = total + pads
    out[out >= np.uint64(modulus)] -= np.uint64(modulus)
    return out


def sub_mod(values: np.ndarray, pads: np.ndarray, modulus: int) -> np.ndarray:
    """(values - pads) mod modulus for uint64 arrays already reduced."""
    return add_mod(values, np.uint64(modulus) - pads if pads.size else pads, modulus) % np.uint64(
        modulus
    )
