"""The explicit abort message of `ckks` and `plaintext`: a client that refuses tells the server
with an `Abort` and the server drops that client only; a server that aborts the aggregation tells
every live client. The two are distinct: a refusal never aborts the others' sum."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.secure_sum.api import (
    AggregationAborted,
    AggregationSpec,
    ClientProtocol,
    ClientRefused,
    SessionConfig,
)
from fedprllm_secure.secure_sum.driver import drive
from fedprllm_secure.secure_sum.messages import (
    ABORT_AGGREGATION,
    ABORT_INPUT,
    Abort,
    decode,
    encode,
)

LENGTHS = {"a": 40, "b": 25}
ROSTER = (0, 1, 2, 3)
REFUSER = 3


def vectors(client: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(client)
    return {name: rng.integers(0, 2, n).astype(np.uint8) for name, n in LENGTHS.items()}


def provider(client: int):
    """Client REFUSER's chunk "b" lies outside [0, bound]: it refuses its own input."""

    def read(index: int, chunk: Any) -> np.ndarray:
        vector = vectors(client)[chunk.name]
        return vector + 5 if (client, chunk.name) == (REFUSER, "b") else vector

    return read


def build(protocol: str, **options: Any):
    info = registry.get(protocol)
    rng = SeededRandomSource(f"abort-{protocol}")
    draft = SessionConfig(rng.random_bytes(32), ROSTER, options)
    config, identities = info.enroll(draft, rng.child("enroll"))
    clients = {
        c: info.make_client(config, c, rng.child(f"c{c}"), provider(c), identities.get(c))
        for c in ROSTER
    }
    return config, info.make_server(config, rng.child("server")), clients


def delivering(clients: Mapping[int, ClientProtocol], refusals: list[Abort]):
    """A transport that sends a refusing client's `Abort` to the server (through the codec)."""

    def deliver(outgoing: Mapping[int, Any]) -> dict[int, Any]:
        replies = {}
        for client, message in outgoing.items():
            try:
                reply = clients[client].handle(decode(encode(message)))
            except ClientRefused as refused:
                refusals.append(refused.reply)
                reply = refused.reply
            if reply is not None:
                replies[client] = decode(encode(reply))
        return replies

    return deliver


@pytest.mark.parametrize(
    "protocol, options",
    [("plaintext", {}), ("ckks", {}), ("ckks", {"authority": 0, "he_scheme": "bfv"})],
)
def test_a_refusing_client_is_dropped_and_the_others_are_summed(protocol: str, options) -> None:
    config, server, clients = build(protocol, **options)
    refusals: list[Abort] = []
    spec = AggregationSpec.from_lengths(0, LENGTHS, 1)
    result = drive(server, spec, delivering(clients, refusals))
    assert result.contributors == (0, 1, 2)
    for name in LENGTHS:
        expected = sum(vectors(c)[name].astype(np.int64) for c in (0, 1, 2))
        assert result.sums[name].astype(np.int64).tolist() == expected.tolist()
    (abort,) = refusals
    assert (abort.session_id, abort.aggregation, abort.code) == (config.session_id, 0, ABORT_INPUT)
    assert clients[REFUSER].state == "aborted"
    assert server.state == "idle"


@pytest.mark.parametrize("protocol", ["plaintext", "ckks"])
def test_a_malformed_reply_aborts_the_aggregation_and_notifies_every_live_client(
    protocol: str,
) -> None:
    config, server, clients = build(protocol)
    spec = AggregationSpec.from_lengths(0, LENGTHS, 1)
    requests = server.begin(spec)
    replies = {c: clients[c].handle(requests[c]) for c in (0, 1)}
    replies[2] = replies[1]  # client 2 replays client 1's reply: not its own
    with pytest.raises(AggregationAborted) as caught:
        server.handle(replies)
    assert server.state == "aborted"
    notices = caught.value.notices
    assert set(notices) == set(ROSTER)
    assert {(n.session_id, n.aggregation, n.code) for n in notices.values()} == {
        (config.session_id, 0, ABORT_AGGREGATION)
    }
    # A client told of the abort stops: it answers nothing now and refuses what comes later.
    notice = decode(encode(notices[0]))
    assert clients[0].handle(notice) is None
    assert clients[0].state == "aborted"
    with pytest.raises(ClientRefused):
        clients[0].handle(requests[0])
    with pytest.raises(ProtocolError, match="aborted"):  # an aborted session starts nothing
        server.begin(AggregationSpec.from_lengths(1, {"c": 3}, 1))


def test_a_designated_authority_that_refuses_aborts_the_aggregation() -> None:
    """The designated key authority's `Abort` is not a dropout to repair: nobody else can
    decrypt, so the aggregation aborts (with a notice for every live client)."""
    config, server, clients = build("ckks", authority=0)
    spec = AggregationSpec.from_lengths(0, {"a": 40}, 1)
    requests = server.begin(spec)
    request = server.handle({c: clients[c].handle(requests[c]) for c in (0, 1, 2)})
    assert set(request) == {0} and server.state == "decrypting"
    refusal = Abort(config.session_id, 0, "refused", "no")
    with pytest.raises(AggregationAborted, match="refused to decrypt") as caught:
        server.handle({0: refusal})
    assert set(caught.value.notices) == {0, 1, 2}


@pytest.mark.parametrize("protocol", ["plaintext", "ckks"])
def test_an_abort_survives_a_save_and_restore(protocol: str) -> None:
    config, server, clients = build(protocol)
    spec = AggregationSpec.from_lengths(0, {"b": LENGTHS["b"]}, 1)
    requests = server.begin(spec)
    with pytest.raises(ClientRefused, match=r"outside \[0, 1\]") as caught:
        clients[REFUSER].handle(requests[REFUSER])
    assert caught.value.reply.code == ABORT_INPUT
    kind = type(clients[REFUSER])
    restored = kind.from_state(clients[REFUSER].to_state(), provider(REFUSER), None)
    assert restored.state == "aborted"
    with pytest.raises(ClientRefused, match="has aborted"):
        restored.handle(requests[REFUSER])


@pytest.mark.parametrize("protocol", ["plaintext", "ckks"])
@pytest.mark.parametrize("field", ["aggregation", "session_id"])
def test_an_abort_naming_another_aggregation_aborts_it(protocol: str, field: str) -> None:
    """Only a refusal of this very aggregation drops a client; an `Abort` for another one (or
    another session) is a malformed reply, like any other, and aborts the aggregation."""
    config, server, clients = build(protocol)
    requests = server.begin(AggregationSpec.from_lengths(0, LENGTHS, 1))
    replies: dict[int, Any] = {c: clients[c].handle(requests[c]) for c in (0, 1, 2)}
    other = {"aggregation": 1, "session_id": b"\x00" * 32}[field]
    fields = {"session_id": config.session_id, "aggregation": 0, field: other}
    replies[REFUSER] = Abort(code=ABORT_INPUT, text="no", **fields)
    with pytest.raises(AggregationAborted, match="abort for another aggregation"):
        server.handle(replies)
    assert server.state == "aborted"
