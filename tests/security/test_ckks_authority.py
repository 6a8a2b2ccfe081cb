"""Issue 12, item 2: the ckks key authority decrypts only sums of signed uploads, once per chunk.

The attacker is the aggregation server: it holds the public context (it can encrypt anything),
the roster's identity public keys, every upload it collected and the link to the key authority.
Each test plays an attack the old authority answered (it decrypted whatever the server called
an aggregate) and checks that nothing is released now; the last ones check that honest sums,
with dropouts, stay exact under both schemes. tests/mutations/ckks.toml names the protection
each test guards.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tenseal as ts

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.integrations.flower.enrollment import node_enroll, prepare_options, publish
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec, SessionConfig
from fedprllm_secure.secure_sum.ckks import authority as authority_module
from fedprllm_secure.secure_sum.ckks import context as he_ctx
from fedprllm_secure.secure_sum.ckks.authority import AuthorityLink, chunk_request
from fedprllm_secure.secure_sum.ckks.messages import DecryptRequest, EncryptedChunk
from fedprllm_secure.secure_sum.ckks.packing import pack, to_ckks_values
from fedprllm_secure.secure_sum.ckks.params import he_params
from fedprllm_secure.secure_sum.ckks.settings import AUTHORITY_LINK, PUBLIC_CONTEXT
from fedprllm_secure.secure_sum.messages import decode, encode
from fedprllm_secure.secure_sum.packing import bits_for, unpack_uint
from fedprllm_secure.secure_sum.session import SimulatedSession
from fedprllm_secure.secure_sum.transport import InMemoryBus

ROSTER = (0, 1, 2, 3, 4)
VICTIM = 4
LENGTH = 60


def mask(client: int, name: str) -> np.ndarray:
    """Client `client`'s bits for chunk `name` (any name: a client answers what it is asked)."""
    seed = sum(name.encode()) * 1000 + client
    return np.random.default_rng(seed).integers(0, 2, LENGTH).astype(np.uint8)


def provider(client: int):
    return lambda index, chunk: mask(client, chunk.name)[: chunk.length]


class Setup:
    """One ckks session, built without the SimulatedSession ledgers: the clients here model
    nodes whose own records can be lost (a restored old state), so only the authority's rules
    stand between the server and a second decryption."""

    def __init__(self, scheme: str = "ckks", **options) -> None:
        info = registry.get("ckks")
        rng = SeededRandomSource(f"security-{scheme}")
        config = SessionConfig(rng.random_bytes(32), ROSTER, {"he_scheme": scheme, **options})
        self.config, self.identities = info.enroll(config, rng.child("enroll"))
        self.info = info
        self.server = info.make_server(self.config, rng.child("server"))
        self.clients = {c: self.client(c) for c in ROSTER}
        self.link: AuthorityLink = self.config.options.get(AUTHORITY_LINK)
        self.public = he_ctx.load_context(self.config.options[PUBLIC_CONTEXT], private=False)
        self.he = he_params(scheme)

    def client(self, c: int):
        return self.info.make_client(
            self.config, c, SeededRandomSource(c), provider(c), self.identities[c]
        )

    def collect(self, index: int, name: str, clients=ROSTER) -> tuple[DecryptRequest, dict]:
        """The server's honest collection of chunk `name` in aggregation `index`: the signed
        uploads of `clients`, and a well-formed decryption request holding all of them."""
        spec = AggregationSpec.from_lengths(index, {name: LENGTH}, 1)
        requests = self.server.begin(spec)
        uploads = {c: self.clients[c].handle(requests[c]) for c in clients}
        self.server._state = "idle"  # the attacker drives the authority link by hand
        packing = self.server._packing
        request = chunk_request(
            self.config, index, 1, spec.chunks[0], packing, tuple(uploads.values())
        )
        return request, uploads

    def counts(self, reply, clients: int) -> np.ndarray:
        return unpack_uint(reply.counts, bits_for(clients), LENGTH)


def slots_of(setup: Setup, data: bytes) -> int:
    loader = ts.ckks_vector_from if setup.he.scheme == "ckks" else ts.bfv_vector_from
    return loader(setup.public, data).size()


def zero_encryptions(setup: Setup, like: EncryptedChunk) -> tuple[bytes, ...]:
    """What a client with an all-zero vector would upload, shaped like `like`: anyone with the
    public context and the public packing can make it (no signature, though)."""
    packing = setup.server._packing
    packed = pack(np.zeros(LENGTH, dtype=np.uint8), packing.base, packing.per_slot)
    values = to_ckks_values(packed, packing, 1) if packing.centered else packed
    slots = setup.he.slots
    out = tuple(
        he_ctx.encrypt(setup.public, setup.he, values[start : start + slots])
        for start in range(0, values.size, slots)
    )
    assert len(out) == len(like.ciphertexts)
    return out


def refused(setup: Setup, request: DecryptRequest, match: str | None = None) -> None:
    with pytest.raises(ProtocolError, match=match):
        setup.link.request(request)


# -- attack A: encryptions of zero added to the victim's ciphertext ---------------------------


@pytest.mark.parametrize("where", ["same", "new-aggregation", "renamed-chunk"])
def test_attack_a_zero_encryptions_beside_the_victim_release_nothing(where: str) -> None:
    """The old attack: the victim's ciphertext plus n-1 encryptions of zero, presented as the
    sum over the roster. The server can encrypt zeros but cannot sign them for the others: the
    zero 'uploads' carry the signatures the other clients made over their own ciphertexts."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    victim = uploads[VICTIM]
    forged = [
        dataclasses.replace(uploads[c], ciphertexts=zero_encryptions(setup, victim))
        for c in ROSTER
        if c != VICTIM
    ]
    attack = dataclasses.replace(request, uploads=tuple(forged) + (victim,))
    if where == "new-aggregation":
        attack = dataclasses.replace(
            attack,
            aggregation=9,
            uploads=tuple(dataclasses.replace(u, aggregation=9) for u in attack.uploads),
        )
    elif where == "renamed-chunk":
        chunk = ChunkSpec("w-renamed", LENGTH, 0)
        attack = dataclasses.replace(
            attack,
            chunk=chunk,
            uploads=tuple(dataclasses.replace(u, chunk_name=chunk.name) for u in attack.uploads),
        )
    refused(setup, attack, "signature")
    # The victim's upload alone (the rest dropped) is no better: below the minimum cohort.
    refused(setup, dataclasses.replace(request, uploads=(victim,)), "minimum is 3")


def test_attack_a_the_forged_sum_in_the_victims_name_is_refused() -> None:
    """The old attack's aggregate (victim + n-1 zero uploads), put in the victim's upload beside
    n-1 encryptions of the literal zero (which add nothing) in the others' names: every upload's
    ciphertexts differ from what its signature covers."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    victim = uploads[VICTIM]
    zeros = zero_encryptions(setup, victim)
    forged_sum, nothing = [], []
    for data, zero in zip(victim.ciphertexts, zeros, strict=True):
        size = slots_of(setup, data)
        total = he_ctx.load_ciphertext(setup.public, setup.he, data, size)
        for _ in range(len(ROSTER) - 1):
            total = he_ctx.add_into(
                total, he_ctx.load_ciphertext(setup.public, setup.he, zero, size)
            )
        forged_sum.append(he_ctx.serialize(total))
        nothing.append(he_ctx.encrypt(setup.public, setup.he, np.zeros(size)))
    others = tuple(
        dataclasses.replace(uploads[c], ciphertexts=tuple(nothing)) for c in ROSTER if c != VICTIM
    )
    lying = dataclasses.replace(victim, ciphertexts=tuple(forged_sum))
    refused(setup, dataclasses.replace(request, uploads=others + (lying,)), "signature")


# -- attack B: the same chunk decrypted twice, once without the victim ------------------------


def test_attack_b_the_server_cannot_decrypt_a_chunk_again_without_the_victim() -> None:
    """The server holds every signed upload of chunk 'w': after the sum over all five it asks
    for the sum over the four others (same aggregation, then under a renamed chunk)."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    full = setup.link.request(request)
    expected = sum(mask(c, "w").astype(np.int64) for c in ROSTER)
    assert setup.counts(full, 5).tolist() == expected.tolist()
    without = dataclasses.replace(request, uploads=tuple(uploads[c] for c in ROSTER if c != VICTIM))
    refused(setup, without, "already decrypted")


def test_attack_b_a_client_restored_from_an_old_state_cannot_reopen_a_chunk() -> None:
    """Clients whose saved state predates their upload of chunk 'w' (a rolled-back node) sign it
    again in a later aggregation; the server leaves the victim out. The authority decrypts a
    chunk name once per session, whatever the aggregation index."""
    setup = Setup()
    saved = {c: setup.clients[c].to_state() for c in ROSTER}
    request, _ = setup.collect(0, "w")
    setup.link.request(request)
    kind = type(setup.clients[0])
    setup.clients = {c: kind.from_state(saved[c], provider(c), None) for c in ROSTER}
    others = tuple(c for c in ROSTER if c != VICTIM)
    again, _ = setup.collect(1, "w", clients=others)
    refused(setup, again, "already decrypted")


def test_one_aggregation_is_released_over_one_contributor_set() -> None:
    setup = Setup()
    spec = AggregationSpec.from_lengths(0, {"a": LENGTH, "b": LENGTH}, 1)
    first = setup.server.begin(spec)
    uploads_a = {c: setup.clients[c].handle(first[c]) for c in ROSTER}
    second = setup.server.handle(uploads_a)
    uploads_b = {c: setup.clients[c].handle(second[c]) for c in ROSTER}
    packing = setup.server._packing
    setup.link.request(
        chunk_request(setup.config, 0, 1, spec.chunks[0], packing, tuple(uploads_a.values()))
    )
    partial = tuple(uploads_b[c] for c in ROSTER if c != VICTIM)
    refused(
        setup,
        chunk_request(setup.config, 0, 1, spec.chunks[1], packing, partial),
        "different contributor sets",
    )


# -- forged, duplicated, mismatched, foreign uploads ------------------------------------------


def test_a_duplicated_upload_is_not_a_second_signer() -> None:
    """The victim's genuine upload three times would be 3 x its mask: refused, signers must be
    distinct."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    refused(setup, dataclasses.replace(request, uploads=(uploads[VICTIM],) * 3), "distinct")


def test_a_signature_moved_to_another_sender_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    relabeled = tuple(dataclasses.replace(uploads[VICTIM], sender=c) for c in ROSTER if c != VICTIM)
    refused(
        setup, dataclasses.replace(request, uploads=relabeled + (uploads[VICTIM],)), "signature"
    )


def test_a_forged_signature_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    bad = bytes(64)
    forged = tuple(
        dataclasses.replace(u, signature=bad) if u.sender != VICTIM else u for u in request.uploads
    )
    refused(setup, dataclasses.replace(request, uploads=forged), "signature")


def test_a_ciphertext_not_matching_its_signature_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    swapped = tuple(
        dataclasses.replace(u, ciphertexts=uploads[(u.sender + 1) % 5].ciphertexts)
        for u in request.uploads
    )
    refused(setup, dataclasses.replace(request, uploads=swapped), "signature")


def test_a_contributor_not_on_the_roster_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    stranger = dataclasses.replace(uploads[VICTIM], sender=99)
    refused(
        setup, dataclasses.replace(request, uploads=request.uploads[:2] + (stranger,)), "roster"
    )


def test_the_authority_itself_enforces_the_minimum_cohort() -> None:
    """Two genuine, signed uploads: the server's own guard is not involved; the authority (with
    the default minimum of 3) refuses."""
    setup = Setup()
    request, uploads = setup.collect(0, "w", clients=(0, VICTIM))
    assert "min_contributors" not in setup.config.options
    refused(setup, request, "minimum is 3")


def test_a_huge_claimed_length_is_refused_before_anything_is_allocated(monkeypatch) -> None:
    """Item 9: a 134-byte DecryptRequest claiming 2^50 entries. The authority must refuse it by
    counting, never by building anything sized by the claim (the list of ciphertext sizes here,
    whose construction the spy forbids: it would be billions of entries)."""
    setup = Setup()
    real = authority_module.ciphertext_sizes

    def spy(length: int, per_slot: int, slots: int) -> list[int]:
        assert length <= 10**7, "the authority allocated before checking the claimed size"
        return real(length, per_slot, slots)

    monkeypatch.setattr(authority_module, "ciphertext_sizes", spy)
    request, _ = setup.collect(0, "w")
    huge = dataclasses.replace(request, chunk=ChunkSpec("w", 2**50, 0), uploads=())
    wire = encode(huge)
    assert len(wire) < 200
    with pytest.raises(ProtocolError):
        setup.link.request(decode(wire, DecryptRequest))
    # With the uploads kept (each holds one ciphertext, not 2^50 / K / slots): refused too.
    with pytest.raises(ProtocolError, match="ciphertexts"):
        setup.link.request(dataclasses.replace(request, chunk=ChunkSpec("w", 2**50, 0)))


# -- the honest path --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_the_authority_releases_exactly_the_sum_of_the_signed_uploads(scheme: str) -> None:
    """Honest clients, a dropout before the first upload and one in mid-stream: the sums over
    the survivors are exact, and the authority received each survivor's upload once."""
    lengths = {"a": 700, "b": 33, "c": 5}
    inputs = {c: provider_for(c, lengths) for c in ROSTER + (5,)}
    sim = SimulatedSession(
        "ckks",
        inputs,
        SeededRandomSource(f"honest-{scheme}"),
        options={"he_scheme": scheme},
        drop_at={5: "encrypted-input"},
    )
    clients = dict(sim.bus.clients)
    clients[2] = DropsAfter(clients[2], 2)  # uploads a and b, then vanishes
    bus = InMemoryBus(sim.bus.server, clients, drop_at={5: "encrypted-input"})
    spec = AggregationSpec.from_lengths(0, lengths, 1)
    result = bus.run(spec)
    assert result.contributors == (0, 1, 3, 4)
    for name, n in lengths.items():
        expected = sum(inputs[c](0, ChunkSpec(name, n, 0)).astype(np.int64) for c in (0, 1, 3, 4))
        assert result.sums[name].astype(np.int64).tolist() == expected.tolist(), name
    link: AuthorityLink = sim.config.options[AUTHORITY_LINK]
    uploaded = sum(r.nbytes for r in bus.log.received if r.sender in result.contributors)
    # The authority gets every contributor's upload once (the cost of recomputing the sum).
    assert 0.99 * uploaded <= link.bytes_to_authority <= 1.01 * uploaded + 2000


def provider_for(client: int, lengths: dict[str, int]):
    data = {
        name: np.random.default_rng([client, n]).integers(0, 2, n).astype(np.uint8)
        for name, n in lengths.items()
    }
    return lambda index, chunk: data[chunk.name]


class DropsAfter:
    """Answers `answers` messages, then never again (a dropout in the middle of a stream)."""

    def __init__(self, inner, answers: int) -> None:
        self.inner, self.left, self.client_id = inner, answers, inner.client_id

    @property
    def state(self) -> str:
        return self.inner.state

    def handle(self, message: object) -> object | None:
        if self.left <= 0:
            return None
        self.left -= 1
        return self.inner.handle(message)


def test_a_designated_client_authority_applies_the_same_rules() -> None:
    setup = Setup(authority=0)
    assert AUTHORITY_LINK not in setup.config.options
    request, uploads = setup.collect(0, "w")
    authority = setup.clients[0]
    reply = authority.handle(request)
    expected = sum(mask(c, "w").astype(np.int64) for c in ROSTER)
    assert setup.counts(reply, 5).tolist() == expected.tolist()
    fresh = setup.client(0)  # the aborted-on-refusal client is replaced for each attempt
    with pytest.raises(ProtocolError, match="signature"):
        victim = uploads[VICTIM]
        fake = tuple(
            dataclasses.replace(uploads[c], ciphertexts=victim.ciphertexts) for c in (1, 2, 3)
        )
        fresh.handle(dataclasses.replace(request, uploads=fake + (victim,)))


def test_flower_enrollment_gives_every_node_a_signing_key() -> None:
    """The ckks branches of the Flower enrollment: each node makes its own identity key, the
    authority node its TenSEAL keys; a session over the published config sums exactly."""
    roster = (0, 1, 2)
    options = prepare_options("ckks", roster, {})
    draft = SessionConfig(b"f" * 32, roster, options)
    secrets, publics = {}, {}
    for c in roster:
        secrets[c], publics[c] = node_enroll("ckks", draft, c, SeededRandomSource(f"node-{c}"))
    config = publish("ckks", draft, publics)
    assert set(config.options["identity_public_keys"]) == set(roster)
    info = registry.get("ckks")
    inputs = {c: provider_for(c, {"x": 50}) for c in roster}
    clients = {
        c: info.make_client(config, c, SeededRandomSource(c), inputs[c], secrets[c]) for c in roster
    }
    bus = InMemoryBus(info.make_server(config, SeededRandomSource(9)), clients)
    result = bus.run(AggregationSpec.from_lengths(0, {"x": 50}, 1))
    expected = sum(inputs[c](0, ChunkSpec("x", 50, 0)).astype(np.int64) for c in roster)
    assert result.sums["x"].astype(np.int64).tolist() == expected.tolist()
    with pytest.raises(ProtocolError):  # a node that is not the authority sends a context
        publish("ckks", draft, {**publics, 1: publics[0]})
    with pytest.raises(ProtocolError):  # a node sent no identity key
        publish("ckks", draft, {c: p for c, p in publics.items() if c != 2})


def test_a_client_signs_each_chunk_name_once() -> None:
    """A second request for a chunk the client already signed (this aggregation or a later
    one) is refused, so the server never holds two signed uploads of one chunk."""
    setup = Setup()
    spec = AggregationSpec.from_lengths(0, {"w": LENGTH}, 1)
    request = setup.server.begin(spec)[VICTIM]
    setup.clients[VICTIM].handle(request)
    with pytest.raises(ProtocolError, match="already signed"):
        setup.clients[VICTIM].handle(dataclasses.replace(request, aggregation=1))
    restored = type(setup.clients[0]).from_state(setup.clients[0].to_state(), provider(0), None)
    restored.handle(request)
    with pytest.raises(ProtocolError, match="already signed"):  # the record survives a restore
        type(restored).from_state(restored.to_state(), provider(0), None).handle(request)
