"""Wire messages of the `ckks` protocol (tags "ckks/..."). Ciphertexts are serialized TenSEAL bytes.

Round "encrypted-input": the server asks every live client for one chunk; each answers with the
chunk's ciphertexts and its Ed25519 signature over them (identity.chunk_payload). Round "decrypt":
the server hands the key authority, for one chunk, the signed uploads of every contributor (not
an aggregate: the authority verifies each signature and sums them itself); the authority answers
with the rounded counts, bit-packed.
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
    signature: bytes  # by `sender`'s identity key over identity.chunk_payload(...)


@message("ckks/decrypt-request", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptRequest:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec
    base: int
    per_slot: int
    uploads: tuple[EncryptedChunk, ...]  # one per contributor, senders strictly increasing

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(upload.sender for upload in self.uploads)


@message("ckks/decrypt-reply", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptReply:
    session_id: bytes
    aggregation: int
    chunk_name: str
    counts: bytes  # pack_uint(counts, bits_for(len(contributors) * bound))
