"""A cheating server (and cheating clients): every attack ends in a ProtocolError, never a sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.layout import WordLayout
from fedprllm_secure.secure_sum.additive.messages import (
    ConsistencyRequest,
    MaskedInputRequest,
    Share,
    ShareKeysRequest,
    Signature,
    SignedKeys,
    UnmaskRequest,
)
from fedprllm_secure.secure_sum.additive.transcript import survivors_payload
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec, config_digest
from fedprllm_secure.secure_sum.packing import pack_uint, unpack_uint
from tests.tools.additive_harness import build, deliver, run

ROSTER = (0, 1, 2, 3)
CHUNKS = {"a": 6, "b": 4}


def new_session(threshold=3, seed=b"malicious"):
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in ROSTER}
    return build(ROSTER, inputs, SeededRandomSource(seed), {"threshold": threshold})


def spec(index=0):
    return AggregationSpec.from_lengths(index, CHUNKS, 1)


def drive_until(session, state, out=None, drop=lambda c, m: False):
    """Run honestly until the server is in `state`; return the messages it is about to send."""
    out = session.server.begin(spec()) if out is None else out
    while session.server.state != state:
        out = session.server.handle(deliver(session, out, drop))
    return out


def expect_refusal(client, msg, match):
    with pytest.raises(ProtocolError, match=match):
        client.handle(msg)
    assert client.state == "aborted"


# --- alive and dead -----------------------------------------------------------------------------


def test_request_naming_a_peer_alive_and_dead_is_refused():
    session = new_session()
    out = drive_until(session, "unmasking")
    request = out[0]
    forged = dataclasses.replace(request, dead=(1,))  # 1 is also a survivor
    expect_refusal(session.clients[0], forged, "both alive and dead")


def test_request_asking_for_both_shares_of_a_dropped_peer_by_moving_it_is_refused():
    """Dropping a survivor from the list to get its key share contradicts the signed list."""
    session = new_session()
    out = drive_until(session, "unmasking")
    forged = dataclasses.replace(out[0], survivors=(0, 2, 3), dead=(1,))
    expect_refusal(session.clients[0], forged, "differs from the one I signed")


def test_request_declaring_the_recipient_dead_is_refused():
    session = new_session()
    out = drive_until(session, "unmasking", drop=lambda c, m: c == 3)
    forged = dataclasses.replace(out[0], dead=(0, 3))
    with pytest.raises(ProtocolError):
        session.clients[0].handle(forged)


def test_dead_list_must_match_the_peers_that_shared_keys():
    session = new_session()
    gone = set()

    def drop(c, m):
        if c == 3 and type(m) is MaskedInputRequest:
            gone.add(c)
        return c in gone

    out = drive_until(session, "unmasking", drop=drop)
    assert out[0].dead == (3,)
    expect_refusal(session.clients[0], dataclasses.replace(out[0], dead=()), "disagrees")


# --- inconsistent survivor lists ----------------------------------------------------------------


def test_inconsistent_survivor_lists_are_caught_by_the_signatures():
    session = new_session()
    out = drive_until(session, "consistency-check")
    sid = session.config.session_id
    split = {0: (0, 1, 2), 1: (0, 1, 2), 2: (0, 2, 3), 3: (0, 2, 3)}
    signatures = {}
    for c, survivors in split.items():
        if c not in survivors:
            continue
        reply = session.clients[c].handle(ConsistencyRequest(sid, 0, survivors))
        signatures[c] = reply.signature
    # client 0 signed (0, 1, 2); feed it the signatures of everyone, some over the other list
    request = UnmaskRequest(
        sid, 0, (0, 1, 2), (3,), tuple(signatures[c] for c in sorted(signatures)), ()
    )
    assert out  # the honest consistency requests were replaced by the forged ones
    expect_refusal(session.clients[0], request, "non-survivor|bad consistency signature")


def test_too_few_consistency_signatures_are_refused():
    session = new_session()
    out = drive_until(session, "unmasking")
    forged = dataclasses.replace(out[0], signatures=out[0].signatures[:2])
    expect_refusal(session.clients[0], forged, "below the quorum")


def test_a_forged_consistency_signature_is_refused():
    session = new_session()
    out = drive_until(session, "unmasking")
    sigs = list(out[0].signatures)
    sigs[1] = Signature(sigs[1].signer, bytes(64))
    expect_refusal(session.clients[0], dataclasses.replace(out[0], signatures=tuple(sigs)), "bad")


def test_signature_over_another_aggregation_does_not_verify():
    session = new_session()
    out = drive_until(session, "unmasking")
    binding = config_digest(session.config)
    key = P.Ed25519PrivateKey.from_private_bytes(session.identities[1])
    fresh = P.sign(key, survivors_payload(binding, 0, out[0].survivors))
    assert fresh == next(s.signature for s in out[0].signatures if s.signer == 1)  # control
    stale = P.sign(key, survivors_payload(binding, 7, out[0].survivors))
    sigs = tuple(Signature(1, stale) if s.signer == 1 else s for s in out[0].signatures)
    expect_refusal(session.clients[0], dataclasses.replace(out[0], signatures=sigs), "bad")


# --- replay ------------------------------------------------------------------------------------


def test_replayed_chunk_request_is_refused():
    session = new_session()
    out = drive_until(session, "masked-input")
    session.clients[0].handle(out[0])
    expect_refusal(session.clients[0], out[0], "out of order")


def test_replayed_share_keys_request_from_an_earlier_aggregation_is_refused():
    session = new_session()
    first = drive_until(session, "share-keys")
    old = first[0]
    out = first
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))
    expect_refusal(session.clients[0], old, "not fresh")


def test_relayed_share_from_an_earlier_aggregation_fails_authentication():
    session = new_session()
    out = drive_until(session, "masked-input")
    old_sealed = out[0].sealed
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))
    out = session.server.begin(spec(1))
    out = session.server.handle(deliver(session, out))  # share-keys replies -> chunk requests
    forged = dataclasses.replace(out[0], sealed=old_sealed)
    expect_refusal(session.clients[0], forged, "fails authentication")


def test_replayed_unmask_request_is_refused_after_completion():
    session = new_session()
    out = drive_until(session, "unmasking")
    session.clients[0].handle(out[0])
    expect_refusal(session.clients[0], out[0], "not expected")


def test_message_for_another_session_is_refused():
    session = new_session()
    out = drive_until(session, "share-keys")
    forged = dataclasses.replace(out[0], session_id=bytes(32))
    expect_refusal(session.clients[0], forged, "another session")


# --- tampering --------------------------------------------------------------------------------


def test_tampered_relayed_share_is_refused():
    session = new_session()
    out = drive_until(session, "masked-input")
    sealed = list(out[0].sealed)
    ct = bytearray(sealed[0].ciphertext)
    ct[5] ^= 1
    sealed[0] = dataclasses.replace(sealed[0], ciphertext=bytes(ct))
    forged = dataclasses.replace(out[0], sealed=tuple(sealed))
    expect_refusal(session.clients[0], forged, "fails authentication")


def test_share_redirected_to_another_recipient_is_refused():
    session = new_session()
    out = drive_until(session, "masked-input")
    # give client 0 the share that client 1 sent to client 2 (relabelled)
    theirs = [s for s in out[2].sealed if s.sender == 1][0]
    sealed = tuple(
        dataclasses.replace(theirs, recipient=0) if s.sender == 1 else s for s in out[0].sealed
    )
    expect_refusal(
        session.clients[0], dataclasses.replace(out[0], sealed=sealed), "fails authentication"
    )


def test_tampered_unmask_share_from_a_client_never_yields_a_wrong_sum():
    session = new_session(threshold=4)
    out = drive_until(session, "unmasking")
    replies = deliver(session, out)
    bad = replies[2]
    shares = list(bad.self_mask_shares)
    value = bytearray(shares[0].value)
    value[-1] ^= 1
    shares[0] = Share(shares[0].owner, bytes(value))
    replies[2] = dataclasses.replace(bad, self_mask_shares=tuple(shares))
    with pytest.raises(ProtocolError, match="commitment|not a 32-byte"):
        session.server.handle(replies)
    assert session.server.state == "aborted"


def test_client_masking_out_of_range_is_caught_when_the_sum_exceeds_its_bound():
    session = new_session()
    out = drive_until(session, "masked-input")
    replies = deliver(session, out)
    reply = replies[1]
    # 4 clients: radix 5, 27 entries per 64-bit word. Adding 2 to every entry's digit pushes a
    # digit sum of up to 4 past 4: a carry (or a digit above the bound) shows in the unmasked sum
    layout = WordLayout.for_max_sum(4)
    words = layout.words(CHUNKS["a"])
    y = unpack_uint(reply.data, layout.bits, words)
    y += layout.pack(np.full(CHUNKS["a"], 2, dtype=np.uint64))
    replies[1] = dataclasses.replace(reply, data=pack_uint(y, layout.bits))
    out = session.server.handle(replies)
    with pytest.raises(ProtocolError, match="cheated"):
        while not isinstance(out, AggregateResult):
            out = session.server.handle(deliver(session, out))


# --- unknown, duplicate and Sybil clients ------------------------------------------------------


def test_key_list_with_an_unknown_client_is_refused():
    session = new_session()
    out = drive_until(session, "share-keys")
    keys = (*out[0].keys, SignedKeys(99, bytes(32), bytes(64)))
    expect_refusal(session.clients[0], dataclasses.replace(out[0], keys=keys), "not on the roster")


def test_key_list_with_a_duplicate_client_is_refused():
    session = new_session()
    out = drive_until(session, "share-keys")
    keys = (out[0].keys[0], *out[0].keys)
    expect_refusal(session.clients[0], dataclasses.replace(out[0], keys=keys), "ascending")


def test_sybil_keys_without_the_roster_signature_are_refused():
    session = new_session()
    out = drive_until(session, "share-keys")
    rng = SeededRandomSource(b"sybil")
    fake = P.public_bytes(P.new_x25519(rng))
    keys = tuple(SignedKeys(k.owner, fake, k.signature) if k.owner == 1 else k for k in out[0].keys)
    expect_refusal(session.clients[0], dataclasses.replace(out[0], keys=keys), "bad signature")


def test_substituted_mask_key_is_refused():
    """The server cannot swap in a mask key it knows (it would then strip that pairwise mask)."""
    session = new_session()
    out = drive_until(session, "masked-input")
    fake = P.public_bytes(P.new_x25519(SeededRandomSource(b"swap")))
    keys = tuple(
        dataclasses.replace(k, mask_public=fake) if k.owner == 1 else k for k in out[0].mask_keys
    )
    expect_refusal(session.clients[0], dataclasses.replace(out[0], mask_keys=keys), "bad signature")


def test_mask_key_signed_for_another_aggregation_is_refused():
    session = new_session()
    out = drive_until(session, "masked-input")
    old_keys = out[0].mask_keys
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))
    out = session.server.handle(deliver(session, session.server.begin(spec(1))))
    expect_refusal(
        session.clients[0], dataclasses.replace(out[0], mask_keys=old_keys), "bad signature"
    )


def test_server_refuses_a_reply_from_an_unknown_client():
    session = new_session()
    out = session.server.begin(spec())
    replies = deliver(session, out)
    replies[42] = replies[0]
    with pytest.raises(ProtocolError, match="not asked"):
        session.server.handle(replies)


def test_server_refuses_a_client_speaking_for_another():
    session = new_session()
    out = session.server.begin(spec())
    replies = deliver(session, out)
    replies[1] = replies[0]
    with pytest.raises(ProtocolError, match="bad signature"):
        session.server.handle(replies)


# --- too few survivors ------------------------------------------------------------------------


def test_too_few_survivors_in_the_consistency_request_is_refused():
    session = new_session()
    drive_until(session, "consistency-check")
    forged = ConsistencyRequest(session.config.session_id, 0, (0, 1))
    expect_refusal(session.clients[0], forged, "below the quorum")


def test_key_list_below_threshold_is_refused():
    session = new_session()
    out = drive_until(session, "share-keys")
    forged = dataclasses.replace(out[0], keys=out[0].keys[:2])
    expect_refusal(session.clients[0], forged, "below the threshold")


@pytest.mark.parametrize(
    "round_name", ["advertise-keys", "share-keys", "masked-input", "consistency-check", "unmasking"]
)
def test_dropouts_below_threshold_abort_cleanly_at_every_round(round_name):
    session = new_session(threshold=3)
    with pytest.raises(ProtocolError, match="below the threshold|cannot recover"):
        run(session, spec(), drop_at={1: round_name, 2: round_name})
    assert session.server.state == "aborted"


def test_a_dead_client_never_participates_again():
    session = new_session(threshold=3)
    gone: set[int] = set()
    first = run(session, spec(0), drop_at={3: "masked-input"}, gone=gone)
    assert first.contributors == (0, 1, 2)
    # even if client 3 comes back, the server does not ask it and honest peers refuse it
    gone.clear()
    out = session.server.begin(spec(1))
    assert 3 not in out and all(3 not in {k.owner for k in m.keys} for m in out.values())
    forged_keys = tuple(sorted((*out[0].keys, session.server.keys[3]), key=lambda k: k.owner))
    expect_refusal(
        session.clients[0],
        ShareKeysRequest(out[0].session_id, 1, out[0].spec, forged_keys),
        "declared dead",
    )
