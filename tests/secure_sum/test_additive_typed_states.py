"""The typed states of `additive`: pure transitions, one type per round, saved through the codec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import client_states as CS
from fedprllm_secure.secure_sum.additive import server_states as SS
from fedprllm_secure.secure_sum.additive.client import AdditiveClient
from fedprllm_secure.secure_sum.additive.client_steps import client_step
from fedprllm_secure.secure_sum.additive.server_steps import server_step
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec, save_state
from fedprllm_secure.secure_sum.messages import ABORT_AGGREGATION, ABORT_REFUSED, abort_message
from tests.tools.additive_harness import build, deliver

ROSTER = (0, 1, 2)


def new_session():
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in ROSTER}
    return build(ROSTER, inputs, SeededRandomSource(b"typed"), {"threshold": 2})


def spec(index):
    return AggregationSpec.from_lengths(index, {"a": 5, "b": 3}, 1)


def trace():
    """(client 0's state, the message it got) and (server state, replies) at every step of two
    aggregations."""
    session = new_session()
    client, server = session.clients[0], session.server
    seen_client, seen_server = [], []
    for index in (0, 1):
        out = server.begin(spec(index))
        while not isinstance(out, AggregateResult):
            seen_client.append((client.current, out[0]))
            replies = deliver(session, out)
            seen_server.append((server.current, replies))
            out = server.handle(replies)
    return session, seen_client, seen_server


def test_every_round_has_its_own_state_type_on_both_sides():
    _session, clients, servers = trace()
    assert [type(s).__name__ for s, _ in clients[:7]] == [
        "Advertising",
        "FirstShare",
        "AwaitingInput",
        "Masking",
        "Consistency",
        "Unmasking",
        "Completed",
    ]
    assert [type(s).__name__ for s, _ in servers[:7]] == [
        "Advertising",
        "SharingKeys",
        "FirstChunk",
        "Summing",
        "Checking",
        "Unmasking",
        "SharingKeys",
    ]
    for state, _ in clients + servers:
        with pytest.raises(dataclasses.FrozenInstanceError):
            state.ROUND_x = 1  # type: ignore[attr-defined]


def test_transitions_are_pure_functions_of_state_and_message():
    """The same (state, message) with the same randomness gives the same (state, reply), and the
    state given is left as it was: a step can be replayed or tested in isolation."""
    session, clients, servers = trace()
    ctx = session.clients[0]._ctx
    for state, message in clients:
        before = save_state("test", state)
        one = client_step(dataclasses.replace(ctx, rng=SeededRandomSource(1)), state, message)
        two = client_step(dataclasses.replace(ctx, rng=SeededRandomSource(1)), state, message)
        assert one[0] == two[0] and one[1] == two[1]
        assert save_state("test", state) == before
    sctx = session.server._ctx
    for state, replies in servers:
        one, two = server_step(sctx, state, replies), server_step(sctx, state, replies)
        assert type(one[0]) is type(two[0]) and type(one[1]) is type(two[1])
        if isinstance(one[1], SS.Send):
            assert one[1].messages == two[1].messages


def test_a_client_saved_in_any_state_restores_to_the_same_state():
    session, clients, _servers = trace()
    original = session.clients[0]
    rng = SeededRandomSource(b"restore")
    for state, _message in [*clients, (CS.Aborted("refused"), None)]:
        original._current = state
        restored = AdditiveClient.from_state(original.to_state(), original._ctx.inputs, rng)
        assert restored.current == state and restored.state == state.ROUND


def test_a_saved_client_holding_a_foreign_state_is_refused():
    session = new_session()
    client = session.clients[0]
    ctx = client._ctx
    identity = ctx.identity.private_bytes_raw()
    own = CS.Peers({}, b"", CS.SignedKeys(0, b"", b""), {}, {}, frozenset())
    for foreign in (own, CS.SavedClient(ctx.config, 0, identity, CS.Advertising())):
        blob = save_state("additive", CS.SavedClient(ctx.config, 0, identity, foreign))
        with pytest.raises(ProtocolError, match="no additive client state"):
            AdditiveClient.from_state(blob, ctx.inputs, None)
    with pytest.raises(ProtocolError):
        AdditiveClient.from_state(save_state("additive", own), ctx.inputs, None)


def test_a_server_abort_stops_a_client_in_any_state_and_another_sessions_is_refused():
    session, clients, _servers = trace()
    ctx = session.clients[0]._ctx
    ours = abort_message(ctx.session_id, 0, ABORT_AGGREGATION, "stop")
    theirs = abort_message(bytes(32), 0, ABORT_AGGREGATION, "stop")
    for state, _message in [*clients, (CS.Aborted("before"), None)]:
        assert client_step(ctx, state, ours) == (CS.Aborted("the server aborted: stop"), None)
        after, reply = client_step(ctx, state, theirs)
        assert type(after) is CS.Aborted and reply.code == ABORT_REFUSED
