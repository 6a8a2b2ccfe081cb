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

Structure: one frozen state type per round (`server_state.py`), pure transitions `begin` and
`step` over them (this module), and `CkksServer`, the shell that keeps the current state. The key
authority is a constructor dependency: an `AuthorityLink` to a separate authority, or None when
a roster client plays it (option "authority").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...errors import ProtocolError
from ..api import (
    AggregateResult,
    AggregationAborted,
    AggregationSpec,
    ChunkSpec,
    ClientId,
    ServerProtocol,
    SessionConfig,
    sum_dtype,
)
from ..messages import ABORT_AGGREGATION, Abort, abort_message
from ..packing import bits_for, unpack_uint
from . import context as he_ctx
from . import identity as ident
from .authority import AuthorityLink, chunk_request, statement_of, upload_payload
from .messages import DecryptReply, DecryptRequest, EncryptedChunk, EncryptRequest, Statement
from .packing import ciphertext_count, ciphertext_sizes
from .params import Packing
from .server_state import (
    Aborted,
    Collecting,
    Decrypting,
    Idle,
    ServerKeys,
    ServerState,
    load_keys,
)
from .settings import session_packing

Outgoing = dict[ClientId, Any]


# -- transitions ------------------------------------------------------------------------------


def begin(
    keys: ServerKeys, state: ServerState, spec: AggregationSpec
) -> tuple[Collecting, Outgoing]:
    """Start aggregation `spec` from `Idle`: the first chunk's requests to every live client."""
    if isinstance(state, Aborted):
        raise ProtocolError(f"the session was aborted ({state.reason})")
    if not isinstance(state, Idle):
        raise ProtocolError("an aggregation is already running")
    collecting = Collecting(
        alive=state.alive,
        spec=spec,
        packing=session_packing(keys.config, spec.bound),
        queue=tuple(range(len(spec.chunks))),
        pos=0,
        sums={},
        held={},
    )
    return collecting, input_requests(keys, collecting)


def step(
    keys: ServerKeys, state: ServerState, replies: dict[ClientId, Any]
) -> tuple[ServerState, Outgoing | AggregateResult]:
    """Consume the replies to the last messages; ProtocolError aborts the aggregation."""
    if isinstance(state, Collecting):
        return collect(keys, state, replies)
    if isinstance(state, Decrypting):
        return decrypted(keys, state, replies)
    raise ProtocolError("no aggregation is running")


def input_requests(keys: ServerKeys, state: Collecting) -> Outgoing:
    if state.pos >= len(state.queue) or not state.alive:
        return {}
    request = EncryptRequest(
        session_id=keys.config.session_id,
        aggregation=state.spec.index,
        bound=state.spec.bound,
        chunk=state.current,
        base=state.packing.base,
        per_slot=state.packing.per_slot,
    )
    return {client: request for client in sorted(state.alive)}


def collect(
    keys: ServerKeys, state: Collecting, replies: dict[ClientId, Any]
) -> tuple[ServerState, Outgoing | AggregateResult]:
    if state.pos < len(state.queue) and state.alive:
        state = take_chunk(keys, state, replies)
        if state.pos < len(state.queue) and state.alive:
            return state, input_requests(keys, state)
    if not state.alive:
        return finish(keys, state.spec, state.alive, {})
    chunks = state.spec.chunks
    stale = tuple(i for i, c in enumerate(chunks) if set(state.held[c.name]) != state.alive)
    if stale:
        names = {chunks[i].name for i in stale}  # free the stale sums before re-collecting them
        sums = {name: total for name, total in state.sums.items() if name not in names}
        state = dataclasses.replace(state, queue=stale, pos=0, sums=sums)
        return state, input_requests(keys, state)
    return start_decryption(keys, state)


def take_chunk(keys: ServerKeys, state: Collecting, replies: dict[ClientId, Any]) -> Collecting:
    """The state with the current chunk's uploads summed; the clients that sent none, or sent
    an `Abort` (a client that refused), dropped: the repair pass re-collects without them."""
    chunk = state.current
    total: list[Any] | None = None
    held: dict[ClientId, Statement] = {}
    uploads = screen(keys, state, replies)
    for client in sorted(uploads):
        upload = check_upload(keys, state, client, uploads[client], chunk)
        total = add(keys, state.packing, total, upload, chunk)
        held[client] = statement_of(upload)
    return dataclasses.replace(
        state,
        alive=state.alive & frozenset(uploads),
        sums={**state.sums, chunk.name: tuple(total or ())},
        held={**state.held, chunk.name: held},
        pos=state.pos + 1,
    )


def screen(
    keys: ServerKeys, state: Collecting, replies: dict[ClientId, Any]
) -> dict[ClientId, Any]:
    """The replies other than `Abort`s. An `Abort` from a live client, naming this session and
    aggregation, leaves that client out; any other is a malformed reply (ProtocolError)."""
    uploads = {}
    for client, reply in replies.items():
        if not isinstance(reply, Abort):
            uploads[client] = reply
        elif client not in state.alive or (reply.session_id, reply.aggregation) != (
            keys.config.session_id,
            state.spec.index,
        ):
            raise ProtocolError(f"client {client} sent an abort for another aggregation")
    return uploads


def add(
    keys: ServerKeys, packing: Packing, total: list[Any] | None, upload: EncryptedChunk,
    chunk: ChunkSpec,
) -> list[Any]:  # fmt: skip
    """`total` plus the upload's ciphertexts (parsed and checked against the public context)."""
    sizes = ciphertext_sizes(chunk.length, packing.per_slot, keys.he.slots)
    vectors = [
        he_ctx.load_ciphertext(keys.public, keys.he, data, size)
        for data, size in zip(upload.ciphertexts, sizes, strict=True)
    ]
    if total is None:
        return vectors
    return [he_ctx.add_into(acc, vec) for acc, vec in zip(total, vectors, strict=True)]


def check_upload(
    keys: ServerKeys, state: Collecting, client: ClientId, reply: Any, chunk: ChunkSpec
) -> EncryptedChunk:
    """The reply if it is a signed upload of `chunk` by `client`; else ProtocolError. (The key
    authority checks the signature again; the ciphertexts are parsed when added.)"""
    spec, packing = state.spec, state.packing
    if client not in state.alive:
        raise ProtocolError(f"reply from client {client}, which is not in this aggregation")
    if not isinstance(reply, EncryptedChunk):
        raise ProtocolError(f"client {client} sent {type(reply).__name__}, expected ciphertexts")
    if (
        reply.session_id != keys.config.session_id
        or reply.aggregation != spec.index
        or reply.sender != client
        or reply.chunk_name != chunk.name
    ):
        raise ProtocolError(f"client {client} sent ciphertexts for another chunk or session")
    needed = ciphertext_count(chunk.length, packing.per_slot, keys.he.slots)
    if len(reply.ciphertexts) != needed:
        raise ProtocolError(
            f"client {client} sent {len(reply.ciphertexts)} ciphertexts for chunk "
            f"{chunk.name!r}, expected {needed}"
        )
    payload = upload_payload(keys.binding, reply, chunk, spec.bound, packing.base, packing.per_slot)
    if not ident.verify(keys.identity_keys[client], reply.signature, payload):
        raise ProtocolError(f"client {client}'s upload of chunk {chunk.name!r} is not signed")
    return reply


# -- decryption by the key authority ----------------------------------------------------------


def check_cohort(keys: ServerKeys, alive: frozenset[ClientId]) -> None:
    """The server's own release guard (the key authority enforces the same minimum)."""
    minimum = keys.settings.min_contributors
    if len(alive) < minimum:
        raise ProtocolError(
            f"only {len(alive)} clients contributed; the key authority decrypts sums of at "
            f"least {minimum}"
        )


def decrypt_request(
    keys: ServerKeys, state: Collecting | Decrypting, chunk: ChunkSpec
) -> DecryptRequest:
    """The request for `chunk`: its sum and the contributors' statements."""
    held = state.held[chunk.name]
    return chunk_request(
        keys.config,
        state.spec.index,
        state.spec.bound,
        chunk,
        state.packing,
        tuple(he_ctx.serialize(v) for v in state.sums[chunk.name]),
        tuple(held[client] for client in sorted(state.alive)),
    )


def start_decryption(
    keys: ServerKeys, state: Collecting
) -> tuple[ServerState, Outgoing | AggregateResult]:
    check_cohort(keys, state.alive)
    spec = state.spec
    if not spec.chunks:
        return finish(keys, spec, state.alive, {})
    if isinstance(keys.decryptor, AuthorityLink):
        counts = {
            chunk.name: accept_counts(
                keys, state, chunk, keys.decryptor.request(decrypt_request(keys, state, chunk))
            )
            for chunk in spec.chunks
        }
        return finish(keys, spec, state.alive, counts)
    authority = keys.decryptor
    if authority not in state.alive:
        raise ProtocolError(
            f"the key authority (client {authority}) dropped out; the aggregate cannot be decrypted"
        )
    decrypting = Decrypting(
        alive=state.alive,
        spec=spec,
        packing=state.packing,
        authority=authority,
        pos=0,
        sums=state.sums,
        held=state.held,
        counts={},
    )
    return decrypting, {authority: decrypt_request(keys, decrypting, spec.chunks[0])}


def decrypted(
    keys: ServerKeys, state: Decrypting, replies: dict[ClientId, Any]
) -> tuple[ServerState, Outgoing | AggregateResult]:
    """The designated authority's counts for the current chunk; the next request or the end."""
    authority = state.authority
    if isinstance(replies.get(authority), Abort):
        raise ProtocolError(
            f"the key authority (client {authority}) refused to decrypt: {replies[authority].text}"
        )
    if set(replies) != {authority}:
        raise ProtocolError(
            f"the key authority (client {authority}) did not answer the decryption request"
        )
    chunk = state.spec.chunks[state.pos]
    counts = {**state.counts, chunk.name: accept_counts(keys, state, chunk, replies[authority])}
    if state.pos + 1 == len(state.spec.chunks):
        return finish(keys, state.spec, state.alive, counts)
    sums = {name: total for name, total in state.sums.items() if name != chunk.name}
    state = dataclasses.replace(state, pos=state.pos + 1, sums=sums, counts=counts)
    return state, {authority: decrypt_request(keys, state, state.spec.chunks[state.pos])}


def result_dtype(keys: ServerKeys, spec: AggregationSpec) -> np.dtype:
    return sum_dtype(spec.bound * len(keys.config.roster))


def accept_counts(
    keys: ServerKeys, state: Collecting | Decrypting, chunk: ChunkSpec, reply: Any
) -> np.ndarray:
    """The authority's counts for `chunk`, checked and narrowed to the result's dtype."""
    spec = state.spec
    if not isinstance(reply, DecryptReply) or (
        reply.session_id != keys.config.session_id
        or reply.aggregation != spec.index
        or reply.chunk_name != chunk.name
    ):
        raise ProtocolError(f"the key authority's reply for chunk {chunk.name!r} is wrong")
    max_sum = len(state.alive) * spec.bound
    counts = unpack_uint(reply.counts, bits_for(max_sum), chunk.length)
    if counts.size and int(counts.max()) > max_sum:
        raise ProtocolError(f"the key authority returned a count above {max_sum}")
    # Narrow at once: unpack_uint gives uint64, 8x the result's size for mask bits.
    return counts.astype(result_dtype(keys, spec))


def finish(
    keys: ServerKeys,
    spec: AggregationSpec,
    alive: frozenset[ClientId],
    counts: dict[str, np.ndarray],
) -> tuple[Idle, AggregateResult]:
    dtype = result_dtype(keys, spec)
    sums = {
        chunk.name: counts.get(chunk.name, np.zeros(chunk.length, dtype=dtype))
        for chunk in spec.chunks
    }
    contributors = tuple(sorted(alive))
    return Idle(alive), AggregateResult(spec=spec, sums=sums, contributors=contributors)


# -- the shell --------------------------------------------------------------------------------


class CkksServer(ServerProtocol):
    """Keeps the current state and advances it with `begin` / `step`.

    `authority`: the link to a separate key authority (option "authority" "separate"), or None
    when a roster client plays it; any other combination is refused."""

    def __init__(self, config: SessionConfig, authority: AuthorityLink | None = None) -> None:
        self.config = config
        self._keys = load_keys(config, authority)
        self._state: ServerState = Idle(frozenset(config.roster))

    @property
    def state(self) -> str:
        return self._state.NAME

    @property
    def public_context(self) -> object:
        """The only context the server holds (public: it cannot decrypt)."""
        return self._keys.public

    def begin(self, spec: AggregationSpec) -> Outgoing:
        self._state, outgoing = begin(self._keys, self._state, spec)
        return outgoing

    def handle(self, replies: dict[ClientId, Any]) -> Outgoing | AggregateResult:
        """The next messages or the result; `AggregationAborted` (with the `Abort` notice for
        every live client) when the aggregation cannot go on. A client's `Abort` reply drops
        that client only."""
        before = self._state
        try:
            self._state, outgoing = step(self._keys, before, replies)
        except ProtocolError as exc:
            self._state = Aborted(str(exc))
            raise aborted(self._keys.config, before, str(exc)) from exc
        return outgoing


def aborted(config: SessionConfig, state: ServerState, reason: str) -> AggregationAborted:
    """The error that aborts the aggregation of `state`, with a notice for each live client."""
    if isinstance(state, Aborted):
        return AggregationAborted(reason, {})
    index = state.spec.index if isinstance(state, (Collecting, Decrypting)) else -1
    notice = abort_message(config.session_id, index, ABORT_AGGREGATION, reason)
    return AggregationAborted(reason, {client: notice for client in sorted(state.alive)})
