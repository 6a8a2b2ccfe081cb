"""Typed protocol state of `ckks` and `plaintext`: frozen states, pure transitions, whole-state
saves through the strict codec (the key authority's record included), nothing local saved."""

from __future__ import annotations

import dataclasses

import pytest

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.secure_sum import plaintext
from fedprllm_secure.secure_sum.api import AggregationSpec, SessionConfig, load_state, save_state
from fedprllm_secure.secure_sum.ckks.authority import AuthorityLink, AuthorityRecord
from fedprllm_secure.secure_sum.ckks.client_state import Ready, SavedClient, SignedChunk
from fedprllm_secure.secure_sum.ckks.messages import DecryptRequest
from fedprllm_secure.secure_sum.ckks.server import CkksServer
from fedprllm_secure.secure_sum.ckks.settings import AUTHORITY_LINK

from .test_abort_messages import LENGTHS, ROSTER, build, provider


def test_a_designated_authority_keeps_its_record_across_a_restore() -> None:
    """The authority's record (chunk names used) is part of the saved client: restored after a
    decryption, it refuses the same chunk again."""
    config, server, clients = build("ckks", authority=0)
    requests = server.begin(AggregationSpec.from_lengths(0, {"a": 40}, 1))
    (request,) = server.handle({c: clients[c].handle(requests[c]) for c in ROSTER}).values()
    assert isinstance(request, DecryptRequest)
    authority = clients[0]
    authority.handle(request)
    restored = type(authority).from_state(authority.to_state(), provider(0), None)
    assert restored.state == "ready"
    with pytest.raises(ProtocolError, match="already decrypted"):
        restored.handle(request)


def test_a_saved_client_is_its_frozen_state_and_holds_no_local_option() -> None:
    config, server, clients = build("ckks")
    assert isinstance(config.options[AUTHORITY_LINK], AuthorityLink)
    requests = server.begin(AggregationSpec.from_lengths(0, {"a": 40}, 1))
    clients[1].handle(requests[1])
    saved = load_state("ckks", clients[1].to_state(), SavedClient)
    assert AUTHORITY_LINK not in saved.config.options  # the server's link is no client's
    assert saved.config.options == {
        k: v for k, v in config.options.items() if not k.startswith("local.")
    }
    assert isinstance(saved.state, Ready) and saved.state.authority == AuthorityRecord()
    (record,) = saved.state.signed.values()
    assert isinstance(record, SignedChunk) and len(record.digest) == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        saved.state.signed = {}  # type: ignore[misc]
    # A blob whose state is not a ckks client state is refused, not half restored.
    wrong = dataclasses.replace(saved, state=Ready())
    object.__setattr__(wrong, "state", AuthorityRecord())
    with pytest.raises(ProtocolError):
        type(clients[1]).from_state(save_state("ckks", wrong), provider(1), None)
    with pytest.raises(ProtocolError):
        type(clients[1]).from_state(save_state("plaintext", saved), provider(1), None)


def test_the_server_takes_its_authority_link_in_its_constructor() -> None:
    config, _server, _clients = build("ckks")
    link = config.options[AUTHORITY_LINK]
    with pytest.raises(ProtocolError, match="none is linked"):
        CkksServer(config, None)
    assert CkksServer(config, link).state == "idle"
    designated, _, _ = build("ckks", authority=1)
    with pytest.raises(ConfigError, match="takes no link"):
        CkksServer(designated, link)


def test_server_transitions_are_pure() -> None:
    """The same step from the same state gives the same result and leaves the state as it was."""
    config = SessionConfig(b"p" * 32, ROSTER)
    spec = AggregationSpec.from_lengths(0, LENGTHS, 1)
    start = plaintext.Idle(frozenset(ROSTER))
    collecting, requests = plaintext.server_begin(config, start, spec)
    replies = {c: plaintext.PlaintextClient(config, c, provider(c)).handle(requests[c])
               for c in (0, 1)}  # fmt: skip
    first = plaintext.server_step(config, collecting, replies)
    second = plaintext.server_step(config, collecting, replies)
    assert first[0] == second[0] and collecting.received == ()
    assert first[0].alive == frozenset({0, 1}) and len(first[0].received) == 1
