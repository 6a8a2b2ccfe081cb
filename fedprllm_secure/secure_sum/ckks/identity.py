"""Who signed what: client identity keys, the key authority's identity bytes, chunk signatures.

Every ckks client holds an Ed25519 identity key created at enrollment; the roster publishes the
public keys (option "identity_public_keys": {client id: 32 bytes}). A client signs each chunk it
encrypts, binding the ciphertexts to everything that gives them meaning (the session's
`config_digest`, the aggregation, the chunk's name, length and offset, the bound and the packing).
The key authority decrypts only sums it recomputes itself from such signed uploads (see
authority.py and protocols/ckks.md, "Signed uploads").

Private identity bytes (`encode_identity`), length-checked:

    "FPCK" || u8 version (1) || Ed25519 private key (32) || u32 n || secret TenSEAL context (n)

n = 0 for every client except the one designated key authority. A node's public enrollment part
(`encode_public`, Flower) is the Ed25519 public key (32) followed by the public TenSEAL context
(empty except for the designated authority).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..additive import primitives as P

IDENTITY_MAGIC = b"FPCK"
IDENTITY_VERSION = 1
KEY_BYTES = 32
SIGNATURE_BYTES = 64
CHUNK_LABEL = b"ckks/encrypted-chunk/v1\x00"
CIPHERTEXTS_LABEL = b"fedprllm-secure/ckks/v1/ciphertexts\x00"
MAX_U64 = 2**64 - 1


@dataclass(frozen=True)
class Identity:
    """A client's private identity: its signing key, and the secret context if it is the
    designated key authority."""

    signing_key: bytes
    secret_context: bytes | None

    def __repr__(self) -> str:  # never print key material
        role = "key authority" if self.secret_context is not None else "client"
        return f"Identity(<{role} secret>)"


def encode_identity(signing_key: bytes, secret_context: bytes | None = None) -> bytes:
    if len(signing_key) != KEY_BYTES:
        raise ProtocolError("an identity key must be 32 bytes")
    context = secret_context or b""
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
    return Identity(key, data[head:] if n else None)


def new_identity_key(rng: RandomSource) -> bytes:
    """32 fresh Ed25519 private-key bytes drawn from `rng`."""
    return P.new_ed25519(rng).private_bytes_raw()


def public_key(signing_key: bytes) -> bytes:
    return P.public_bytes(P.Ed25519PrivateKey.from_private_bytes(signing_key))


def encode_public(identity_public: bytes, public_context: bytes | None = None) -> bytes:
    if len(identity_public) != KEY_BYTES:
        raise ProtocolError("an identity public key must be 32 bytes")
    return bytes(identity_public) + bytes(public_context or b"")


def decode_public(data: bytes) -> tuple[bytes, bytes | None]:
    """(identity public key, public context or None) of a node's enrollment reply."""
    data = bytes(data)
    if len(data) < KEY_BYTES:
        raise ProtocolError("a node sent a malformed ckks enrollment reply")
    return data[:KEY_BYTES], data[KEY_BYTES:] or None


def _u64(value: int) -> bytes:
    if not 0 <= value <= MAX_U64:
        raise ProtocolError(f"value {value} does not fit in 64 bits")
    return struct.pack(">Q", value)


def ciphertexts_digest(ciphertexts: tuple[bytes, ...]) -> bytes:
    """SHA-256 over the count and each length-prefixed ciphertext (an injective encoding)."""
    h = hashlib.sha256(CIPHERTEXTS_LABEL + P.u32(len(ciphertexts)))
    for data in ciphertexts:
        h.update(_u64(len(data)))
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
    digest: bytes,
) -> bytes:
    """The bytes a client signs for one encrypted chunk (protocols/ckks.md, "Signed uploads")."""
    raw_name = name.encode("utf-8")
    return b"".join(
        (
            CHUNK_LABEL,
            binding,
            P.u32(aggregation),
            P.u32(sender),
            P.u32(len(raw_name)),
            raw_name,
            _u64(length),
            _u64(offset),
            _u64(bound),
            _u64(base),
            P.u32(per_slot),
            digest,
        )
    )


def sign(signing_key: bytes, payload: bytes) -> bytes:
    return P.sign(P.Ed25519PrivateKey.from_private_bytes(signing_key), payload)


def verify(public: bytes, signature: bytes, payload: bytes) -> bool:
    return P.verify(public, signature, payload)
