"""Every `additive` signature and key derivation binds the whole session config (issue 12, item
5): a client shown another config than its peers (another threshold, cohort or key) refuses
them at the first cross-check, so a server cannot run different parameters past different
clients."""

from __future__ import annotations

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import enroll
from fedprllm_secure.secure_sum.additive.client import AdditiveClient
from fedprllm_secure.secure_sum.additive.messages import AdvertiseRequest, ShareKeysRequest
from fedprllm_secure.secure_sum.additive.transcript import graph_seed
from fedprllm_secure.secure_sum.api import AggregationSpec, SessionConfig, config_digest

ROSTER = (0, 1, 2, 3)


def clients_with(change: dict) -> tuple[dict[int, AdditiveClient], SessionConfig]:
    """Client 1 gets the session config with `change` applied; the others get the real one."""
    rng = SeededRandomSource(b"binding")
    config, identities = enroll(SessionConfig(bytes(range(32)), ROSTER, {}), rng.child("enroll"))
    other = SessionConfig(config.session_id, config.roster, {**config.options, **change})
    inputs = lambda i, ch: np.zeros(ch.length, dtype=np.uint8)  # noqa: E731
    clients = {
        c: AdditiveClient(other if c == 1 else config, c, rng.child(f"c{c}"), inputs, identities[c])
        for c in ROSTER
    }
    return clients, config


def share_request_for_1(clients, config):
    advertised = {
        # each client the graph seed of its own config (a server adapting to each one)
        c: client.handle(AdvertiseRequest(config.session_id, 0, graph_seed(client.binding))).keys
        for c, client in clients.items()
    }
    spec = AggregationSpec.from_lengths(0, {"w": 4}, 1)
    keys = tuple(advertised[c] for c in ROSTER)
    return ShareKeysRequest(config.session_id, 0, spec, keys)


@pytest.mark.parametrize("change", [{"threshold": 4}, {"min_contributors": 4}])
def test_a_client_shown_another_config_refuses_its_peers(change):
    clients, config = clients_with(change)
    assert config_digest(clients[1].config) != config_digest(config)
    with pytest.raises(ProtocolError, match="bad signature on the keys"):
        clients[1].handle(share_request_for_1(clients, config))


def test_control_the_same_config_is_accepted():
    clients, config = clients_with({})
    reply = clients[1].handle(share_request_for_1(clients, config))
    assert reply.sender == 1
