"""What an `additive` client checks before it acts (protocols/additive.md sections 4 and 7).

Each check raises ProtocolError naming what is wrong; the transition that called it then moves the
client to `Aborted`. They read the client's context and state and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..api import InputProvider, SessionConfig
from . import primitives as P
from .client_states import Peers
from .graph import connected
from .messages import SignedKeys, SignedView, UnmaskRequest
from .params import Params
from .transcript import advertise_payload, survivors_payload, view_payload


@dataclass(frozen=True)
class ClientContext:
    """What a client is given for the whole session (rebuilt, not saved, on restore). Transitions
    read only this and their state; they draw randomness from `rng` and read `inputs`."""

    config: SessionConfig
    client_id: int
    params: Params
    binding: bytes  # the config digest every signature and derivation binds (section 1)
    identity: P.Ed25519PrivateKey
    rng: RandomSource
    inputs: InputProvider

    @property
    def session_id(self) -> bytes:
        return self.config.session_id


def check_ids(ids: tuple[int, ...], what: str, roster: tuple[int, ...]) -> None:
    """Refuse unsorted, duplicate or unknown ids (the canonical form is strictly ascending)."""
    if any(a >= b for a, b in zip(ids, ids[1:], strict=False)):
        raise ProtocolError(f"{what} is not a strictly ascending list of ids")
    unknown = set(ids) - set(roster)
    if unknown:
        raise ProtocolError(f"{what} names clients not on the roster: {sorted(unknown)}")


def holders(ctx: ClientContext, peers: Peers) -> frozenset[int]:
    return peers.graph[ctx.client_id] | {ctx.client_id}


def check_keys(
    ctx: ClientContext, peers: Peers, keys: tuple[SignedKeys, ...], first: bool
) -> tuple[frozenset[int], Mapping[int, SignedKeys]]:
    """(the holders on the key list, the peers' session keys) once the list passes every check."""
    owners = tuple(k.owner for k in keys)
    check_ids(owners, "the key list", ctx.params.roster)
    if not set(owners) <= holders(ctx, peers):
        raise ProtocolError("the key list names clients that are not my neighbours")
    if set(owners) & peers.dead:
        raise ProtocolError("the key list names a client already declared dead")
    if ctx.client_id not in owners:
        raise ProtocolError("the key list leaves me out")
    if len(owners) < ctx.params.threshold:
        raise ProtocolError(
            f"only {len(owners)} holders are live, below the threshold {ctx.params.threshold}"
        )
    peer_keys = dict(peers.peer_keys)
    for k in keys:
        if k.owner == ctx.client_id:
            if k != peers.own_keys:
                raise ProtocolError("the key list alters my own keys")
            continue
        if first:
            payload = advertise_payload(ctx.binding, k.owner, k.cipher_public)
            if not P.verify(ctx.params.identity_keys[k.owner], k.signature, payload):
                raise ProtocolError(f"bad signature on the keys of client {k.owner}")
            if k.cipher_public == peers.own_keys.cipher_public:
                raise ProtocolError(f"client {k.owner} advertises my own key")
            peer_keys[k.owner] = k
        elif peers.peer_keys.get(k.owner) != k:
            raise ProtocolError(f"keys of client {k.owner} changed within the session")
    return frozenset(owners), peer_keys


def check_cohort(ctx: ClientContext, alive: set[int]) -> None:
    """The survivor list must be able to carry a quorum and reach the minimum cohort."""
    p = ctx.params
    if len(alive) < p.quorum:
        raise ProtocolError(
            f"only {len(alive)} survivors, below the quorum {p.quorum} of signatures a list needs"
        )
    if len(alive) < p.min_contributors:
        raise ProtocolError(
            f"only {len(alive)} survivors, below the minimum cohort of {p.min_contributors}"
        )


def check_survivors(
    ctx: ClientContext, peers: Peers, u2: frozenset[int], survivors: tuple[int, ...]
) -> None:
    """The list this client is asked to sign (round 3)."""
    check_ids(survivors, "the survivor list", ctx.params.roster)
    alive = set(survivors)
    if ctx.client_id not in alive:
        raise ProtocolError("the survivor list leaves me out")
    check_cohort(ctx, alive)
    if alive & peers.graph[ctx.client_id] - u2:
        raise ProtocolError("the survivor list names neighbours that never shared keys")
    if alive & peers.dead:
        raise ProtocolError("the survivor list names a client already declared dead")
    if not connected(alive, peers.graph):
        raise ProtocolError("survivors are disconnected in the graph (partial sums would leak)")


def check_dead_list(
    ctx: ClientContext, peers: Peers, u2: frozenset[int], alive: set[int], dead: set[int]
) -> None:
    """The dead list of an unmask request: never a survivor, never me, exactly my neighbours
    that shared keys and are not on the list."""
    if alive & dead:
        raise ProtocolError(f"request names clients {sorted(alive & dead)} as both alive and dead")
    if ctx.client_id in dead:
        raise ProtocolError("request declares me dead")
    neighbours = peers.graph[ctx.client_id]
    if dead & neighbours != (u2 & neighbours) - alive:
        raise ProtocolError("the dead list disagrees with the neighbours that shared keys")


def check_signatures(ctx: ClientContext, index: int, msg: UnmaskRequest) -> None:
    """At least the quorum of valid roster signatures over the survivor list (section 7.1)."""
    signers = tuple(s.signer for s in msg.signatures)
    check_ids(signers, "the signer list", ctx.params.roster)
    if not set(signers) <= set(msg.survivors):
        raise ProtocolError("a consistency signature comes from a non-survivor")
    if len(signers) < ctx.params.quorum:
        raise ProtocolError(
            f"only {len(signers)} consistency signatures, below the quorum {ctx.params.quorum}"
        )
    payload = survivors_payload(ctx.binding, index, msg.survivors)
    for s in msg.signatures:
        if not P.verify(ctx.params.identity_keys[s.signer], s.signature, payload):
            raise ProtocolError(f"bad consistency signature of client {s.signer}")


def check_views(
    ctx: ClientContext, peers: Peers, index: int, views: tuple[SignedView, ...], alive: set[int]
) -> None:
    """Release b_v only for survivors v that masked with every neighbour on the list.

    One signed view per neighbour on the list; each must name a subset of the owner's graph
    neighbours containing all of its neighbours on the list, and at least one. Then the honest
    survivors' pairwise masks span the (connected) survivor list, and a survivor's vector is
    never left masked only by peers whose keys are revealed as dead.
    """
    owners = tuple(v.owner for v in views)
    expected = tuple(sorted(alive & peers.graph[ctx.client_id]))
    if owners != expected:
        raise ProtocolError("the masking views do not match my neighbours on the list")
    for v in views:
        payload = view_payload(ctx.binding, index, v.owner, v.view)
        if not P.verify(ctx.params.identity_keys[v.owner], v.signature, payload):
            raise ProtocolError(f"bad signature on the masking view of client {v.owner}")
        neighbours = peers.graph[v.owner]
        check_ids(v.view, "a masking view", ctx.params.roster)
        if not set(v.view) <= neighbours:
            raise ProtocolError(f"client {v.owner} claims to mask with non-neighbours")
        listed = alive & neighbours
        if not listed or not listed <= set(v.view):
            raise ProtocolError(
                f"survivor {v.owner} did not mask with its neighbours on the list: its input "
                "would be exposed by the shares asked for"
            )
