"""The key authority (decryptor): the only holder of the secret key.

It is a different party from the aggregation server and must not collude with it (TenSEAL has no
threshold decryption, so this non-collusion is the trust assumption of the whole protocol). It
creates the context once per session, publishes only the public part, and answers one kind of
request: decrypt the aggregate of one chunk. It releases rounded, range-checked integer counts,
never raw decryptions (raw CKKS decryptions carry the encryption error, which leaks key material).

Rules it enforces on every request (any violation raises ProtocolError and releases nothing):
the session matches; the contributor list is a sorted subset of the roster with at least
`min_contributors` members; within one aggregation every chunk names the same contributors; each
(aggregation, chunk) is decrypted at most once (so two sums over different sets are never both
released); the packing is the one the parameters dictate; the ciphertexts are well formed, of this
context, of the right number and sizes; every decrypted slot is within the error bound of a valid
sum of that many clients.
"""

from __future__ import annotations

import numpy as np

from ...errors import ProtocolError
from ..api import ChunkSpec, SessionConfig
from ..messages import decode, encode
from ..packing import bits_for, pack_uint
from . import context as he_ctx
from .messages import DecryptReply, DecryptRequest
from .packing import ciphertext_sizes, from_ckks_values, unpack
from .params import Packing, he_params
from .settings import Settings, parse, session_packing


class KeyAuthority:
    """Holds the secret context of one session and decrypts final aggregates only."""

    def __init__(self, config: SessionConfig, secret_context: bytes) -> None:
        self._config = config
        self._settings: Settings = parse(config)
        self._he = he_params(self._settings.scheme)
        self._ctx = he_ctx.load_context(secret_context, private=True)
        self._decrypted: set[tuple[int, str]] = set()
        self._contributors: dict[int, tuple[int, ...]] = {}

    def handle(self, request: object) -> DecryptReply:
        if not isinstance(request, DecryptRequest):
            raise ProtocolError(f"the key authority got {type(request).__name__}, not a request")
        packing = self._check(request)
        clients = len(request.contributors)
        max_sum = clients * request.bound
        sizes = ciphertext_sizes(request.chunk.length, packing.per_slot, self._he.slots)
        slots = [
            self._decrypt_one(data, size)
            for data, size in zip(request.ciphertexts, sizes, strict=True)
        ]
        raw = np.concatenate(slots) if slots else np.zeros(0)
        packed = self._to_packed(raw, packing, request.bound, clients)
        counts = unpack(packed, packing.base, packing.per_slot, request.chunk.length, max_sum)
        # Commit only after success, so a refused request fixes nothing.
        self._decrypted.add((request.aggregation, request.chunk.name))
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
        if (request.aggregation, request.chunk.name) in self._decrypted:
            raise ProtocolError(
                f"chunk {request.chunk.name!r} of aggregation {request.aggregation} was already "
                "decrypted; a second sum could reveal the difference between contributor sets"
            )
        contributors = request.contributors
        if list(contributors) != sorted(set(contributors)) or not set(contributors) <= set(
            config.roster
        ):
            raise ProtocolError("the contributor list is not a sorted subset of the roster")
        if len(contributors) < settings.min_contributors:
            raise ProtocolError(
                f"refusing to decrypt a sum over {len(contributors)} clients "
                f"(minimum {settings.min_contributors})"
            )
        fixed = self._contributors.get(request.aggregation, contributors)
        if fixed != contributors:
            raise ProtocolError("chunks of one aggregation name different contributor sets")
        if request.bound < 1:
            raise ProtocolError("the bound must be at least 1")
        packing = session_packing(config, request.bound)
        if (request.base, request.per_slot) != (packing.base, packing.per_slot):
            raise ProtocolError("the request's packing differs from the session parameters")
        sizes = ciphertext_sizes(request.chunk.length, packing.per_slot, self._he.slots)
        if len(request.ciphertexts) != len(sizes):
            raise ProtocolError(
                f"chunk {request.chunk.name!r} needs {len(sizes)} ciphertexts, "
                f"got {len(request.ciphertexts)}"
            )
        return packing

    def _decrypt_one(self, data: bytes, size: int) -> np.ndarray:
        vector = he_ctx.load_ciphertext(self._ctx, self._he, data, size)
        return he_ctx.decrypt(self._ctx, self._he, vector)

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
    contributors: tuple[int, ...],
    ciphertexts: tuple[bytes, ...],
) -> DecryptRequest:
    """The request the server sends for one chunk's aggregate."""
    return DecryptRequest(
        session_id=config.session_id,
        aggregation=aggregation,
        bound=bound,
        chunk=chunk,
        base=packing.base,
        per_slot=packing.per_slot,
        contributors=contributors,
        ciphertexts=ciphertexts,
    )
