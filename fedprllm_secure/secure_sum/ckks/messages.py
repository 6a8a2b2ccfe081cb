"""Wire messages of the `ckks` protocol (tags "ckks/..."). Ciphertexts are serialized TenSEAL bytes.

Round "encrypted-input": the server asks every live client for one chunk; each answers with the
chunk's ciphertexts. Round "decrypt": the server hands the key authority one chunk's aggregate
ciphertexts and the contributor list; the authority answers with the rounded counts, bit-packed.
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


@message("ckks/decrypt-request", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptRequest:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec
    base: int
    per_slot: int
    contributors: tuple[int, ...]  # sorted; the aggregate must be the sum of exactly these
    ciphertexts: tuple[bytes, ...]


@message("ckks/decrypt-reply", DECRYPT_ROUND)
@dataclass(frozen=True)
class DecryptReply:
    session_id: bytes
    aggregation: int
    chunk_name: str
    counts: bytes  # pack_uint(counts, bits_for(len(contributors) * bound))
