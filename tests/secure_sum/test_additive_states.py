"""Every (state, message) pair outside the transition tables aborts, on both sides."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive.client import CLIENT_TRANSITIONS
from fedprllm_secure.secure_sum.additive.messages import CLIENT_MESSAGES, SERVER_MESSAGES
from fedprllm_secure.secure_sum.additive.server import ROUND_STATES
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec
from tests.tools.additive_harness import build, deliver

ROSTER = (0, 1, 2)
CHUNKS = {"a": 5, "b": 3}
CLIENT_STATES = (
    "advertise-keys",
    "share-keys",
    "masked-input",
    "consistency-check",
    "unmasking",
    "completed",
    "aborted",
)
SERVER_STATES = ("idle", *ROUND_STATES, "completed", "aborted")
ALL_MESSAGES = SERVER_MESSAGES + CLIENT_MESSAGES


def sample(kind, session_id):
    """A well-formed instance of any message or field type (contents need not make sense)."""
    if kind is int:
        return 0
    if kind is bytes:
        return session_id
    if kind is str:
        return "a"
    if kind is bool:
        return False
    if typing.get_origin(kind) is tuple:
        return ()
    if kind is AggregationSpec:
        return AggregationSpec.from_lengths(0, CHUNKS, 1)
    hints = typing.get_type_hints(kind)
    return kind(**{f.name: sample(hints[f.name], session_id) for f in dataclasses.fields(kind)})


def new_session():
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in ROSTER}
    return build(ROSTER, inputs, SeededRandomSource(b"states"), {"threshold": 2})


def spec(index=0):
    return AggregationSpec.from_lengths(index, CHUNKS, 1)


def client_in(state):
    """A fresh session whose client 0 is in `state`."""
    session = new_session()
    client = session.clients[0]
    if state == "aborted":
        with pytest.raises(ProtocolError):
            client.handle(sample(SERVER_MESSAGES[-1], session.config.session_id))
        return session, client
    out = session.server.begin(spec())
    while client.state != state:
        out = session.server.handle(deliver(session, out))
        assert not isinstance(out, AggregateResult) or state == "completed"
        if isinstance(out, AggregateResult):
            break
    assert client.state == state
    return session, client


def server_in(state):
    session = new_session()
    server = session.server
    if state == "idle":
        return session, server
    if state == "aborted":
        with pytest.raises(ProtocolError):
            server.handle({})
        return session, server
    out = server.begin(spec())
    while server.state != state:
        out = server.handle(deliver(session, out))
    return session, server


@pytest.mark.parametrize("state", CLIENT_STATES)
def test_client_refuses_every_pair_outside_its_table(state):
    for kind in ALL_MESSAGES:
        if (state, kind) in CLIENT_TRANSITIONS:
            continue
        session, client = client_in(state)
        with pytest.raises(ProtocolError, match="not expected"):
            client.handle(sample(kind, session.config.session_id))
        assert client.state == "aborted"
        # an aborted client stays aborted: even a well-formed request is refused
        with pytest.raises(ProtocolError):
            client.handle(sample(SERVER_MESSAGES[0], session.config.session_id))


def test_client_table_covers_every_round():
    states = {state for state, _ in CLIENT_TRANSITIONS}
    assert states == set(CLIENT_STATES) - {"aborted"}
    assert {kind for _, kind in CLIENT_TRANSITIONS} == set(SERVER_MESSAGES)


@pytest.mark.parametrize("state", SERVER_STATES)
def test_server_refuses_every_reply_outside_its_table(state):
    expected = dict(zip(ROUND_STATES, CLIENT_MESSAGES, strict=True))
    for kind in ALL_MESSAGES:
        if expected.get(state) is kind:
            continue
        session, server = server_in(state)
        with pytest.raises(ProtocolError):
            server.handle({0: sample(kind, session.config.session_id)})
        assert server.state == "aborted"


@pytest.mark.parametrize("state", [*ROUND_STATES, "aborted"])
def test_server_refuses_begin_during_a_round(state):
    _, server = server_in(state)
    with pytest.raises(ProtocolError):
        server.begin(spec(5))
    assert server.state == "aborted"


def test_server_refuses_a_stale_aggregation_index():
    session, server = server_in("completed")
    with pytest.raises(ProtocolError, match="increase"):
        server.begin(spec(0))
    assert server.state == "aborted"


def test_server_refuses_replies_from_clients_it_did_not_ask():
    session, server = server_in("consistency-check")
    with pytest.raises(ProtocolError, match="not asked"):
        server.handle({7: sample(CLIENT_MESSAGES[3], session.config.session_id)})
