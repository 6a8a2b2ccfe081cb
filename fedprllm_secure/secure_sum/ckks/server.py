"""The aggregation server: it checks the clients' signed uploads, adds them into one running sum
per chunk, and has the key authority decrypt each sum.

It holds the public context alone (checked: `is_private()` is False), so it cannot decrypt any
ciphertext. For each chunk it sends the authority ONE summed ciphertext per part plus each
contributor's signed statement without its ciphertexts (sender, pad public key, digest of the
ciphertexts, signature): the authority never sees an individual client's ciphertext, and removes
the listed contributors' one-time pads from the sum (protocols/ckks.md, "One-time pads").

Dropouts, without O(model x clients) memory: the server keeps one running ciphertext sum per chunk
and, beside it, the statements of the clients whose ciphertexts it holds. Dropouts are permanent,
so the live set only shrinks. After a pass over the chunks, every chunk whose set differs from the
final live set (it still includes a client that dropped later) is requested again from the
survivors (a repair: a client re-encrypts the same input under the same pad, in the same
aggregation only); passes repeat until all sets agree. Memory is one aggregate ciphertext per chunk
(about 8 bytes x d at the default parameters), independent of the number of clients.

Nothing is decrypted before the contributor set is final: the authority decrypts each chunk name
once per session (a failed attempt included), so a sum over a set that is not final would waste
the chunk.
"""

from __future__ import annotations

import numpy as np

from ...errors import ProtocolError
from ..api import (
    AggregateResult,
    AggregationSpec,
    ChunkSpec,
    ClientId,
    ServerProtocol,
    SessionConfig,
    config_digest,
    sum_dtype,
)
from ..packing import bits_for, unpack_uint
from . import context as he_ctx
from . import identity as ident
from .authority import AuthorityLink, chunk_request, statement_of, upload_payload
from .messages import DecryptReply, EncryptedChunk, EncryptRequest, Statement
from .packing import ciphertext_count, ciphertext_sizes
from .params import Packing, he_params
from .settings import AUTHORITY_LINK, identity_keys, parse, public_context_bytes, session_packing

Outgoing = dict[ClientId, object]


class CkksServer(ServerProtocol):
    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._settings = parse(config)
        self._he = he_params(self._settings.scheme)
        self._ctx = he_ctx.load_context(public_context_bytes(config), private=False)
        self._keys = identity_keys(config)
        self._binding = config_digest(config)
        self._link: AuthorityLink | None = None
        if self._settings.authority is None:
            link = config.options.get(AUTHORITY_LINK)
            if not isinstance(link, AuthorityLink):
                raise ProtocolError("a separate key authority was configured but none is linked")
            self._link = link
        self._state = "idle"
        self._alive: set[ClientId] = set(config.roster)
        self._spec: AggregationSpec | None = None
        self._packing: Packing | None = None
        self._sums: dict[str, list[object]] = {}  # chunk name -> running sum (one per part)
        self._held: dict[str, dict[ClientId, Statement]] = {}  # chunk name -> clients in the sum
        self._queue: list[int] = []
        self._pos = 0
        self._counts: dict[str, np.ndarray] = {}

    @property
    def state(self) -> str:
        return self._state

    @property
    def public_context(self) -> object:
        """The only context the server holds (public: it cannot decrypt)."""
        return self._ctx

    def begin(self, spec: AggregationSpec) -> Outgoing:
        if self._state in ("collecting", "decrypting"):
            raise ProtocolError("an aggregation is already running")
        self._spec = spec
        self._packing = session_packing(self.config, spec.bound)
        self._sums, self._held, self._counts = {}, {}, {}
        self._queue, self._pos = list(range(len(spec.chunks))), 0
        self._state = "collecting"
        return self._input_requests()

    def handle(self, replies: dict[ClientId, object]) -> Outgoing | AggregateResult:
        try:
            if self._state == "collecting":
                return self._collect(replies)
            if self._state == "decrypting":
                return self._decrypted(replies)
            raise ProtocolError("no aggregation is running")
        except ProtocolError:
            self._state = "aborted"
            self._sums, self._held = {}, {}
            raise

    # -- collection ------------------------------------------------------------------------

    def _current(self) -> ChunkSpec:
        assert self._spec is not None
        return self._spec.chunks[self._queue[self._pos]]

    def _input_requests(self) -> Outgoing:
        assert self._spec is not None and self._packing is not None
        if self._pos >= len(self._queue) or not self._alive:
            return {}
        request = EncryptRequest(
            session_id=self.config.session_id,
            aggregation=self._spec.index,
            bound=self._spec.bound,
            chunk=self._current(),
            base=self._packing.base,
            per_slot=self._packing.per_slot,
        )
        return {client: request for client in sorted(self._alive)}

    def _collect(self, replies: dict[ClientId, object]) -> Outgoing | AggregateResult:
        assert self._spec is not None
        if self._pos < len(self._queue) and self._alive:
            chunk = self._current()
            total: list[object] | None = None
            held: dict[ClientId, Statement] = {}
            for client in sorted(replies):
                upload = self._check_upload(client, replies[client], chunk)
                total = self._add(total, upload, chunk)
                held[client] = statement_of(upload)
            self._alive &= set(replies)
            self._sums[chunk.name] = total or []
            self._held[chunk.name] = held
            self._pos += 1
            if self._pos < len(self._queue) and self._alive:
                return self._input_requests()
        if not self._alive:
            return self._finish(())
        stale = [
            i for i, c in enumerate(self._spec.chunks) if set(self._held[c.name]) != self._alive
        ]
        if stale:
            for i in stale:  # free the stale sums before collecting their replacements
                self._sums.pop(self._spec.chunks[i].name, None)
            self._queue, self._pos = stale, 0
            return self._input_requests()
        return self._start_decryption()

    def _add(
        self, total: list[object] | None, upload: EncryptedChunk, chunk: ChunkSpec
    ) -> list[object]:
        assert self._packing is not None
        sizes = ciphertext_sizes(chunk.length, self._packing.per_slot, self._he.slots)
        vectors = [
            he_ctx.load_ciphertext(self._ctx, self._he, data, size)
            for data, size in zip(upload.ciphertexts, sizes, strict=True)
        ]
        if total is None:
            return vectors
        return [he_ctx.add_into(acc, vec) for acc, vec in zip(total, vectors, strict=True)]

    def _check_upload(self, client: ClientId, reply: object, chunk: ChunkSpec) -> EncryptedChunk:
        """The reply if it is a signed upload of `chunk` by `client`; else abort. (The key
        authority checks the signature again; the ciphertexts are parsed when added.)"""
        assert self._spec is not None and self._packing is not None
        if client not in self._alive:
            raise ProtocolError(f"reply from client {client}, which is not in this aggregation")
        if not isinstance(reply, EncryptedChunk):
            raise ProtocolError(
                f"client {client} sent {type(reply).__name__}, expected ciphertexts"
            )
        if (
            reply.session_id != self.config.session_id
            or reply.aggregation != self._spec.index
            or reply.sender != client
            or reply.chunk_name != chunk.name
        ):
            raise ProtocolError(f"client {client} sent ciphertexts for another chunk or session")
        needed = ciphertext_count(chunk.length, self._packing.per_slot, self._he.slots)
        if len(reply.ciphertexts) != needed:
            raise ProtocolError(
                f"client {client} sent {len(reply.ciphertexts)} ciphertexts for chunk "
                f"{chunk.name!r}, expected {needed}"
            )
        payload = upload_payload(
            self._binding,
            reply,
            chunk,
            self._spec.bound,
            self._packing.base,
            self._packing.per_slot,
        )
        if not ident.verify(self._keys[client], reply.signature, payload):
            raise ProtocolError(f"client {client}'s upload of chunk {chunk.name!r} is not signed")
        return reply

    # -- decryption by the key authority ----------------------------------------------------

    def _contributors(self) -> tuple[ClientId, ...]:
        return tuple(sorted(self._alive))

    def _decrypt_request(self, chunk: ChunkSpec) -> object:
        assert self._spec is not None and self._packing is not None
        held = self._held[chunk.name]
        ciphertexts = tuple(he_ctx.serialize(v) for v in self._sums.pop(chunk.name))
        return chunk_request(
            self.config,
            self._spec.index,
            self._spec.bound,
            chunk,
            self._packing,
            ciphertexts,
            tuple(held[client] for client in self._contributors()),
        )

    def _check_cohort(self) -> None:
        """The server's own release guard (the key authority enforces the same minimum)."""
        if len(self._alive) < self._settings.min_contributors:
            raise ProtocolError(
                f"only {len(self._alive)} clients contributed; the key authority decrypts sums "
                f"of at least {self._settings.min_contributors}"
            )

    def _start_decryption(self) -> Outgoing | AggregateResult:
        assert self._spec is not None
        self._check_cohort()
        if not self._spec.chunks:
            return self._finish(self._contributors())
        if self._link is not None:
            for chunk in self._spec.chunks:
                self._accept_counts(chunk, self._link.request(self._decrypt_request(chunk)))  # type: ignore[arg-type]
            return self._finish(self._contributors())
        authority = self._settings.authority
        if authority not in self._alive:
            raise ProtocolError(
                f"the key authority (client {authority}) dropped out; the aggregate cannot be "
                "decrypted"
            )
        self._state, self._pos = "decrypting", 0
        return self._next_decrypt_request()

    def _next_decrypt_request(self) -> Outgoing:
        assert self._spec is not None and self._settings.authority is not None
        return {self._settings.authority: self._decrypt_request(self._spec.chunks[self._pos])}

    def _decrypted(self, replies: dict[ClientId, object]) -> Outgoing | AggregateResult:
        assert self._spec is not None
        authority = self._settings.authority
        if authority not in replies or set(replies) != {authority}:
            raise ProtocolError(
                f"the key authority (client {authority}) did not answer the decryption request"
            )
        self._accept_counts(self._spec.chunks[self._pos], replies[authority])
        self._pos += 1
        if self._pos < len(self._spec.chunks):
            return self._next_decrypt_request()
        return self._finish(self._contributors())

    def _accept_counts(self, chunk: ChunkSpec, reply: object) -> None:
        assert self._spec is not None
        if not isinstance(reply, DecryptReply) or (
            reply.session_id != self.config.session_id
            or reply.aggregation != self._spec.index
            or reply.chunk_name != chunk.name
        ):
            raise ProtocolError(f"the key authority's reply for chunk {chunk.name!r} is wrong")
        max_sum = len(self._alive) * self._spec.bound
        counts = unpack_uint(reply.counts, bits_for(max_sum), chunk.length)
        if counts.size and int(counts.max()) > max_sum:
            raise ProtocolError(f"the key authority returned a count above {max_sum}")
        # Narrow at once: unpack_uint gives uint64, 8x the result's size for mask bits.
        self._counts[chunk.name] = counts.astype(self._dtype())

    def _dtype(self) -> np.dtype:
        assert self._spec is not None
        return sum_dtype(self._spec.bound * len(self.config.roster))

    def _finish(self, contributors: tuple[ClientId, ...]) -> AggregateResult:
        assert self._spec is not None
        spec = self._spec
        dtype = self._dtype()
        sums = {
            chunk.name: self._counts.get(chunk.name, np.zeros(chunk.length, dtype=dtype))
            for chunk in spec.chunks
        }
        self._sums, self._held, self._counts = {}, {}, {}
        self._state = "idle"
        return AggregateResult(spec=spec, sums=sums, contributors=contributors)
