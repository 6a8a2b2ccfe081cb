"""The rounds of the `additive` server: screened replies of one round -> (next state, outcome).

Each raises ProtocolError to abort the aggregation (`server_steps` turns it into an outcome).
Normative: protocols/additive.md section 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ProtocolError
from ..api import AggregateResult, AggregationSpec, SessionConfig, sum_dtype
from ..packing import unpack_uint
from . import primitives as P
from .layout import WordLayout
from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    MaskedInputRequest,
    Sealed,
    ShareKeys,
    ShareKeysRequest,
    SignedMaskKey,
    SignedView,
    UnmaskRequest,
    UnmaskShares,
)
from .params import Params
from .server_states import (
    Advertising,
    Checking,
    Collected,
    Completed,
    Finished,
    FirstChunk,
    Roster,
    Send,
    SharingKeys,
    Summing,
    Unmasking,
)
from .shamir import combine
from .transcript import (
    add_masks,
    advertise_payload,
    mask_key_payload,
    survivors_payload,
    view_payload,
)


@dataclass(frozen=True)
class ServerContext:
    """What the server is given for the whole session."""

    config: SessionConfig
    params: Params
    binding: bytes  # the config digest every signature and derivation binds

    @property
    def session_id(self) -> bytes:
        return self.config.session_id


def need(ctx: ServerContext, count: int, what: str, whole_list: bool = True) -> None:
    """Abort early when the aggregation can no longer produce a list clients accept
    (`whole_list`: the count is of a survivor list or its signers, not of share holders)."""
    p = ctx.params
    if count < p.threshold:
        raise ProtocolError(f"only {count} clients {what}, below the threshold {p.threshold}")
    if not whole_list:
        return
    if count < p.quorum:
        raise ProtocolError(f"only {count} clients {what}, below the quorum {p.quorum}")
    if count < p.min_contributors:
        raise ProtocolError(
            f"only {count} clients {what}, below the minimum cohort of {p.min_contributors}"
        )


def on_advertise(
    ctx: ServerContext, state: Advertising, replies: dict[int, AdvertiseKeys]
) -> tuple[SharingKeys, Send]:
    seen: set[bytes] = set()
    keys = dict(state.roster.keys)
    for client, reply in replies.items():
        k = reply.keys
        payload = advertise_payload(ctx.binding, client, k.cipher_public)
        if k.owner != client or not P.verify(
            ctx.params.identity_keys[client], k.signature, payload
        ):
            raise ProtocolError(f"client {client} advertised keys with a bad signature")
        if len(k.cipher_public) != 32:
            raise ProtocolError(f"client {client} advertised a malformed key")
        if k.cipher_public in seen:
            raise ProtocolError(f"client {client} advertised another client's key")
        seen.add(k.cipher_public)
        keys[client] = k
    u1 = frozenset(replies)
    need(ctx, len(u1), "advertised keys")
    roster = Roster(state.roster.graph, keys, u1, state.roster.dead, state.roster.left)
    return share_requests(ctx, roster, state.spec, u1)


def share_requests(
    ctx: ServerContext, roster: Roster, spec: AggregationSpec, u1: frozenset[int]
) -> tuple[SharingKeys, Send]:
    need(ctx, len(u1), "are alive")
    out = {}
    for c in sorted(u1):
        keys = tuple(roster.keys[v] for v in sorted(roster.holders(c) & u1))
        out[c] = ShareKeysRequest(ctx.session_id, spec.index, spec, keys)
    return SharingKeys(roster, spec, u1), Send(out)


def on_share(
    ctx: ServerContext, state: SharingKeys, replies: dict[int, ShareKeys]
) -> tuple[FirstChunk, Send]:
    roster, spec = state.roster, state.spec
    sealed: dict[int, list[Sealed]] = {c: [] for c in replies}
    mask_keys: dict[int, SignedMaskKey] = {}
    commitments: dict[int, bytes] = {}
    for client, reply in sorted(replies.items()):
        if reply.sender != client or len(reply.commitment) != 32:
            raise ProtocolError(f"client {client} sent a malformed share-keys message")
        allowed = roster.holders(client) & state.u1 - {client}
        recipients = [s.recipient for s in reply.sealed]
        if len(set(recipients)) != len(recipients) or set(recipients) != allowed:
            raise ProtocolError(f"client {client} did not send one share to each holder")
        if any(s.sender != client for s in reply.sealed):
            raise ProtocolError(f"client {client} relayed shares in another's name")
        _check_mask_key(ctx, spec.index, client, reply.mask_key, mask_keys)
        mask_keys[client] = reply.mask_key
        commitments[client] = reply.commitment
        for s in reply.sealed:
            if s.recipient in sealed:
                sealed[s.recipient].append(s)
    u2 = frozenset(replies)
    need(ctx, len(u2), "shared keys")
    collected = Collected(spec, u2, commitments, mask_keys)
    out = {}
    for c in sorted(u2):
        mine = tuple(sorted(sealed[c], key=lambda s: s.sender))
        keys = tuple(mask_keys[s.sender] for s in mine)
        out[c] = MaskedInputRequest(ctx.session_id, spec.index, 0, keys, mine)
    return FirstChunk(_with_alive(roster, u2), collected), Send(out)


def _with_alive(roster: Roster, alive: frozenset[int]) -> Roster:
    return Roster(roster.graph, roster.keys, alive, roster.dead, roster.left)


def _check_mask_key(
    ctx: ServerContext, index: int, client: int, key: SignedMaskKey, known: dict
) -> None:
    payload = mask_key_payload(ctx.binding, index, client, key.mask_public)
    if key.owner != client or len(key.mask_public) != 32:
        raise ProtocolError(f"client {client} sent a malformed mask key")
    if not P.verify(ctx.params.identity_keys[client], key.signature, payload):
        raise ProtocolError(f"client {client} sent a mask key with a bad signature")
    if any(k.mask_public == key.mask_public for k in known.values()):
        raise ProtocolError(f"client {client} reuses another client's mask key")


def on_masked(
    ctx: ServerContext, state: FirstChunk | Summing, replies: dict[int, MaskedInput]
) -> tuple[Summing | Checking, Send]:
    collected = state.collected
    spec, index = collected.spec, 0
    views: dict[int, SignedView] = {}
    if isinstance(state, FirstChunk):
        u3, sums = frozenset(replies), {}
        need(ctx, len(u3), "sent masked input")
    else:
        u3, sums, index, views = state.u3, dict(state.sums), state.chunk_index, dict(state.views)
        if set(replies) != u3:
            raise ProtocolError(
                f"clients {sorted(u3 - set(replies))} stopped in the middle of the masked-input "
                "stream; their earlier chunks cannot be separated from the sum"
            )
    chunk = spec.chunks[index]
    layout = WordLayout.for_max_sum(spec.bound * ctx.params.n)
    words = layout.words(chunk.length)
    total = np.zeros(words, dtype=layout.dtype)
    for client, reply in sorted(replies.items()):
        if reply.sender != client or reply.chunk_index != index:
            raise ProtocolError(f"client {client} sent the wrong chunk")
        if index == 0:
            views[client] = _check_view(ctx, spec.index, client, reply.view)
        elif reply.view:
            raise ProtocolError(f"client {client} sent a masking view after chunk 0")
        total += unpack_uint(reply.data, layout.bits, words).astype(layout.dtype, copy=False)
    sums[chunk.name] = total
    if index + 1 < len(spec.chunks):
        request = MaskedInputRequest(ctx.session_id, spec.index, index + 1, (), ())
        following = Summing(state.roster, collected, u3, views, sums, index + 1)
        return following, Send({c: request for c in sorted(u3)})
    request = ConsistencyRequest(ctx.session_id, spec.index, tuple(sorted(u3)))
    checking = Checking(state.roster, collected, u3, views, sums)
    return checking, Send({c: request for c in sorted(u3)})


def _check_view(
    ctx: ServerContext, index: int, client: int, views: tuple[SignedView, ...]
) -> SignedView:
    if len(views) != 1 or views[0].owner != client:
        raise ProtocolError(f"client {client} sent no masking view with its first chunk")
    view = views[0]
    payload = view_payload(ctx.binding, index, client, view.view)
    if not P.verify(ctx.params.identity_keys[client], view.signature, payload):
        raise ProtocolError(f"client {client} sent a masking view with a bad signature")
    return view


def on_consistency(
    ctx: ServerContext, state: Checking, replies: dict[int, ConsistencySignature]
) -> tuple[Unmasking, Send]:
    spec, graph = state.collected.spec, state.roster.graph
    survivors = tuple(sorted(state.u3))
    payload = survivors_payload(ctx.binding, spec.index, survivors)
    signatures = {}
    for client, reply in replies.items():
        s = reply.signature
        if s.signer != client or not P.verify(
            ctx.params.identity_keys[client], s.signature, payload
        ):
            raise ProtocolError(f"client {client} sent a bad consistency signature")
        signatures[client] = s
    need(ctx, len(signatures), "signed the survivor list")
    dead = tuple(sorted(state.collected.u2 - state.u3))
    signed = tuple(signatures[c] for c in sorted(signatures))
    out = {
        c: UnmaskRequest(
            ctx.session_id,
            spec.index,
            survivors,
            dead,
            signed,
            tuple(state.views[v] for v in sorted(graph[c] & state.u3)),
        )
        for c in sorted(signatures)
    }
    return Unmasking(state.roster, state.collected, state.u3, state.sums, signatures), Send(out)


def on_unmask(
    ctx: ServerContext, state: Unmasking, replies: dict[int, UnmaskShares]
) -> tuple[Completed, Finished]:
    roster, collected, u3 = state.roster, state.collected, state.u3
    dead = collected.u2 - u3
    self_shares: dict[int, dict[int, bytes]] = {c: {} for c in u3}
    key_shares: dict[int, dict[int, bytes]] = {c: {} for c in dead}
    for client, reply in replies.items():
        if reply.sender != client:
            raise ProtocolError(f"client {client} sent shares in another's name")
        x = ctx.params.point(client)
        for shares, owners, into in (
            (reply.self_mask_shares, u3 & roster.holders(client), self_shares),
            (reply.key_shares, dead & roster.graph[client], key_shares),
        ):
            if sorted(s.owner for s in shares) != sorted(owners):
                raise ProtocolError(f"client {client} sent shares for the wrong clients")
            for s in shares:
                into[s.owner][x] = s.value
    need(ctx, len(replies), "sent their shares", whole_list=False)
    seeds, pair_seeds = _recover(ctx, state, self_shares, key_shares)
    result = _unmask_sums(ctx, state, seeds, pair_seeds)
    alive = u3 - dead - roster.left
    following = Roster(roster.graph, roster.keys, alive, roster.dead | dead, roster.left)
    return Completed(following, collected.spec.index), Finished(result)


def _recover(
    ctx: ServerContext,
    state: Unmasking,
    self_shares: dict[int, dict[int, bytes]],
    key_shares: dict[int, dict[int, bytes]],
) -> tuple[dict[int, bytes], dict[int, dict[int, bytes]]]:
    """The survivors' self-mask seeds and their pair seeds with dead neighbours, each checked."""
    collected, t, index = state.collected, ctx.params.threshold, state.collected.spec.index
    seeds = {}
    for owner, held in self_shares.items():
        seed = combine(held, t)
        if P.commitment(ctx.binding, index, owner, seed) != collected.commitments[owner]:
            raise ProtocolError(f"self-mask seed of client {owner} fails its commitment")
        seeds[owner] = seed
    pair_seeds: dict[int, dict[int, bytes]] = {u: {} for u in state.u3}
    for owner, held in key_shares.items():
        neighbours = state.roster.graph[owner] & state.u3
        if not neighbours:
            continue
        private = P.X25519PrivateKey.from_private_bytes(combine(held, t))
        if P.public_bytes(private) != collected.mask_keys[owner].mask_public:
            raise ProtocolError(f"recovered mask key of client {owner} is wrong")
        for u in neighbours:
            secret = P.agree(private, collected.mask_keys[u].mask_public)
            pair_seeds[u][owner] = P.derive_key(secret, ctx.binding, P.LABEL_MASK_SEED, u, owner)
    return seeds, pair_seeds


def _unmask_sums(
    ctx: ServerContext,
    state: Unmasking,
    seeds: dict[int, bytes],
    pair_seeds: dict[int, dict[int, bytes]],
) -> AggregateResult:
    spec = state.collected.spec
    layout = WordLayout.for_max_sum(spec.bound * ctx.params.n)
    limit = spec.bound * len(state.u3)
    out_dtype = sum_dtype(spec.bound * ctx.params.n)
    sums = {}
    for chunk in spec.chunks:
        total = state.sums[chunk.name].copy()  # the state stays as it was
        for u in sorted(state.u3):
            add_masks(total, seeds[u], pair_seeds[u], u, spec.index, chunk.offset, layout.bits, -1)
        total &= layout.word_mask
        entries = layout.unpack_to(total, chunk.length, out_dtype)  # O(slice) transient
        if entries.size and int(entries.max()) > limit:
            raise ProtocolError("unmasked sum exceeds its bound: a participant cheated")
        sums[chunk.name] = entries
    return AggregateResult(spec=spec, sums=sums, contributors=tuple(sorted(state.u3)))
