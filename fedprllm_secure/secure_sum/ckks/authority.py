"""The key authority (decryptor): the only holder of the secret key.

It is a different party from the aggregation server and must not collude with it (TenSEAL has no
threshold decryption, so this non-collusion is the trust assumption of the whole protocol). It
creates the context once per session, publishes only the public part, and answers one kind of
request: decrypt the sum of one chunk's signed uploads. It releases rounded, range-checked integer
counts, never raw decryptions (raw CKKS decryptions carry the encryption error, which leaks key
material).

It never decrypts a ciphertext the server made: the request carries every contributor's own
upload (ciphertexts + Ed25519 signature), and the authority sums them itself. Rules it enforces
on every request, in this order, before it allocates anything sized by the request or parses a
ciphertext (any violation raises ProtocolError and releases nothing; protocols/ckks.md, "Key
authority rules"):

1. the session matches, and the chunk NAME was never decrypted in this session, under any
   aggregation index (two sums over different sets would reveal a difference);
2. the uploads' senders are strictly increasing roster clients, at least `min_contributors` of
   them (default 3, the minimum cohort), the same set as every earlier chunk of this aggregation;
3. the packing is the one the parameters dictate, and every upload carries exactly the number of
   ciphertexts the chunk's length needs (counted without building anything of that length);
4. every upload names this session, aggregation, chunk and sender, and its signature verifies
   under the sender's published identity key over (config digest, aggregation, sender, chunk
   name, length, offset, bound, packing, SHA-256 of its ciphertexts);
5. the ciphertexts are well formed, fresh, of this context and of the right sizes; every
   decrypted slot of their sum is within the error bound of a valid sum of that many clients.
"""

from __future__ import annotations

import numpy as np

from ...errors import ProtocolError
from ..api import ChunkSpec, SessionConfig, config_digest
from ..messages import decode, encode
from ..packing import bits_for, pack_uint
from . import context as he_ctx
from . import identity as ident
from .messages import DecryptReply, DecryptRequest, EncryptedChunk
from .packing import ciphertext_count, ciphertext_sizes, from_ckks_values, unpack
from .params import Packing, he_params
from .settings import Settings, identity_keys, parse, session_packing


def upload_payload(
    binding: bytes, upload: EncryptedChunk, chunk: ChunkSpec, bound: int, base: int, per_slot: int
) -> bytes:
    """The bytes `upload.sender` signs for its upload of `chunk` (identity.chunk_payload)."""
    return ident.chunk_payload(
        binding,
        upload.aggregation,
        upload.sender,
        chunk.name,
        chunk.length,
        chunk.offset,
        bound,
        base,
        per_slot,
        ident.ciphertexts_digest(upload.ciphertexts),
    )


class KeyAuthority:
    """Holds the secret context of one session and decrypts sums of signed uploads only."""

    def __init__(self, config: SessionConfig, secret_context: bytes) -> None:
        self._config = config
        self._settings: Settings = parse(config)
        self._keys = identity_keys(config)
        self._binding = config_digest(config)
        self._he = he_params(self._settings.scheme)
        self._ctx = he_ctx.load_context(secret_context, private=True)
        self._decrypted: set[str] = set()  # chunk names released in this session
        self._contributors: dict[int, tuple[int, ...]] = {}

    def handle(self, request: object) -> DecryptReply:
        if not isinstance(request, DecryptRequest):
            raise ProtocolError(f"the key authority got {type(request).__name__}, not a request")
        packing = self._check(request)
        clients = len(request.uploads)
        max_sum = clients * request.bound
        raw = self._decrypt_sum(request, packing)
        packed = self._to_packed(raw, packing, request.bound, clients)
        counts = unpack(packed, packing.base, packing.per_slot, request.chunk.length, max_sum)
        # Commit only after success, so a refused request fixes nothing.
        self._decrypted.add(request.chunk.name)
        self._contributors[request.aggregation] = request.contributors
        return DecryptReply(
            session_id=request.session_id,
            aggregation=request.aggregation,
            chunk_name=request.chunk.name,
            counts=pack_uint(counts, bits_for(max_sum)),
        )

    def _check(self, request: DecryptRequest) -> Packing:
        config, settings = self._config, self._settings
        if request.session_id != config.session_id:
            raise ProtocolError("decryption request for another session")
        if request.chunk.name in self._decrypted:
            raise ProtocolError(
                f"chunk {request.chunk.name!r} was already decrypted in this session; a second "
                "sum could reveal the difference between contributor sets"
            )
        contributors = request.contributors
        if list(contributors) != sorted(set(contributors)) or not set(contributors) <= set(
            config.roster
        ):
            raise ProtocolError(
                "the uploads' senders are not distinct roster clients in increasing order"
            )
        if len(contributors) < settings.min_contributors:
            raise ProtocolError(
                f"refusing to decrypt a sum over {len(contributors)} clients "
                f"(the key authority's minimum is {settings.min_contributors})"
            )
        fixed = self._contributors.get(request.aggregation, contributors)
        if fixed != contributors:
            raise ProtocolError("chunks of one aggregation name different contributor sets")
        if request.bound < 1:
            raise ProtocolError("the bound must be at least 1")
        packing = session_packing(config, request.bound)
        if (request.base, request.per_slot) != (packing.base, packing.per_slot):
            raise ProtocolError("the request's packing differs from the session parameters")
        # Counted, not listed: a claimed length of 2^50 must not allocate anything.
        needed = ciphertext_count(request.chunk.length, packing.per_slot, self._he.slots)
        for upload in request.uploads:
            if len(upload.ciphertexts) != needed:
                raise ProtocolError(
                    f"chunk {request.chunk.name!r} needs {needed} ciphertexts per client, "
                    f"client {upload.sender} has {len(upload.ciphertexts)}"
                )
        for upload in request.uploads:
            self._check_signed(request, upload)
        return packing

    def _check_signed(self, request: DecryptRequest, upload: EncryptedChunk) -> None:
        if (
            upload.session_id != request.session_id
            or upload.aggregation != request.aggregation
            or upload.chunk_name != request.chunk.name
        ):
            raise ProtocolError(f"client {upload.sender}'s upload is for another chunk or session")
        payload = upload_payload(
            self._binding, upload, request.chunk, request.bound, request.base, request.per_slot
        )
        if not ident.verify(self._keys[upload.sender], upload.signature, payload):
            raise ProtocolError(
                f"client {upload.sender}'s signature does not cover these ciphertexts for chunk "
                f"{request.chunk.name!r}; refusing to decrypt"
            )

    def _decrypt_sum(self, request: DecryptRequest, packing: Packing) -> np.ndarray:
        """Decrypt the sum, recomputed here, of the (verified) uploads' ciphertexts."""
        sizes = ciphertext_sizes(request.chunk.length, packing.per_slot, self._he.slots)
        slots = []
        for i, size in enumerate(sizes):
            total = None
            for upload in request.uploads:
                vector = he_ctx.load_ciphertext(self._ctx, self._he, upload.ciphertexts[i], size)
                total = he_ctx.add_into(total, vector)
            slots.append(he_ctx.decrypt(self._ctx, self._he, total))
        return np.concatenate(slots) if slots else np.zeros(0)

    def _to_packed(self, raw: np.ndarray, packing: Packing, bound: int, clients: int) -> np.ndarray:
        if packing.centered:
            return from_ckks_values(raw, packing, bound, clients)
        return raw.astype(np.uint64)  # BFV: exact residues; `unpack` range-checks them


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
    uploads: tuple[EncryptedChunk, ...],
) -> DecryptRequest:
    """The request the server sends for one chunk: the contributors' signed uploads."""
    return DecryptRequest(
        session_id=config.session_id,
        aggregation=aggregation,
        bound=bound,
        chunk=chunk,
        base=packing.base,
        per_slot=packing.per_slot,
        uploads=tuple(sorted(uploads, key=lambda upload: upload.sender)),
    )
