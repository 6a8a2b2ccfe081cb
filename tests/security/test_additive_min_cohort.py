"""The minimum cohort of `additive` is enforced by the clients that release shares, not only by
the server (issue 12, item 4): a server that skips its own check still gets no sum over fewer
than `min_contributors` clients."""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive.messages import ConsistencyRequest
from fedprllm_secure.secure_sum.api import AggregationSpec
from fedprllm_secure.secure_sum.registry import get
from tests.tools.additive_harness import build, deliver, run

N = 9  # complete graph, default t = 7 = quorum


def session(min_contributors: int):
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in range(N)}
    options = {"min_contributors": min_contributors}
    return build(tuple(range(N)), inputs, SeededRandomSource(b"min-cohort"), options)


def test_clients_refuse_to_sign_a_survivor_list_below_the_minimum_cohort():
    """The server drops two clients from the list (7 >= t and >= the quorum, < 8): each client
    refuses it by itself, so no signature and no share is ever released."""
    s = session(min_contributors=8)
    assert s.server.params.quorum == 7
    spec = AggregationSpec.from_lengths(0, {"w": 4}, 1)
    out = s.server.begin(spec)
    while s.server.state != "consistency-check":
        out = s.server.handle(deliver(s, out))
    short = tuple(range(7))  # what a server ignoring its own minimum cohort would ask to sign
    for c in short:
        with pytest.raises(ProtocolError, match="below the minimum cohort of 8"):
            s.clients[c].handle(ConsistencyRequest(s.config.session_id, 0, short))
        assert s.clients[c].state == "aborted"


def test_the_same_list_is_signed_when_the_minimum_cohort_allows_it():
    """Control: with min_contributors 7 the same request is signed (the refusal above is the
    cohort check, nothing else)."""
    s = session(min_contributors=7)
    spec = AggregationSpec.from_lengths(0, {"w": 4}, 1)
    out = s.server.begin(spec)
    while s.server.state != "consistency-check":
        out = s.server.handle(deliver(s, out))
    short = tuple(range(7))
    reply = s.clients[0].handle(ConsistencyRequest(s.config.session_id, 0, short))
    assert reply.signature.signer == 0


def test_the_honest_server_aborts_too_and_drivers_set_the_option_from_the_cohort():
    s = session(min_contributors=8)
    spec = AggregationSpec.from_lengths(0, {"w": 4}, 1)
    with pytest.raises(ProtocolError, match="minimum cohort of 8"):
        run(s, spec, drop_at={7: "masked-input", 8: "masked-input"})
    info = get("additive")
    assert info.cohort_option == "min_contributors"
    assert info.with_cohort({}, 5) == {"min_contributors": 5}
