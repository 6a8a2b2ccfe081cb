"""Cryptographic primitives of `additive`, all from the `cryptography` package.

Contracts (normative text in protocols/additive.md, section "Primitives"):
- `derive_key`: HKDF-SHA256, salt = session id, info = label || u32(min id) || u32(max id); the
  two party ids are bound in, so a key agreed in one session or for one pair is useless elsewhere.
- `seal`/`open_sealed`: AES-256-GCM; the nonce encodes (aggregation, direction) so each
  (key, nonce) pair is used once per session, and the associated data binds session, aggregation,
  round, sender and recipient (a ciphertext replayed anywhere else fails to open).
- `keystream_words`: AES-256-CTR keyed by the full 32-byte seed; the counter block carries the
  aggregation index in its top 32 bits and the 16-byte block index below, so every entry of every
  aggregation has its own keystream bytes and any chunk can be masked on its own.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ...errors import ProtocolError
from ...randomness import RandomSource

PREFIX = b"fedprllm-secure/additive/v1/"
LABEL_SHARE_KEY = b"share-key"
LABEL_MASK_SEED = b"mask-seed"
MAX_ID = 2**32 - 1
MAX_AGGREGATION = 2**32 - 1


def u32(value: int) -> bytes:
    """4-byte big-endian encoding; refuses values outside [0, 2^32)."""
    if not 0 <= value <= MAX_ID:
        raise ProtocolError(f"value {value} does not fit in 32 bits")
    return struct.pack(">I", value)


def new_x25519(rng: RandomSource) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(rng.random_bytes(32))


def new_ed25519(rng: RandomSource) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(rng.random_bytes(32))


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_public(raw: bytes) -> X25519PublicKey:
    """Parse a raw X25519 public key; ProtocolError if it is not 32 bytes."""
    if len(raw) != 32:
        raise ProtocolError("an X25519 public key must be 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def agree(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret; refuses the all-zero output of a low-order peer key."""
    try:
        return private.exchange(x25519_public(peer_public))
    except ValueError as exc:  # cryptography rejects low-order points this way
        raise ProtocolError("peer X25519 key is of low order") from exc


def derive_key(secret: bytes, session_id: bytes, label: bytes, a: int, b: int) -> bytes:
    """32 bytes of HKDF-SHA256(secret; salt=session_id; info=PREFIX||label||u32(lo)||u32(hi))."""
    lo, hi = sorted((a, b))
    info = PREFIX + label + u32(lo) + u32(hi)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=info).derive(secret)


def share_nonce(aggregation: int, sender: int, recipient: int) -> bytes:
    """u32(aggregation) || u32(direction) || u32(0); direction 0 when sender < recipient."""
    return u32(aggregation) + u32(0 if sender < recipient else 1) + u32(0)


def share_aad(session_id: bytes, aggregation: int, sender: int, recipient: int) -> bytes:
    return PREFIX + b"share-keys" + session_id + u32(aggregation) + u32(sender) + u32(recipient)


def seal(
    key: bytes, session_id: bytes, aggregation: int, sender: int, recipient: int, plain: bytes
) -> bytes:
    nonce = share_nonce(aggregation, sender, recipient)
    aad = share_aad(session_id, aggregation, sender, recipient)
    return AESGCM(key).encrypt(nonce, plain, aad)


def open_sealed(
    key: bytes, session_id: bytes, aggregation: int, sender: int, recipient: int, sealed: bytes
) -> bytes:
    """Decrypt and authenticate; ProtocolError on any tampering, replay or misdirection."""
    nonce = share_nonce(aggregation, sender, recipient)
    aad = share_aad(session_id, aggregation, sender, recipient)
    try:
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except InvalidTag as exc:
        raise ProtocolError(f"share from client {sender} fails authentication") from exc


def sign(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    return key.sign(PREFIX + payload)


def verify(public: bytes, signature: bytes, payload: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of PREFIX||payload under `public`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, PREFIX + payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def commitment(session_id: bytes, aggregation: int, owner: int, seed: bytes) -> bytes:
    """SHA-256 binding a self-mask seed to its owner and aggregation (hiding: seed is 256-bit)."""
    data = PREFIX + b"self-mask-commitment" + session_id + u32(aggregation) + u32(owner) + seed
    return hashlib.sha256(data).digest()


def word_bytes(bits: int) -> int:
    """Keystream bytes per entry: the smallest of 1, 2, 4, 8 holding `bits` bits."""
    for width in (1, 2, 4, 8):
        if bits <= 8 * width:
            return width
    raise ProtocolError(f"modulus 2^{bits} is wider than 64 bits")


def word_dtype(bits: int) -> np.dtype:
    return np.dtype(f"<u{word_bytes(bits)}")


def keystream_words(
    seed: bytes, aggregation: int, offset: int, length: int, bits: int
) -> np.ndarray:
    """Entries [offset, offset+length) of the PRG vector of `seed` in `aggregation`, mod 2^bits.

    Entry i is the little-endian word at keystream bytes [i*w, (i+1)*w) (w = word_bytes(bits))
    reduced mod 2^bits. The keystream is AES-256-CTR(seed) with initial counter block
    u32(aggregation) || u32(0) || u64(0); byte j lies in block aggregation*2^96 + j // 16.
    """
    if len(seed) != 32:
        raise ProtocolError("a PRG seed must be 32 bytes")
    width = word_bytes(bits)
    start = offset * width
    block, skip = divmod(start, 16)
    counter = (aggregation << 96) + block
    if aggregation > MAX_AGGREGATION or block >= 1 << 64:
        raise ProtocolError("PRG counter out of range")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(counter.to_bytes(16, "big"))).encryptor()
    stream = encryptor.update(bytes(skip + length * width))[skip:]
    words = np.frombuffer(stream, dtype=f"<u{width}")
    if bits < 8 * width:
        words = words & np.array((1 << bits) - 1, dtype=words.dtype)
    return words
