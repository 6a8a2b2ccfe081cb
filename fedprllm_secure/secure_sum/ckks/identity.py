"""Who signed what: client identity keys, the key authority's identity bytes, chunk signatures.

Every ckks client holds an Ed25519 identity key created at enrollment; the roster publishes the
public keys (option "identity_public_keys": {client id: 32 bytes}). A client signs each chunk it
encrypts, binding the ciphertexts to everything that gives them meaning (the session's
`config_digest`, the aggregation, the chunk's name, length and offset, the bound, the packing
and the client's pad public key). The key authority verifies these signatures on statements
that carry only the digest of the ciphertexts, and decrypts only the server's sum, from which it
removes the signers' one-time pads (see authority.py and protocols/ckks.md, sections 4.1-4.2).

Private identity bytes (`encode_identity`), length-checked:

    "FPCK" || u8 version (2) || Ed25519 private key (32) || u32 n || authority secret (n)
    authority secret = X25519 pad private key (32) || secret TenSEAL context (n - 32)

n = 0 for every client except the one designated key authority. A node's public enrollment part
(`encode_public`, Flower) is the Ed25519 public key (32), followed, for the designated authority
only, by its X25519 pad public key (32) and the public TenSEAL context.

Each client also signs, in every upload, its per-session X25519 pad public key e_j^pub
(protocols/ckks.md, "One-time pads"); the payload binds it with everything else.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..additive import primitives as P

IDENTITY_MAGIC = b"FPCK"
IDENTITY_VERSION = 2
KEY_BYTES = 32
SIGNATURE_BYTES = 64
CHUNK_LABEL = b"ckks/encrypted-chunk/v2\x00"
CIPHERTEXTS_LABEL = b"fedprllm-secure/ckks/v1/ciphertexts\x00"
MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class Identity:
    """A client's private identity: its signing key, and the secret context and X25519 pad key
    if it is the designated key authority."""

    signing_key: bytes
    secret_context: bytes | None
    pad_key: bytes | None = None

    def __repr__(self) -> str:  # never print key material
        role = "key authority" if self.secret_context is not None else "client"
        return f"Identity(<{role} secret>)"


def encode_identity(
    signing_key: bytes, secret_context: bytes | None = None, pad_key: bytes | None = None
) -> bytes:
    if len(signing_key) != KEY_BYTES:
        raise ProtocolError("an identity key must be 32 bytes")
    if (secret_context is None) != (pad_key is None) or (
        pad_key is not None and len(pad_key) != KEY_BYTES
    ):
        raise ProtocolError("a key authority needs a secret context and a 32-byte pad key")
    context = bytes(pad_key) + bytes(secret_context) if pad_key and secret_context else b""
    return (
        IDENTITY_MAGIC
        + bytes([IDENTITY_VERSION])
        + bytes(signing_key)
        + P.u32(len(context))
        + bytes(context)
    )


def decode_identity(data: bytes) -> Identity:
    """The identity `encode_identity` wrote; ProtocolError on anything else (lengths checked)."""
    data = bytes(data)
    head = len(IDENTITY_MAGIC) + 1 + KEY_BYTES + 4
    if len(data) < head or data[:4] != IDENTITY_MAGIC or data[4] != IDENTITY_VERSION:
        raise ProtocolError("not a ckks identity of this version")
    key = data[5 : 5 + KEY_BYTES]
    (n,) = struct.unpack(">I", data[head - 4 : head])
    if len(data) != head + n:
        raise ProtocolError("a ckks identity's length field does not match its size")
    if n == 0:
        return Identity(key, None, None)
    if n <= KEY_BYTES:
        raise ProtocolError("a ckks key authority identity is too short")
    return Identity(key, data[head + KEY_BYTES :], data[head : head + KEY_BYTES])


def new_identity_key(rng: RandomSource) -> bytes:
    """32 fresh Ed25519 private-key bytes drawn from `rng`."""
    return P.new_ed25519(rng).private_bytes_raw()


def public_key(signing_key: bytes) -> bytes:
    return P.public_bytes(P.Ed25519PrivateKey.from_private_bytes(signing_key))


def new_pad_key(rng: RandomSource) -> bytes:
    """32 fresh X25519 private-key bytes drawn from `rng` (pads: protocols/ckks.md)."""
    return P.new_x25519(rng).private_bytes_raw()


def pad_public(pad_key: bytes) -> bytes:
    return P.public_bytes(P.X25519PrivateKey.from_private_bytes(pad_key))


def encode_public(
    identity_public: bytes, public_context: bytes | None = None, pad_public: bytes | None = None
) -> bytes:
    """A node's public part: identity key, then (authority only) pad public key and context."""
    if len(identity_public) != KEY_BYTES:
        raise ProtocolError("an identity public key must be 32 bytes")
    if (public_context is None) != (pad_public is None) or (
        pad_public is not None and len(pad_public) != KEY_BYTES
    ):
        raise ProtocolError("a key authority publishes a context and a 32-byte pad public key")
    return bytes(identity_public) + bytes(pad_public or b"") + bytes(public_context or b"")


def decode_public(data: bytes) -> tuple[bytes, bytes | None, bytes | None]:
    """(identity public key, pad public key or None, public context or None) of a node's
    enrollment reply."""
    data = bytes(data)
    if len(data) < KEY_BYTES or KEY_BYTES < len(data) <= 2 * KEY_BYTES:
        raise ProtocolError("a node sent a malformed ckks enrollment reply")
    if len(data) == KEY_BYTES:
        return data, None, None
    return data[:KEY_BYTES], data[KEY_BYTES : 2 * KEY_BYTES], data[2 * KEY_BYTES :]


def u64(value: int) -> bytes:
    if not 0 <= value <= MAX_U64:
        raise ProtocolError(f"value {value} does not fit in 64 bits")
    return struct.pack(">Q", value)


def ciphertexts_digest(ciphertexts: tuple[bytes, ...]) -> bytes:
    """SHA-256 over the count and each length-prefixed ciphertext (an injective encoding)."""
    h = hashlib.sha256(CIPHERTEXTS_LABEL + P.u32(len(ciphertexts)))
    for data in ciphertexts:
        h.update(u64(len(data)))
        h.update(data)
    return h.digest()


def chunk_payload(
    binding: bytes,
    aggregation: int,
    sender: int,
    name: str,
    length: int,
    offset: int,
    bound: int,
    base: int,
    per_slot: int,
    pad_public: bytes,
    digest: bytes,
) -> bytes:
    """The bytes a client signs for one encrypted chunk (protocols/ckks.md, "Signed uploads")."""
    raw_name = name.encode("utf-8")
    if len(pad_public) != KEY_BYTES or len(digest) != 32:
        raise ProtocolError("a pad public key and a ciphertext digest are 32 bytes each")
    return b"".join(
        (
            CHUNK_LABEL,
            binding,
            P.u32(aggregation),
            P.u32(sender),
            P.u32(len(raw_name)),
            raw_name,
            u64(length),
            u64(offset),
            u64(bound),
            u64(base),
            P.u32(per_slot),
            pad_public,
            digest,
        )
    )


def sign(signing_key: bytes, payload: bytes) -> bytes:
    return P.sign(P.Ed25519PrivateKey.from_private_bytes(signing_key), payload)


def verify(public: bytes, signature: bytes, payload: bytes) -> bool:
    return P.verify(public, signature, payload)
