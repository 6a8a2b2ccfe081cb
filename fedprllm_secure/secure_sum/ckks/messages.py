"""Wire messages of the `ckks` protocol (tags "ckks/..."). Ciphertexts are serialized TenSEAL bytes.

Round "encrypted-input": the server asks every live client for one chunk; each answers with the
chunk's ciphertexts (of its padded slots), its per-session pad public key and its Ed25519
signature over them (identity.chunk_payload). Round "decrypt": the server hands the key authority,
for one chunk, ONE summed ciphertext per part of the chunk and every contributor's signed
statement WITHOUT its ciphertexts (sender, pad public key, digest of the ciphertexts it signed,
signature); the authority answers with the rounded counts, bit-packed. The authority never
receives an individual client's ciphertext.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import ChunkSpec
from ..messages import message

INPUT_ROUND = "encrypted-input"
DECRYPT_ROUND = "decrypt"


@message("ckks/encrypt-request", INPUT_ROUND)
@dataclass(frozen=True)
class EncryptRequest:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec
    base: int  # the packing the client must use; it recomputes and checks both
    per_slot: int


@message("ckks/encrypted-chunk", INPUT_ROUND)
@dataclass(frozen=True)
class EncryptedChunk:
    session_id: bytes
    aggregation: int
    sender: int
    chunk_name: str
    ciphertexts: tuple[bytes, ...]
    pad_public: bytes  # the sender's per-session X25519 pad public key e_j^pub (32 bytes)
    signature: bytes  # by `sender`'s identity key over identity.chunk_payload(...)


@dataclass(frozen=True)
class Statement:
    """What a contributor signed for a chunk, without its ciphertexts: the signed payload holds
    only their digest, so the authority verifies the signature without ever seeing them."""

    sender: int
    pad_public: bytes
    digest: bytes  # identity.ciphertexts_digest of the upload's ciphertexts
    signature: bytes


@message("ckks/decrypt-request", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptRequest:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec
    base: int
    per_slot: int
    ciphertexts: tuple[bytes, ...]  # the server's sum over the listed contributors
    statements: tuple[Statement, ...]  # one per contributor, senders strictly increasing

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(statement.sender for statement in self.statements)


@message("ckks/decrypt-reply", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptReply:
    session_id: bytes
    aggregation: int
    chunk_name: str
    counts: bytes  # pack_uint(counts, bits_for(len(contributors) * bound))
