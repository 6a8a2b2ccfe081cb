"""The server transitions of `additive`: `server_begin` and `server_step`, state -> (state, outcome).

Pure: a transition never changes the state it is given and never raises ProtocolError; every
failure becomes `(Aborted, AbortAggregation)`. Replies are screened first (`_screen`): an `Abort`
from a client that was asked drops that client (`DropClient`: as if it had stopped answering);
any other reply that is not this round's message, for this session and aggregation, from a client
that was asked, aborts the aggregation. The rounds' own checks are in `server_rounds`.
Memory: one running masked sum per chunk, in packed words (O(d), never O(d x clients)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ...errors import ProtocolError
from ..api import AggregationSpec
from ..messages import ABORT_AGGREGATION, Abort, abort_message
from . import primitives as P
from .graph import harary
from .layout import WordLayout
from .messages import (
    AdvertiseKeys,
    AdvertiseRequest,
    ConsistencySignature,
    MaskedInput,
    ShareKeys,
    UnmaskShares,
)
from .server_rounds import (
    ServerContext,
    on_advertise,
    on_consistency,
    on_masked,
    on_share,
    on_unmask,
    share_requests,
)
from .server_states import (
    ROUND_TYPES,
    AbortAggregation,
    Aborted,
    Advertising,
    Checking,
    Completed,
    DropClient,
    Finished,
    FirstChunk,
    Idle,
    Outcome,
    Roster,
    RoundState,
    Send,
    ServerState,
    SharingKeys,
    Summing,
    Unmasking,
)
from .transcript import graph_seed

# the one client message each round state accepts, and the step that consumes them
_EXPECTED: dict[type, type] = {
    Advertising: AdvertiseKeys,
    SharingKeys: ShareKeys,
    FirstChunk: MaskedInput,
    Summing: MaskedInput,
    Checking: ConsistencySignature,
    Unmasking: UnmaskShares,
}
_ROUNDS: dict[type, Any] = {
    Advertising: on_advertise,
    SharingKeys: on_share,
    FirstChunk: on_masked,
    Summing: on_masked,
    Checking: on_consistency,
    Unmasking: on_unmask,
}


def server_begin(
    ctx: ServerContext, state: ServerState, spec: AggregationSpec
) -> tuple[ServerState, Outcome]:
    """Start aggregation `spec`: allowed in Idle (advertise first) and Completed (share-keys)."""
    try:
        if not isinstance(state, (Idle, Completed)):
            raise ProtocolError(f"cannot begin an aggregation in state {state.ROUND!r}")
        if isinstance(state, Completed) and spec.index <= state.last:
            raise ProtocolError("aggregation indices must increase within a session")
        if spec.index > P.MAX_AGGREGATION or not spec.chunks:
            raise ProtocolError("aggregation index out of range or nothing to aggregate")
        WordLayout.for_max_sum(spec.bound * ctx.params.n)  # refuses sums wider than 64 bits
        if isinstance(state, Completed):
            return share_requests(ctx, state.roster, spec, state.roster.alive)
        seed = graph_seed(ctx.binding)
        graph = harary(ctx.params.roster, ctx.params.neighbors, seed)
        alive = frozenset(ctx.params.roster)
        roster = Roster(graph, {}, alive, frozenset(), frozenset())
        request = AdvertiseRequest(ctx.session_id, spec.index, seed)
        return Advertising(roster, spec), Send({c: request for c in sorted(alive)})
    except ProtocolError as exc:
        return _abort(ctx, state, str(exc), spec.index)


def server_step(
    ctx: ServerContext, state: ServerState, replies: Mapping[int, Any]
) -> tuple[ServerState, Outcome]:
    """Consume the replies of the running round (absent clients dropped out)."""
    try:
        if not isinstance(state, ROUND_TYPES):
            raise ProtocolError(f"no round is running (state {state.ROUND!r})")
        kept, dropped = _screen(ctx, state, replies)
        if dropped:
            left = state.roster.left | {d.client for d in dropped}
            state = replace(state, roster=replace(state.roster, left=left))
        following, outcome = _ROUNDS[type(state)](ctx, state, kept)
        return following, replace(outcome, dropped=tuple(dropped))
    except ProtocolError as exc:
        return _abort(ctx, state, str(exc), _index(state))


def asked(state: ServerState) -> frozenset[int]:
    """The clients the server is talking to in `state` (those whose replies it accepts)."""
    if isinstance(state, Advertising):
        return state.roster.alive
    if isinstance(state, SharingKeys):
        return state.u1
    if isinstance(state, FirstChunk):
        return state.collected.u2
    if isinstance(state, (Summing, Checking)):
        return state.u3
    if isinstance(state, Unmasking):
        return frozenset(state.signatures)
    if isinstance(state, Completed):
        return state.roster.alive
    return frozenset()


def _index(state: ServerState) -> int:
    if isinstance(state, (Advertising, SharingKeys)):
        return state.spec.index
    if isinstance(state, (FirstChunk, Summing, Checking, Unmasking)):
        return state.collected.spec.index
    return -1


def _screen(
    ctx: ServerContext, state: RoundState, replies: Mapping[int, Any]
) -> tuple[dict[int, Any], list[DropClient]]:
    """(the replies the round consumes, the clients it drops); ProtocolError to abort."""
    expected, index, clients = _EXPECTED[type(state)], _index(state), asked(state)
    kept: dict[int, Any] = {}
    dropped: list[DropClient] = []
    for client, reply in replies.items():
        if client not in clients:
            raise ProtocolError(f"reply from client {client}, who was not asked")
        if type(reply) is not expected and type(reply) is not Abort:
            raise ProtocolError(
                f"client {client} sent {type(reply).__name__} in state {state.ROUND!r}"
            )
        if reply.session_id != ctx.session_id:
            raise ProtocolError(f"client {client} answered for another session")
        with_index = type(reply) is Abort or not isinstance(state, Advertising)
        if with_index and reply.aggregation != index:
            raise ProtocolError(f"client {client} answered for another aggregation")
        if type(reply) is Abort:
            dropped.append(DropClient(client, f"client {client} refused: {reply.text}"))
        else:
            kept[client] = reply
    return kept, dropped


def _abort(
    ctx: ServerContext, state: ServerState, reason: str, index: int
) -> tuple[Aborted, AbortAggregation]:
    """Aborted, telling every client the server was talking to."""
    notice = abort_message(ctx.session_id, index, ABORT_AGGREGATION, reason)
    return Aborted(reason), AbortAggregation(reason, {c: notice for c in sorted(asked(state))})


__all__ = ["Finished", "server_begin", "server_step"]
