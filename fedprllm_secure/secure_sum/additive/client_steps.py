"""The client transitions of `additive`: `client_step(ctx, state, message) -> (state, reply)`.

Pure but for the randomness drawn from `ctx.rng` and the vectors read from `ctx.inputs`: a step
never changes the state it is given, and never raises ProtocolError. A message the state does not
accept (section 5), or one failing any check, gives `(Aborted(reason), Abort)`: the client refuses,
forgets every secret and tells the server with the abort message. A server's `Abort` gives
`(Aborted, None)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from ...errors import ProtocolError
from ..api import read_checked_input
from ..messages import ABORT_INPUT, ABORT_REFUSED, Abort, abort_message
from ..packing import pack_uint
from . import primitives as P
from .client_checks import (
    ClientContext,
    check_cohort,
    check_dead_list,
    check_ids,
    check_keys,
    check_signatures,
    check_survivors,
    check_views,
)
from .client_states import (
    Aborted,
    Advertising,
    AwaitingInput,
    ClientState,
    Completed,
    Consistency,
    FirstShare,
    Masking,
    Peers,
    Secrets,
    Unmasking,
)
from .graph import harary
from .layout import WordLayout
from .messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    MaskedInputRequest,
    Sealed,
    Share,
    ShareKeys,
    ShareKeysRequest,
    Signature,
    SignedKeys,
    SignedMaskKey,
    SignedView,
    UnmaskRequest,
    UnmaskShares,
)
from .shamir import split
from .transcript import (
    add_masks,
    advertise_payload,
    graph_seed,
    mask_key_payload,
    parse_share_plaintext,
    share_plaintext,
    survivors_payload,
    view_payload,
)


class _InputRefused(ProtocolError):
    """The client's own input vector is invalid (abort code `input`)."""


def client_step(ctx: ClientContext, state: ClientState, message: Any) -> tuple[ClientState, Any]:
    """The next state and the reply to `message` (an `Abort` when the client refuses)."""
    if isinstance(message, Abort) and message.session_id == ctx.session_id:
        return Aborted(f"the server aborted: {message.text}"), None
    step = _STEPS.get((type(state), type(message)))
    try:
        if step is None:
            raise ProtocolError(
                f"client {ctx.client_id}: {type(message).__name__} is not expected in "
                f"state {state.ROUND!r}"
            )
        if getattr(message, "session_id", None) != ctx.session_id:
            raise ProtocolError(f"client {ctx.client_id}: message for another session")
        return step(ctx, state, message)
    except ProtocolError as exc:
        code = ABORT_INPUT if isinstance(exc, _InputRefused) else ABORT_REFUSED
        return Aborted(str(exc)), abort_message(
            ctx.session_id, _index(state, message), code, str(exc)
        )


def _index(state: ClientState, message: Any) -> int:
    """The aggregation an abort names: the running one, else the one the server asked for."""
    secrets = getattr(state, "secrets", None)
    if isinstance(secrets, Secrets):
        return secrets.spec.index
    index = getattr(message, "aggregation", -1)
    return index if isinstance(index, int) and not isinstance(index, bool) else -1


def _advertise(
    ctx: ClientContext, state: Advertising, msg: AdvertiseRequest
) -> tuple[FirstShare, AdvertiseKeys]:
    if not 0 <= msg.aggregation <= P.MAX_AGGREGATION or len(msg.graph_seed) != 32:
        raise ProtocolError("malformed advertise request")
    if msg.graph_seed != graph_seed(ctx.binding):
        raise ProtocolError(
            "the graph seed is not the session's (derived from its config digest): clients "
            "on different graphs could have one sum split into partial sums"
        )
    graph = harary(ctx.params.roster, ctx.params.neighbors, msg.graph_seed)
    cipher_key = P.new_x25519(ctx.rng)
    cpk = P.public_bytes(cipher_key)
    signature = P.sign(ctx.identity, advertise_payload(ctx.binding, ctx.client_id, cpk))
    own = SignedKeys(ctx.client_id, cpk, signature)
    peers = Peers(graph, cipher_key.private_bytes_raw(), own, {}, {}, frozenset())
    return FirstShare(peers, msg.aggregation), AdvertiseKeys(ctx.session_id, own)


def _with_share_keys(ctx: ClientContext, peers: Peers, wanted: Iterable[int]) -> Peers:
    """`peers` knowing K_uv for every peer in `wanted` (each derived once per session)."""
    missing = [v for v in wanted if v not in peers.share_keys]
    if not missing:
        return peers
    cipher_key = P.X25519PrivateKey.from_private_bytes(peers.cipher_key)
    share_keys = dict(peers.share_keys)
    for peer in missing:
        secret = P.agree(cipher_key, peers.peer_keys[peer].cipher_public)
        share_keys[peer] = P.derive_key(secret, ctx.binding, P.LABEL_SHARE_KEY, ctx.client_id, peer)
    return replace(peers, share_keys=share_keys)


def _share(
    ctx: ClientContext, state: FirstShare | Completed, msg: ShareKeysRequest
) -> tuple[AwaitingInput, ShareKeys]:
    first = isinstance(state, FirstShare)
    if isinstance(state, FirstShare) and msg.aggregation != state.advertised:
        raise ProtocolError("share-keys request for another aggregation than advertised")
    if isinstance(state, Completed) and not state.last < msg.aggregation <= P.MAX_AGGREGATION:
        raise ProtocolError("aggregation index is not fresh (replay?)")
    spec = msg.spec
    if spec.index != msg.aggregation or not spec.chunks:
        raise ProtocolError("aggregation spec does not match the request")
    WordLayout.for_max_sum(spec.bound * ctx.params.n)  # refuses sums wider than 64 bits
    listed, peer_keys = check_keys(ctx, state.peers, msg.keys, first)
    me, sid, index = ctx.client_id, ctx.binding, msg.aggregation
    peers = _with_share_keys(ctx, replace(state.peers, peer_keys=peer_keys), sorted(listed - {me}))
    points = {ctx.params.point(c): c for c in listed}
    self_seed = ctx.rng.random_bytes(32)
    mask_key = P.new_x25519(ctx.rng)
    t = ctx.params.threshold
    self_shares = split(self_seed, t, sorted(points), ctx.rng)
    key_shares = split(mask_key.private_bytes_raw(), t, sorted(points), ctx.rng)
    sealed = []
    for x, peer in sorted(points.items(), key=lambda item: item[1]):
        if peer != me:
            plain = share_plaintext(self_shares[x], key_shares[x])
            key = peers.share_keys[peer]
            sealed.append(Sealed(me, peer, P.seal(key, sid, index, me, peer, plain)))
    mine = ctx.params.point(me)
    secrets = Secrets(
        spec,
        listed,
        self_seed,
        mask_key.private_bytes_raw(),
        {me: self_shares[mine]},
        {me: key_shares[mine]},
    )
    mpk = P.public_bytes(mask_key)
    signature = P.sign(ctx.identity, mask_key_payload(sid, index, me, mpk))
    reply = ShareKeys(
        ctx.session_id,
        index,
        me,
        SignedMaskKey(me, mpk, signature),
        P.commitment(sid, index, me, self_seed),
        tuple(sealed),
    )
    return AwaitingInput(peers, secrets), reply


def _receive_shares(ctx: ClientContext, state: AwaitingInput, msg: MaskedInputRequest) -> Masking:
    """Check and open the relayed shares and mask keys of chunk 0; derive the pair seeds."""
    peers, secrets, me = state.peers, state.secrets, ctx.client_id
    index = secrets.spec.index
    senders = tuple(s.sender for s in msg.sealed)
    check_ids(senders, "the relayed shares", ctx.params.roster)
    if not set(senders) <= secrets.listed - {me}:
        raise ProtocolError("relayed shares come from clients outside my key list")
    if tuple(k.owner for k in msg.mask_keys) != senders:
        raise ProtocolError("relayed mask keys do not match the relayed shares")
    mask_key = P.X25519PrivateKey.from_private_bytes(secrets.mask_key)
    own_mask = P.public_bytes(mask_key)
    for k in msg.mask_keys:
        payload = mask_key_payload(ctx.binding, index, k.owner, k.mask_public)
        if not P.verify(ctx.params.identity_keys[k.owner], k.signature, payload):
            raise ProtocolError(f"bad signature on the mask key of client {k.owner}")
        if k.mask_public == own_mask:
            raise ProtocolError(f"client {k.owner} reuses my mask key")
    peers = _with_share_keys(ctx, peers, senders)
    self_shares, key_shares = dict(secrets.self_shares), dict(secrets.key_shares)
    for s in msg.sealed:
        if s.recipient != me:
            raise ProtocolError("a relayed share is addressed to another client")
        key = peers.share_keys[s.sender]
        plain = P.open_sealed(key, ctx.binding, index, s.sender, me, s.ciphertext)
        self_shares[s.sender], key_shares[s.sender] = parse_share_plaintext(plain)
    u2 = frozenset(senders) | {me}
    if len(u2) < ctx.params.threshold:
        raise ProtocolError(f"only {len(u2)} holders shared keys, below the threshold")
    pair_seeds = {}
    for k in msg.mask_keys:
        secret = P.agree(mask_key, k.mask_public)
        pair_seeds[k.owner] = P.derive_key(secret, ctx.binding, P.LABEL_MASK_SEED, me, k.owner)
    secrets = replace(secrets, self_shares=self_shares, key_shares=key_shares)
    return Masking(peers, secrets, u2, pair_seeds, 0)


def _masked(
    ctx: ClientContext, state: AwaitingInput | Masking, msg: MaskedInputRequest
) -> tuple[Masking | Consistency, MaskedInput]:
    expected = state.next_chunk if isinstance(state, Masking) else 0
    spec, me = state.secrets.spec, ctx.client_id
    if msg.aggregation != spec.index or msg.chunk_index != expected:
        raise ProtocolError("masked-input request out of order (replay?)")
    view: tuple[SignedView, ...] = ()
    if isinstance(state, AwaitingInput):
        state = _receive_shares(ctx, state, msg)
        # the neighbours this client masks with, signed: holders check it before releasing a
        # share of b_u (protocols/additive.md section 4, "Why every survivor stays masked")
        mine = tuple(sorted(state.u2 & state.peers.graph[me]))
        payload = view_payload(ctx.binding, spec.index, me, mine)
        view = (SignedView(me, mine, P.sign(ctx.identity, payload)),)
    elif msg.sealed or msg.mask_keys:
        raise ProtocolError("shares may only be relayed with the first chunk")
    chunk = spec.chunks[msg.chunk_index]
    try:
        x = read_checked_input(ctx.inputs, spec.index, chunk, spec.bound)
    except ProtocolError as exc:
        raise _InputRefused(str(exc)) from exc
    layout = WordLayout.for_max_sum(spec.bound * ctx.params.n)
    seeds = {v: state.pair_seeds[v] for v in sorted(state.pair_seeds)}
    y = layout.pack(x)
    add_masks(y, state.secrets.self_seed, seeds, me, spec.index, chunk.offset, layout.bits)
    y &= layout.word_mask
    data = pack_uint(y, layout.bits)
    reply = MaskedInput(ctx.session_id, spec.index, me, msg.chunk_index, data, view)
    if msg.chunk_index + 1 == len(spec.chunks):
        return Consistency(state.peers, state.secrets, state.u2), reply
    return replace(state, next_chunk=msg.chunk_index + 1), reply


def _consistency(
    ctx: ClientContext, state: Consistency, msg: ConsistencyRequest
) -> tuple[Unmasking, ConsistencySignature]:
    index = state.secrets.spec.index
    if msg.aggregation != index:
        raise ProtocolError("consistency request for another aggregation (replay?)")
    check_survivors(ctx, state.peers, state.u2, msg.survivors)
    payload = survivors_payload(ctx.binding, index, msg.survivors)
    signature = Signature(ctx.client_id, P.sign(ctx.identity, payload))
    following = Unmasking(state.peers, state.secrets, state.u2, msg.survivors)
    return following, ConsistencySignature(ctx.session_id, index, signature)


def _unmask(
    ctx: ClientContext, state: Unmasking, msg: UnmaskRequest
) -> tuple[Completed, UnmaskShares]:
    peers, secrets = state.peers, state.secrets
    index = secrets.spec.index
    if msg.aggregation != index:
        raise ProtocolError("unmasking request for another aggregation (replay?)")
    if msg.survivors != state.signed:
        raise ProtocolError("the survivor list differs from the one I signed")
    check_ids(msg.dead, "the dead list", ctx.params.roster)
    alive, dead = set(msg.survivors), set(msg.dead)
    check_cohort(ctx, alive)
    check_dead_list(ctx, peers, state.u2, alive, dead)
    check_signatures(ctx, index, msg)
    check_views(ctx, peers, index, msg.views, alive)
    owners = sorted(alive & state.u2)
    if any(v not in secrets.self_shares for v in owners):
        raise ProtocolError("asked for a self-mask share I do not hold")
    self_shares = tuple(Share(v, secrets.self_shares[v]) for v in owners)
    key_owners = sorted(dead & peers.graph[ctx.client_id])
    if any(v not in secrets.key_shares for v in key_owners):
        raise ProtocolError("asked for a key share I do not hold")
    key_shares = tuple(Share(v, secrets.key_shares[v]) for v in key_owners)
    reply = UnmaskShares(ctx.session_id, index, ctx.client_id, self_shares, key_shares)
    # the aggregation's secrets and shares are forgotten; the dead stay dead for the session
    return Completed(replace(peers, dead=peers.dead | dead), index), reply


_Step = Callable[[ClientContext, Any, Any], tuple[ClientState, Any]]
_STEPS: dict[tuple[type, type], _Step] = {
    (Advertising, AdvertiseRequest): _advertise,
    (FirstShare, ShareKeysRequest): _share,
    (Completed, ShareKeysRequest): _share,
    (AwaitingInput, MaskedInputRequest): _masked,
    (Masking, MaskedInputRequest): _masked,
    (Consistency, ConsistencyRequest): _consistency,
    (Unmasking, UnmaskRequest): _unmask,
}
# the table by round name (protocols/additive.md section 5)
CLIENT_TRANSITIONS = frozenset((state.ROUND, message) for state, message in _STEPS)
