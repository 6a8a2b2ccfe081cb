"""The abort message: a refusing client is dropped, a failing aggregation is aborted for all."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive.messages import ConsistencyRequest
from fedprllm_secure.secure_sum.api import (
    AggregateResult,
    AggregationAborted,
    AggregationSpec,
    ClientRefused,
)
from fedprllm_secure.secure_sum.messages import (
    ABORT_AGGREGATION,
    ABORT_INPUT,
    ABORT_REFUSED,
    Abort,
    abort_message,
    decode,
    encode,
)
from tests.tools.additive_harness import build

ROSTER = (0, 1, 2, 3)
CHUNKS = {"a": 6, "b": 4}


def new_session(bad=None):
    """Client `bad[0]` sends 2 (bound 1) for chunk `bad[1]`: it refuses its own input there."""

    def provider(c):
        def read(index, chunk):
            value = 2 if bad == (c, chunk.name, index) else c % 2
            return np.full(chunk.length, value, dtype=np.uint8)

        return read

    inputs = {c: provider(c) for c in ROSTER}
    return build(ROSTER, inputs, SeededRandomSource(b"abort"), {"threshold": 3})


def spec(index=0):
    return AggregationSpec.from_lengths(index, CHUNKS, 1)


def deliver(session, outgoing, tamper=lambda c, m: m):
    """Through the codec; a refusing client's Abort goes to the server like any reply."""
    replies = {}
    for client, msg in outgoing.items():
        try:
            reply = session.clients[client].handle(decode(encode(tamper(client, msg))))
        except ClientRefused as exc:
            reply = exc.reply
        if reply is not None:
            replies[client] = decode(encode(reply))
    return replies


def run(session, aggregation, tamper=lambda c, m: m):
    out = session.server.begin(aggregation)
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out, tamper))
    return out


def test_the_abort_message_has_the_documented_wire_format():
    """protocols/additive.md section 4, "Abort": written out by hand, not by the codec."""

    def text(s):
        return struct.pack(">I", len(s)) + s

    expected = (
        b"FPSM\x01"
        + text(b"secure-sum/abort")
        + text(b"\x01" * 32)
        + text(b"\x07")
        + text(b"refused")
        + text(b"no")
    )
    msg = Abort(b"\x01" * 32, 7, ABORT_REFUSED, "no")
    assert encode(msg) == expected and decode(expected) == msg
    assert encode(Abort(b"", -1, "", ""))[-13:] == text(b"\xff") + text(b"") + text(b"")
    long = abort_message(b"", 0, ABORT_REFUSED, "a\nb " * 400)
    assert "\n" not in long.text and len(long.text) == 500


def test_a_client_refusing_its_input_is_dropped_and_the_others_are_summed():
    session = new_session(bad=(3, "a", 0))
    result = run(session, spec(0))
    assert result.contributors == (0, 1, 2)
    assert all(np.array_equal(result.sums[n], np.full(k, 1)) for n, k in CHUNKS.items())
    assert session.clients[3].state == "aborted"
    assert list(session.server.dropped) == [3]
    assert "lies outside" in session.server.dropped[3]


def test_the_refusal_carries_the_abort_it_sends():
    session = new_session(bad=(3, "a", 0))
    out = session.server.begin(spec(0))
    out = session.server.handle(deliver(session, out))
    out = session.server.handle(deliver(session, out))
    with pytest.raises(ClientRefused, match="lies outside") as refused:
        session.clients[3].handle(out[3])
    reply = refused.value.reply
    assert (reply.session_id, reply.aggregation, reply.code) == (
        session.config.session_id,
        0,
        ABORT_INPUT,
    )
    with pytest.raises(ProtocolError, match="not expected"):  # aborted for good
        session.clients[3].handle(out[3])


def test_a_survivor_refusing_to_sign_is_summed_and_never_asked_again():
    """Client 3 refuses the (tampered) consistency request: its masked input is already in the
    sum, so it stays a contributor; it is left out of every later aggregation."""
    session = new_session()

    def tamper(client, msg):
        if client == 3 and type(msg) is ConsistencyRequest:
            return dataclasses.replace(msg, aggregation=msg.aggregation + 1)
        return msg

    first = run(session, spec(0), tamper)
    assert first.contributors == ROSTER
    assert np.array_equal(first.sums["a"], np.full(6, 2))
    assert "another aggregation" in session.server.dropped[3]
    out = session.server.begin(spec(1))
    assert sorted(out) == [0, 1, 2]
    second = session.server.handle(deliver(session, out))
    while not isinstance(second, AggregateResult):
        second = session.server.handle(deliver(session, second))
    assert second.contributors == (0, 1, 2)


def test_a_client_refusing_mid_stream_aborts_the_aggregation_for_everyone():
    session = new_session(bad=(2, "b", 0))
    out = session.server.begin(spec(0))
    with pytest.raises(AggregationAborted, match="middle of the masked-input stream") as aborted:
        while not isinstance(out, AggregateResult):
            out = session.server.handle(deliver(session, out))
    assert session.server.state == "aborted"
    notices = aborted.value.notices
    assert sorted(notices) == list(ROSTER)
    assert {(n.code, n.aggregation) for n in notices.values()} == {(ABORT_AGGREGATION, 0)}
    # told, every client stops and forgets its secrets; it answers nothing, ever
    for c, notice in notices.items():
        assert session.clients[c].handle(decode(encode(notice))) is None
        assert session.clients[c].state == "aborted"
        assert not hasattr(session.clients[c].current, "secrets")
    with pytest.raises(ProtocolError):
        session.clients[0].handle(out[0])


def test_an_abort_outside_the_round_aborts_the_aggregation():
    for forge, match in (
        (lambda m: abort_message(m.session_id, 5, ABORT_REFUSED, "x"), "another aggregation"),
        (lambda m: abort_message(bytes(32), 0, ABORT_REFUSED, "x"), "another session"),
    ):
        session = new_session()
        out = session.server.begin(spec(0))
        out = session.server.handle(deliver(session, out))
        replies = deliver(session, out)
        replies[1] = forge(replies[1])
        with pytest.raises(AggregationAborted, match=match):
            session.server.handle(replies)
    session = new_session()
    out = session.server.begin(spec(0))
    replies = deliver(session, out)
    replies[9] = abort_message(session.config.session_id, 0, ABORT_REFUSED, "x")
    with pytest.raises(AggregationAborted, match="not asked"):
        session.server.handle(replies)


def test_a_refusal_is_a_drop_not_a_reply_of_the_round():
    """Dropping counts against the quorum like silence: three refusals of four abort."""
    session = new_session()
    out = session.server.begin(spec(0))
    replies = deliver(session, out)
    for c in (1, 2):
        replies[c] = abort_message(session.config.session_id, 0, ABORT_REFUSED, "no")
    with pytest.raises(AggregationAborted, match="below the threshold"):
        session.server.handle(replies)
