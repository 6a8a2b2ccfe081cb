"""The key authority (decryptor): the only holder of the secret key and of the pad key.

It is a different party from the aggregation server and must not collude with it (TenSEAL has no
threshold decryption). It creates the context and an X25519 pad key once per session, publishes
only the public parts, and answers one kind of request: decrypt the server's sum of one chunk.
It never receives an individual client's ciphertext: the request carries ONE summed ciphertext
per part of the chunk and, for every listed contributor, its signed statement without its
ciphertexts (sender, pad public key e_j^pub, digest of the ciphertexts, Ed25519 signature).
Every client's slots carry a one-time pad derived from X25519(e_j, authority key) (pads.py); the
authority removes the listed contributors' pads from the decrypted sum, and any slot where an
honest client's pad does not cancel exactly is uniform and fails the range check with high
probability; nothing is released unless every slot passes. It releases rounded, range-checked
integer counts, never raw decryptions. Rules, in this order (protocols/ckks.md, "Key authority
rules"); any violation raises ProtocolError and releases nothing:

1. the session matches, and the chunk NAME was never requested before in this session, under any
   aggregation index; from here on the request USES the name, whether it succeeds or not (a
   cheating server gets one try per chunk);
2. the statements' senders are strictly increasing roster clients, at least `min_contributors` of
   them (default 3), the same set as every earlier released chunk of this aggregation;
3. the packing is the one the parameters dictate, and the sum holds exactly the number of
   ciphertexts the chunk's length needs (counted without building anything of that length);
4. every statement's signature verifies under the sender's published identity key over (config
   digest, aggregation, sender, chunk name, length, offset, bound, packing, e_j^pub, digest);
5. the summed ciphertexts are well formed, of this context and of the right sizes; after
   decryption and removal of the listed pads, every slot is a valid packed sum of that many
   clients (CKKS: near an integer; digits <= listed * bound; zero padding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import ProtocolError
from ..api import ChunkSpec, SessionConfig, config_digest, state_type
from ..messages import decode, encode
from ..packing import bits_for, pack_uint
from . import context as he_ctx
from . import identity as ident
from .messages import DecryptReply, DecryptRequest, EncryptedChunk, Statement
from .packing import ciphertext_count, ciphertext_sizes, slot_count, sum_residues, unpack
from .pads import authority_pad_key, chunk_pads, pad_context, sub_mod
from .params import HEParams, Packing, he_params
from .settings import Settings, authority_pad_public, identity_keys, parse, session_packing


def statement_payload(
    binding: bytes,
    aggregation: int,
    statement: Statement,
    chunk: ChunkSpec,
    bound: int,
    base: int,
    per_slot: int,
) -> bytes:
    """The bytes `statement.sender` signed for its upload of `chunk` (identity.chunk_payload)."""
    return ident.chunk_payload(
        binding,
        aggregation,
        statement.sender,
        chunk.name,
        chunk.length,
        chunk.offset,
        bound,
        base,
        per_slot,
        statement.pad_public,
        statement.digest,
    )


def statement_of(upload: EncryptedChunk) -> Statement:
    """An upload's signed statement, without its ciphertexts (only their digest)."""
    return Statement(
        sender=upload.sender,
        pad_public=upload.pad_public,
        digest=ident.ciphertexts_digest(upload.ciphertexts),
        signature=upload.signature,
    )


def upload_payload(
    binding: bytes, upload: EncryptedChunk, chunk: ChunkSpec, bound: int, base: int, per_slot: int
) -> bytes:
    """The bytes `upload.sender` signs for its upload of `chunk` (identity.chunk_payload)."""
    return statement_payload(
        binding, upload.aggregation, statement_of(upload), chunk, bound, base, per_slot
    )


@state_type("ckks/authority-record")
@dataclass(frozen=True)
class AuthorityRecord:
    """What the key authority has done in this session; a designated client saves it with its
    state. `used`: every chunk name it was asked to decrypt (a failed attempt included: one try
    per chunk). `contributors`: per aggregation index, the contributor set its first released
    chunk fixed. Transitions return a new record; none is ever changed in place."""

    used: frozenset[str] = frozenset()
    contributors: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.used, frozenset) or not all(isinstance(n, str) for n in self.used):
            raise ProtocolError("the key authority's record of used chunk names is malformed")
        if not isinstance(self.contributors, Mapping) or not all(
            isinstance(index, int) and isinstance(clients, tuple)
            for index, clients in self.contributors.items()
        ):
            raise ProtocolError("the key authority's record of contributor sets is malformed")

    def using(self, name: str) -> AuthorityRecord:
        return dataclasses.replace(self, used=self.used | {name})

    def released(
        self, name: str, aggregation: int, contributors: tuple[int, ...]
    ) -> AuthorityRecord:
        return AuthorityRecord(
            self.used | {name}, {**self.contributors, aggregation: tuple(contributors)}
        )


@dataclass(frozen=True)
class Refusal:
    """A decryption request the key authority refused: nothing is released."""

    reason: str


@dataclass(frozen=True, repr=False)
class AuthorityKeys:
    """What the key authority holds for one session and never changes: the agreed config, the
    roster's identity keys, the secret context and its X25519 pad key."""

    config: SessionConfig
    settings: Settings
    identity_keys: Mapping[int, bytes]
    binding: bytes
    he: HEParams
    context: Any  # the secret TenSEAL context
    pad_key: bytes

    @classmethod
    def load(cls, config: SessionConfig, secret_context: bytes, pad_key: bytes) -> AuthorityKeys:
        """The keys of `config`'s authority; ProtocolError if the pad key is not the published
        one or the context holds no secret key."""
        settings = parse(config)
        if len(pad_key) != 32 or ident.pad_public(pad_key) != authority_pad_public(config):
            raise ProtocolError("the key authority's pad key does not match the published one")
        return cls(
            config=config,
            settings=settings,
            identity_keys=identity_keys(config),
            binding=config_digest(config),
            he=he_params(settings.scheme),
            context=he_ctx.load_context(secret_context, private=True),
            pad_key=bytes(pad_key),
        )

    def __repr__(self) -> str:  # never print key material
        return "AuthorityKeys(<secret>)"


def decrypt(
    keys: AuthorityKeys, record: AuthorityRecord, request: object
) -> tuple[AuthorityRecord, DecryptReply | Refusal]:
    """The authority's one transition: (its new record, the counts or a refusal).

    A request that passes the freshness check uses up its chunk name in the returned record
    whatever happens next (one try per chunk)."""
    if not isinstance(request, DecryptRequest):
        return record, Refusal(f"the key authority got {type(request).__name__}, not a request")
    try:
        _check_fresh(keys, record, request)
    except ProtocolError as exc:
        return record, Refusal(str(exc))
    # From here the chunk name is used up, whatever happens: one try per chunk.
    record = record.using(request.chunk.name)
    try:
        reply = _release(keys, record, request)
    except ProtocolError as exc:
        return record, Refusal(str(exc))
    return record.released(request.chunk.name, request.aggregation, request.contributors), reply


def _release(keys: AuthorityKeys, record: AuthorityRecord, request: DecryptRequest) -> DecryptReply:
    packing = _check(keys, record, request)
    clients = len(request.statements)
    max_sum = clients * request.bound
    raw = _decrypt_sum(keys, request, packing)
    residues = sum_residues(raw, packing, clients)
    packed = sub_mod(residues, _pads(keys, request, packing), packing.pad_modulus)
    counts = unpack(packed, packing.base, packing.per_slot, request.chunk.length, max_sum)
    return DecryptReply(
        session_id=request.session_id,
        aggregation=request.aggregation,
        chunk_name=request.chunk.name,
        counts=pack_uint(counts, bits_for(max_sum)),
    )


def _check_fresh(keys: AuthorityKeys, record: AuthorityRecord, request: DecryptRequest) -> None:
    if request.session_id != keys.config.session_id:
        raise ProtocolError("decryption request for another session")
    if request.chunk.name in record.used:
        raise ProtocolError(
            f"chunk {request.chunk.name!r} was already decrypted (or tried) in this session; "
            "a second sum could reveal the difference between contributor sets"
        )


def _check(keys: AuthorityKeys, record: AuthorityRecord, request: DecryptRequest) -> Packing:
    config, settings = keys.config, keys.settings
    contributors = request.contributors
    if list(contributors) != sorted(set(contributors)) or not set(contributors) <= set(
        config.roster
    ):
        raise ProtocolError(
            "the statements' senders are not distinct roster clients in increasing order"
        )
    if len(contributors) < settings.min_contributors:
        raise ProtocolError(
            f"refusing to decrypt a sum over {len(contributors)} clients "
            f"(the key authority's minimum is {settings.min_contributors})"
        )
    fixed = record.contributors.get(request.aggregation, contributors)
    if fixed != contributors:
        raise ProtocolError("chunks of one aggregation name different contributor sets")
    if request.bound < 1:
        raise ProtocolError("the bound must be at least 1")
    packing = session_packing(config, request.bound)
    if (request.base, request.per_slot) != (packing.base, packing.per_slot):
        raise ProtocolError("the request's packing differs from the session parameters")
    # Counted, not listed: a claimed length of 2^50 must not allocate anything.
    needed = ciphertext_count(request.chunk.length, packing.per_slot, keys.he.slots)
    if len(request.ciphertexts) != needed:
        raise ProtocolError(
            f"chunk {request.chunk.name!r} needs {needed} summed ciphertexts, the request "
            f"has {len(request.ciphertexts)}"
        )
    for statement in request.statements:
        _check_signed(keys, request, statement)
    return packing


def _check_signed(keys: AuthorityKeys, request: DecryptRequest, statement: Statement) -> None:
    payload = statement_payload(
        keys.binding,
        request.aggregation,
        statement,
        request.chunk,
        request.bound,
        request.base,
        request.per_slot,
    )
    if not ident.verify(keys.identity_keys[statement.sender], statement.signature, payload):
        raise ProtocolError(
            f"client {statement.sender}'s signature does not cover this statement for chunk "
            f"{request.chunk.name!r}; refusing to decrypt"
        )


def _pads(keys: AuthorityKeys, request: DecryptRequest, packing: Packing) -> np.ndarray:
    """The sum mod M of the listed contributors' pads for this chunk."""
    slots = slot_count(request.chunk.length, packing.per_slot)
    total = np.zeros(slots, dtype=np.uint64)
    modulus = np.uint64(packing.pad_modulus)
    chunk = request.chunk
    context = pad_context(
        request.aggregation, chunk.name, chunk.length, chunk.offset, request.bound,
        request.base, request.per_slot,
    )  # fmt: skip
    for statement in request.statements:
        key = authority_pad_key(keys.pad_key, statement.pad_public, keys.binding, statement.sender)
        total = (total + chunk_pads(key, context, slots, packing.pad_modulus)) % modulus
    return total


def _decrypt_sum(keys: AuthorityKeys, request: DecryptRequest, packing: Packing) -> np.ndarray:
    """Decrypt the server's summed ciphertexts (sizes checked first)."""
    sizes = ciphertext_sizes(request.chunk.length, packing.per_slot, keys.he.slots)
    slots = []
    for data, size in zip(request.ciphertexts, sizes, strict=True):
        vector = he_ctx.load_ciphertext(keys.context, keys.he, data, size)
        slots.append(he_ctx.decrypt(keys.context, keys.he, vector))
    return np.concatenate(slots) if slots else np.zeros(0)


class KeyAuthority:
    """The key authority of one session: its keys and its record, advanced by `decrypt`.

    `handle` answers one request or raises ProtocolError (nothing released); `record` is what a
    designated client saves and hands back to the constructor on restore."""

    def __init__(
        self,
        config: SessionConfig,
        secret_context: bytes,
        pad_key: bytes,
        record: AuthorityRecord | None = None,
    ) -> None:
        self.__keys = AuthorityKeys.load(config, secret_context, pad_key)
        self.__record = record if record is not None else AuthorityRecord()

    def __repr__(self) -> str:  # never print key material
        return "KeyAuthority(<secret>)"

    @property
    def record(self) -> AuthorityRecord:
        return self.__record

    def handle(self, request: object) -> DecryptReply:
        self.__record, outcome = decrypt(self.__keys, self.__record, request)
        if isinstance(outcome, Refusal):
            raise ProtocolError(outcome.reason)
        return outcome


class AuthorityLink:
    """The server's channel to a *separate* key authority.

    In a deployment this is a network connection to another organisation. In process it carries
    only encoded messages (through the same codec as the bus) and exposes no way to reach the
    authority's state: the server code holds this object, never the `KeyAuthority`. Bytes in each
    direction are counted for reports.
    """

    def __init__(self, authority: KeyAuthority) -> None:
        self.__authority = authority  # name-mangled: the server has no business reading it
        self.bytes_to_authority = 0
        self.bytes_from_authority = 0

    def request(self, request: DecryptRequest) -> DecryptReply:
        wire = encode(request)
        self.bytes_to_authority += len(wire)
        reply = encode(self.__authority.handle(decode(wire, DecryptRequest)))
        self.bytes_from_authority += len(reply)
        result: DecryptReply = decode(reply, DecryptReply)
        return result

    def __repr__(self) -> str:  # keep the authority out of logs and config dumps
        return "AuthorityLink(<separate key authority>)"


def chunk_request(
    config: SessionConfig,
    aggregation: int,
    bound: int,
    chunk: ChunkSpec,
    packing: Packing,
    ciphertexts: tuple[bytes, ...],
    statements: tuple[Statement, ...],
) -> DecryptRequest:
    """The request the server sends for one chunk: its sum and the contributors' statements."""
    return DecryptRequest(
        session_id=config.session_id,
        aggregation=aggregation,
        bound=bound,
        chunk=chunk,
        base=packing.base,
        per_slot=packing.per_slot,
        ciphertexts=tuple(ciphertexts),
        statements=tuple(sorted(statements, key=lambda statement: statement.sender)),
    )
