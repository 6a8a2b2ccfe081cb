"""Issue 12, item 2: the ckks key authority decrypts only the server's sum, once per chunk, and
only if every signed contributor's one-time pad cancels in it.

Two attackers. The aggregation server holds the public context (it can encrypt anything), the
roster's identity public keys, every upload it collected and the link to the key authority: each
test plays an attack the original authority answered (it decrypted whatever the server called an
aggregate) and checks that nothing is released now. A curious key authority must never receive an
individual client's ciphertext (the previous design, which had the authority recompute the sum
from every upload, gave it each one). The last tests check that honest sums, with dropouts, stay
exact under both schemes. tests/mutations/ckks.toml names the protection each test guards.
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
from fedprllm_secure.secure_sum.api import AggregationSpec, ChunkSpec, SessionConfig, config_digest
from fedprllm_secure.secure_sum.ckks import authority as authority_module
from fedprllm_secure.secure_sum.ckks import context as he_ctx
from fedprllm_secure.secure_sum.ckks.authority import (
    AuthorityLink,
    KeyAuthority,
    chunk_request,
    statement_of,
)
from fedprllm_secure.secure_sum.ckks.messages import DecryptRequest, EncryptedChunk, Statement
from fedprllm_secure.secure_sum.ckks.packing import pack, padded_values
from fedprllm_secure.secure_sum.ckks.params import he_params
from fedprllm_secure.secure_sum.ckks.settings import (
    AUTHORITY_LINK,
    AUTHORITY_PAD_KEY,
    PUBLIC_CONTEXT,
    session_packing,
)
from fedprllm_secure.secure_sum.messages import decode, encode
from fedprllm_secure.secure_sum.packing import bits_for, unpack_uint
from fedprllm_secure.secure_sum.session import SimulatedSession
from fedprllm_secure.secure_sum.transport import InMemoryBus

from ..secure_sum.test_ckks_protocol import DropsAfter

ROSTER = (0, 1, 2, 3, 4)
VICTIM = 4
# Long enough that a sum in which some pad does not cancel fails the range check in at least one
# of its slots with overwhelming probability (>= 600 slots, each passing with probability
# B^K / M <= 0.96 for CKKS and 0.47 for BFV at 5 clients; protocols/ckks.md, section 4.2).
LENGTH = 12000


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
        self.rng = rng
        self.server = info.make_server(self.config, rng.child("server"))
        self.packing = session_packing(self.config, 1)
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
        uploads of `clients`, and the honest request (their sum and their statements)."""
        spec = AggregationSpec.from_lengths(index, {name: LENGTH}, 1)
        # The attacker drives the authority link by hand: a server of its own for each request
        # (the same link, so the same authority and its record).
        server = self.info.make_server(self.config, self.rng.child(f"server-{index}-{name}"))
        requests = server.begin(spec)
        uploads = {c: self.clients[c].handle(requests[c]) for c in clients}
        request = self.request(index, spec.chunks[0], [uploads[c] for c in clients], uploads)
        return request, uploads

    def request(
        self, index: int, chunk: ChunkSpec, summed: list, listed: dict, coefficient: int = 1
    ) -> DecryptRequest:
        """A request for `chunk` whose ciphertexts are the homomorphic sum of `summed` (uploads or
        ciphertext tuples), the last one multiplied by `coefficient` (repeated addition), and
        whose statements are those of the uploads in `listed`."""
        packing = self.packing
        parts = [u.ciphertexts if isinstance(u, EncryptedChunk) else u for u in summed]
        parts = parts + [parts[-1]] * (coefficient - 1)
        return chunk_request(
            self.config,
            index,
            1,
            chunk,
            packing,
            add_all(self, parts),
            tuple(statement_of(u) for u in listed.values()),
        )

    def counts(self, reply, clients: int) -> np.ndarray:
        return unpack_uint(reply.counts, bits_for(clients), LENGTH)


def add_all(setup: Setup, parts: list[tuple[bytes, ...]]) -> tuple[bytes, ...]:
    """The homomorphic sum, part by part, of several ciphertext tuples (anyone can compute it)."""
    out = []
    for column in zip(*parts, strict=True):
        size = slots_of(setup, column[0])
        total = None
        for data in column:
            total = he_ctx.add_into(
                total, he_ctx.load_ciphertext(setup.public, setup.he, data, size)
            )
        out.append(he_ctx.serialize(total))
    return tuple(out)


def slots_of(setup: Setup, data: bytes) -> int:
    loader = ts.ckks_vector_from if setup.he.scheme == "ckks" else ts.bfv_vector_from
    return loader(setup.public, data).size()


def zero_encryptions(setup: Setup, like: EncryptedChunk) -> tuple[bytes, ...]:
    """Encryptions of an all-zero vector shaped like `like` (anyone with the public context can
    make them; the server cannot add the pads it does not know)."""
    packing = setup.packing
    packed = pack(np.zeros(LENGTH, dtype=np.uint8), packing.base, packing.per_slot)
    values = padded_values(packed, np.zeros(packed.size, dtype=np.uint64), packing)
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


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
@pytest.mark.parametrize("where", ["same", "new-aggregation", "renamed-chunk"])
def test_attack_a_zero_encryptions_beside_the_victim_release_nothing(
    scheme: str, where: str
) -> None:
    """The original attack: the victim's ciphertext plus n-1 encryptions of zero, presented as
    the sum over the roster, with every client's genuine signed statement. The signatures all
    verify, but the other listed clients' pads are not in the sum: the authority subtracts them
    anyway and the result fails the range check."""
    setup = Setup(scheme)
    request, uploads = setup.collect(0, "w")
    victim = uploads[VICTIM]
    zeros = [zero_encryptions(setup, victim)] * (len(ROSTER) - 1)
    attack = setup.request(0, request.chunk, zeros + [victim], uploads)
    if where == "new-aggregation":
        attack = dataclasses.replace(attack, aggregation=9)
    elif where == "renamed-chunk":
        attack = dataclasses.replace(attack, chunk=ChunkSpec("w-renamed", LENGTH, 0))
    refused(setup, attack, "signature" if where != "same" else "range|exceeds|padding|bound")
    # The victim's upload alone (the rest dropped) is no better: below the minimum cohort.
    alone = setup.request(0, ChunkSpec("w2", LENGTH, 0), [victim], {VICTIM: victim})
    refused(setup, alone, "minimum is 3")


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_attack_a_the_victims_ciphertext_under_everyones_statements_is_refused(scheme) -> None:
    """Only the victim's ciphertext, listed as the sum over all five: the other four pads are
    subtracted but were never added."""
    setup = Setup(scheme)
    request, uploads = setup.collect(0, "w")
    attack = setup.request(0, request.chunk, [uploads[VICTIM]], uploads)
    refused(setup, attack, "range|exceeds|padding|bound")


def test_attack_a_sybil_statements_with_pads_the_server_knows_are_refused() -> None:
    """The server makes its own pad keys for four roster clients, encrypts padded zeros under
    them (it can compute those pads: it holds the private halves) and lists them beside the
    victim. The pads would cancel and the sum would be the victim's mask: only the four clients'
    signatures, which the server cannot make, stop it."""
    from fedprllm_secure.secure_sum.ckks import identity
    from fedprllm_secure.secure_sum.ckks import pads as pd
    from fedprllm_secure.secure_sum.ckks.packing import slot_count

    setup = Setup()
    request, uploads = setup.collect(0, "w")
    packing = setup.packing
    binding = config_digest(setup.config)
    authority = setup.config.options[AUTHORITY_PAD_KEY]
    victim = uploads[VICTIM]
    slots = slot_count(LENGTH, packing.per_slot)
    fakes, parts = {}, []
    for c in ROSTER[:-1]:
        private = bytes([c + 1]) * 32
        key = pd.client_pad_key(private, authority, binding, c)
        context = pd.pad_context(
            request.aggregation, request.chunk.name, request.chunk.length, request.chunk.offset,
            request.bound, request.base, request.per_slot,
        )  # fmt: skip
        pads = pd.chunk_pads(key, context, slots, packing.pad_modulus)
        values = padded_values(np.zeros(slots, dtype=np.uint64), pads, packing)
        parts.append(tuple(
            he_ctx.encrypt(setup.public, setup.he, values[i : i + setup.he.slots])
            for i in range(0, slots, setup.he.slots)
        ))  # fmt: skip
        fakes[c] = Statement(c, identity.pad_public(private), bytes(32), bytes(64))
    attack = dataclasses.replace(
        request,
        ciphertexts=add_all(setup, parts + [victim.ciphertexts]),
        statements=tuple(fakes.values()) + (statement_of(victim),),
    )
    refused(setup, attack, "signature")


# -- attack B: the same chunk decrypted twice, once without the victim ------------------------


def test_attack_b_the_server_cannot_decrypt_a_chunk_again_without_the_victim() -> None:
    """The server holds every signed upload of chunk 'w': after the sum over all five it asks
    for the sum over the four others (same aggregation, then under a renamed chunk)."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    full = setup.link.request(request)
    expected = sum(mask(c, "w").astype(np.int64) for c in ROSTER)
    assert setup.counts(full, 5).tolist() == expected.tolist()
    others = [uploads[c] for c in ROSTER if c != VICTIM]
    without = setup.request(
        0, request.chunk, others, {c: uploads[c] for c in ROSTER if c != VICTIM}
    )
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
    setup.link.request(setup.request(0, spec.chunks[0], list(uploads_a.values()), uploads_a))
    partial = {c: uploads_b[c] for c in ROSTER if c != VICTIM}
    refused(
        setup,
        setup.request(0, spec.chunks[1], list(partial.values()), partial),
        "different contributor sets",
    )


# -- forged, duplicated, mismatched, foreign uploads ------------------------------------------


def test_a_duplicated_upload_is_not_a_second_signer() -> None:
    """The victim's ciphertext three times, under its statement three times (3 x its mask):
    refused, signers must be distinct."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    victim = uploads[VICTIM]
    attack = setup.request(0, request.chunk, [victim], {VICTIM: victim}, coefficient=3)
    attack = dataclasses.replace(attack, statements=attack.statements * 3)
    refused(setup, attack, "distinct")


def test_a_signature_moved_to_another_sender_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    mine = statement_of(uploads[VICTIM])
    moved = tuple(dataclasses.replace(mine, sender=c) for c in ROSTER if c != VICTIM) + (mine,)
    refused(setup, dataclasses.replace(request, statements=moved), "signature")


def test_a_forged_signature_is_refused() -> None:
    setup = Setup()
    request, _ = setup.collect(0, "w")
    forged = tuple(
        dataclasses.replace(s, signature=bytes(64)) if s.sender != VICTIM else s
        for s in request.statements
    )
    refused(setup, dataclasses.replace(request, statements=forged), "signature")


def test_a_statement_with_another_pad_key_is_refused() -> None:
    """The server replaces a client's pad public key by one it made (whose pads it would know):
    the client's signature covers its own key."""
    setup = Setup()
    request, _ = setup.collect(0, "w")
    mine = ident_pad_public(bytes(range(32)))
    swapped = tuple(
        dataclasses.replace(s, pad_public=mine) if s.sender != VICTIM else s
        for s in request.statements
    )
    refused(setup, dataclasses.replace(request, statements=swapped), "signature")


def ident_pad_public(private: bytes) -> bytes:
    from fedprllm_secure.secure_sum.ckks import identity

    return identity.pad_public(private)


def test_a_contributor_not_on_the_roster_is_refused() -> None:
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    stranger = dataclasses.replace(statement_of(uploads[VICTIM]), sender=99)
    statements = request.statements[:2] + (stranger,)
    refused(setup, dataclasses.replace(request, statements=statements), "roster")


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
    huge = dataclasses.replace(
        request, chunk=ChunkSpec("w", 2**50, 0), ciphertexts=(), statements=()
    )
    wire = encode(huge)
    assert len(wire) < 200
    with pytest.raises(ProtocolError):
        setup.link.request(decode(wire, DecryptRequest))
    # With the statements and the sum kept (one ciphertext, not 2^50 / K / slots): refused too.
    with pytest.raises(ProtocolError, match="ciphertexts"):
        setup.link.request(dataclasses.replace(request, chunk=ChunkSpec("w2", 2**50, 0)))


# -- a server that tampers with the sum: pads that do not cancel ------------------------------


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
@pytest.mark.parametrize(
    "tamper", ["drops-a-listed-client", "adds-a-client-twice", "adds-an-unlisted-client"]
)
def test_a_sum_that_is_not_the_sum_over_the_listed_clients_releases_nothing(
    scheme: str, tamper: str
) -> None:
    """The statements all verify, but the ciphertext is not the sum over exactly the listed
    clients: some honest pad does not cancel, every slot it touches is uniform, and the range
    check refuses the chunk."""
    setup = Setup(scheme)
    request, uploads = setup.collect(0, "w")
    everyone = [uploads[c] for c in ROSTER]
    if tamper == "drops-a-listed-client":
        attack = setup.request(0, request.chunk, everyone[:-1], uploads)
    elif tamper == "adds-a-client-twice":
        attack = setup.request(0, request.chunk, everyone, uploads, coefficient=2)
    else:  # four listed, five summed
        listed = {c: uploads[c] for c in ROSTER if c != 0}
        attack = setup.request(0, request.chunk, everyone, listed)
    refused(setup, attack, "range|exceeds|padding|bound")


def test_a_sum_multiplied_by_a_plaintext_releases_nothing() -> None:
    """BFV: the victim's ciphertext multiplied slot-wise by a plaintext (2 in every slot, or 0:
    the victim's contribution removed, as if the server dropped it) inside the sum over the
    roster: the victim's pad is counted c times, not once."""
    for factor in (2, 0, 3):
        setup = Setup("bfv")
        request, uploads = setup.collect(0, "w")
        victim = uploads[VICTIM]
        size = slots_of(setup, victim.ciphertexts[0])
        scaled = he_ctx.load_ciphertext(setup.public, setup.he, victim.ciphertexts[0], size)
        scaled = scaled * ([factor] * size)
        parts = [uploads[c].ciphertexts for c in ROSTER if c != VICTIM]
        attack = setup.request(0, request.chunk, parts + [(he_ctx.serialize(scaled),)], uploads)
        refused(setup, attack, "range|exceeds|padding|bound")


def test_a_failed_attempt_uses_up_the_chunk_name() -> None:
    """One try per chunk: after a refused (tampered) request, even the honest sum of that chunk
    is refused, so a cheating server cannot probe and retry."""
    setup = Setup()
    request, uploads = setup.collect(0, "w")
    tampered = setup.request(0, request.chunk, [uploads[c] for c in ROSTER[:-1]], uploads)
    refused(setup, tampered, "range|exceeds|padding|bound")
    refused(setup, request, "already decrypted")
    # Other chunks are unaffected.
    fresh, _ = setup.collect(1, "v")
    assert (
        setup.counts(setup.link.request(fresh), 5).tolist()
        == sum(mask(c, "v").astype(np.int64) for c in ROSTER).tolist()
    )


# -- a curious key authority ------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_a_curious_authority_never_receives_an_individual_ciphertext(
    scheme: str, monkeypatch
) -> None:
    """Everything the authority is sent in an honest run: per chunk exactly one ciphertext per
    part, equal to the server's sum of the contributors' uploads; none of the bytes of any
    upload's ciphertexts appear in what it receives."""
    seen: list[bytes] = []
    real = KeyAuthority.handle

    def spy(self, request):  # type: ignore[no-untyped-def]
        seen.append(encode(request))
        return real(self, request)

    monkeypatch.setattr(KeyAuthority, "handle", spy)
    lengths = {"a": 9000, "b": 33}
    inputs = {c: provider_for(c, lengths) for c in ROSTER}
    sim = SimulatedSession("ckks", inputs, SeededRandomSource(f"curious-{scheme}"),
                           options={"he_scheme": scheme})  # fmt: skip
    uploads: dict[str, dict[int, EncryptedChunk]] = {}
    bus = sim.bus
    clients = dict(bus.clients)
    for c, client in clients.items():
        bus.clients[c] = Recording(client, uploads)
    result = bus.run(AggregationSpec.from_lengths(0, lengths, 1))
    assert result.contributors == ROSTER
    assert len(seen) == len(lengths)
    public = he_ctx.load_context(sim.config.options[PUBLIC_CONTEXT], private=False)
    he = he_params(scheme)
    setup = type("S", (), {"public": public, "he": he})()
    for wire in seen:
        request = decode(wire, DecryptRequest)
        name = request.chunk.name
        assert all(isinstance(s, Statement) for s in request.statements)
        assert not any(hasattr(s, "ciphertexts") for s in request.statements)
        # One ciphertext per part of the chunk, the server's sum of the five uploads.
        own = [uploads[name][c].ciphertexts for c in ROSTER]
        assert len(request.ciphertexts) == len(own[0])
        assert request.ciphertexts == add_all(setup, own)  # type: ignore[arg-type]
        for ciphertexts in own:
            for data in ciphertexts:
                assert data not in wire
                assert data[64:128] not in wire  # not even a slice of one
    for name, n in lengths.items():
        expected = sum(inputs[c](0, ChunkSpec(name, n, 0)).astype(np.int64) for c in ROSTER)
        assert result.sums[name].astype(np.int64).tolist() == expected.tolist()


class Recording:
    """A client whose uploads are copied into `store` (chunk name -> sender -> upload)."""

    def __init__(self, inner, store: dict) -> None:
        self.inner, self.store, self.client_id = inner, store, inner.client_id

    @property
    def state(self) -> str:
        return self.inner.state

    def handle(self, message: object) -> object | None:
        reply = self.inner.handle(message)
        if isinstance(reply, EncryptedChunk):
            self.store.setdefault(reply.chunk_name, {})[reply.sender] = reply
        return reply


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
    one_upload = sum(
        r.nbytes for r in bus.log.received if r.sender == 0 and r.round_name == "encrypted-input"
    )
    # The authority gets one aggregate per chunk (about one client's upload, even though client
    # 0 uploaded a and b twice: a repair pass after client 2 dropped), plus ~200 B per
    # contributor's statement.
    assert link.bytes_to_authority < 0.6 * one_upload + 4 * 200 * len(lengths) + 2000


def provider_for(client: int, lengths: dict[str, int]):
    data = {
        name: np.random.default_rng([client, n]).integers(0, 2, n).astype(np.uint8)
        for name, n in lengths.items()
    }
    return lambda index, chunk: data[chunk.name]


def test_a_designated_client_authority_applies_the_same_rules() -> None:
    setup = Setup(authority=0)
    assert AUTHORITY_LINK not in setup.config.options
    request, uploads = setup.collect(0, "w")
    authority = setup.clients[0]
    reply = authority.handle(request)
    expected = sum(mask(c, "w").astype(np.int64) for c in ROSTER)
    assert setup.counts(reply, 5).tolist() == expected.tolist()
    fresh = setup.client(0)  # the aborted-on-refusal client is replaced for each attempt
    with pytest.raises(ProtocolError, match="range|exceeds|padding|bound"):
        victim = uploads[VICTIM]
        zeros = [zero_encryptions(setup, victim)] * 4
        fresh.handle(setup.request(0, ChunkSpec("w", LENGTH, 0), zeros + [victim], uploads))


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
    assert len(config.options[AUTHORITY_PAD_KEY]) == 32  # bound by the config digest
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
    with pytest.raises(ProtocolError):  # the authority node's pad key is cut short
        publish("ckks", draft, {**publics, 0: publics[0][:50]})


def test_a_client_signs_each_chunk_name_once() -> None:
    """A request for a chunk the client already signed in another aggregation of this session is
    refused. Within the same aggregation a second request (a repair pass after a dropout) gets
    the same padded input re-encrypted under the same signed pad key: nothing new to combine."""
    setup = Setup()
    spec = AggregationSpec.from_lengths(0, {"w": LENGTH}, 1)
    request = setup.server.begin(spec)[VICTIM]
    first = setup.clients[VICTIM].handle(request)
    again = setup.clients[VICTIM].handle(request)  # a repair: same aggregation
    assert again.pad_public == first.pad_public
    with pytest.raises(ProtocolError, match="already signed"):
        setup.clients[VICTIM].handle(dataclasses.replace(request, aggregation=1))
    restored = type(setup.clients[0]).from_state(setup.clients[0].to_state(), provider(0), None)
    restored.handle(request)
    again = type(restored).from_state(restored.to_state(), provider(0), None)
    with pytest.raises(ProtocolError, match="already signed"):  # the record survives a restore
        again.handle(dataclasses.replace(request, aggregation=1))


def _bound_swap_setup():
    """Three BFV clients and a chunk that fills one bound-1 ciphertext exactly."""
    from fedprllm_secure.secure_sum.ckks.params import he_params
    from fedprllm_secure.secure_sum.ckks.settings import session_packing

    he = he_params("bfv")
    probe = SimulatedSession(
        "ckks", {c: (lambda i, ch: None) for c in range(3)}, SeededRandomSource("swap"),
        options={"he_scheme": "bfv"},
    )  # fmt: skip
    length = he.slots * session_packing(probe.config, 1).per_slot
    generator = np.random.default_rng(11)
    data = {c: generator.integers(0, 2, length).astype(np.uint8) for c in range(3)}
    sim = SimulatedSession(
        "ckks", {c: (lambda i, ch, c=c: data[c]) for c in range(3)}, SeededRandomSource("swap"),
        options={"he_scheme": "bfv"},
    )  # fmt: skip
    return sim, data, ChunkSpec("w", length, 0), he


def _ask(sim, chunk: ChunkSpec, bound: int) -> dict:
    from fedprllm_secure.secure_sum.ckks.messages import EncryptRequest
    from fedprllm_secure.secure_sum.ckks.settings import session_packing

    packing = session_packing(sim.config, bound)
    request = EncryptRequest(sim.config.session_id, 0, bound, chunk, packing.base, packing.per_slot)
    return {c: sim.bus.clients[c].handle(request) for c in range(3)}


def test_a_chunk_asked_again_under_another_bound_or_length_is_refused() -> None:
    """A repair may repeat a request, never change it: another bound (or length) would pack the
    same input differently under the same pad (review of the pad design, finding 1)."""
    sim, _data, chunk, _he = _bound_swap_setup()
    _ask(sim, chunk, 1)
    _ask(sim, chunk, 1)  # the same request again (a repair pass) is answered
    with pytest.raises(ProtocolError, match="another aggregation, bound, length or packing"):
        _ask(sim, chunk, 2**40)
    sim, _data, chunk, _he = _bound_swap_setup()
    _ask(sim, chunk, 1)
    with pytest.raises(ProtocolError, match="another aggregation, bound, length or packing"):
        _ask(sim, dataclasses.replace(chunk, length=chunk.length - 1), 1)


def test_an_upload_made_for_one_request_never_carries_the_pad_removed_for_another() -> None:
    """The pad-swap attack with the clients' request check switched off: the server asks for the
    chunk at bound 1, then at a bound b2 ~ M/n (one count per slot, same pad modulus), and sends
    the authority the victim's bound-1 ciphertext under the genuine bound-b2 statements. With pads
    keyed by the chunk name alone the authority removed exactly the victim's pad and released its
    bound-1 slots (96% of its bits); with pads keyed by the whole request the slot stays padded."""
    from fedprllm_secure.secure_sum.ckks.settings import session_packing

    sim, data, chunk, he = _bound_swap_setup()
    victim = 0
    saved = {c: client.to_state() for c, client in sim.bus.clients.items()}
    first = _ask(sim, chunk, 1)
    # Bypass the client-side check (each client restored from before it signed the chunk): the
    # pads alone must hold.
    for c, blob in saved.items():
        sim.bus.clients[c] = type(sim.bus.clients[c]).from_state(blob, data_provider(sim, data, c))
    p1 = session_packing(sim.config, 1)
    b2 = (p1.pad_modulus - 2) // 3
    p2 = session_packing(sim.config, b2)
    assert p2.per_slot == 1 and p2.pad_modulus == p1.pad_modulus
    second = _ask(sim, chunk, b2)
    public = he_ctx.load_context(sim.config.options[PUBLIC_CONTEXT], private=False)
    parts = []
    for i in range(len(second[0].ciphertexts)):
        size = min(he.slots, chunk.length - i * he.slots)
        source = first[victim].ciphertexts[0] if i == 0 else second[victim].ciphertexts[i]
        total = he_ctx.load_ciphertext(public, he, source, size)
        for c in range(3):
            if c != victim:
                part = he_ctx.load_ciphertext(public, he, second[c].ciphertexts[i], size)
                total = he_ctx.add_into(total, part)
        parts.append(he_ctx.serialize(total))
    statements = tuple(statement_of(second[c]) for c in range(3))
    request = chunk_request(sim.config, 0, b2, chunk, p2, tuple(parts), statements)
    try:
        reply = sim.config.options[AUTHORITY_LINK].request(request)
    except ProtocolError:
        return  # refused: nothing released
    counts = unpack_uint(reply.counts, bits_for(3 * b2), chunk.length).astype(object)
    matches = total_digits = 0
    for s in range(he.slots):
        value = int(counts[s])
        for k in range(p1.per_slot):
            digit, value = value % p1.base, value // p1.base
            if k > 0:
                total_digits += 1
                matches += int(digit == int(data[victim][s * p1.per_slot + k]))
    assert matches / total_digits < 0.5  # noise (a digit in base 4 matches 1/4 of the time)


def data_provider(sim, data: dict, client: int):
    """Client `client`'s input behind its session ledger (as SimulatedSession gives it)."""
    read = lambda index, chunk: data[client]  # noqa: E731
    return sim.ledgers[client].guard(read, config_digest(sim.config))


def test_a_re_read_that_differs_is_refused() -> None:
    """A repair re-reads the chunk; should the input change in between, the client refuses to put
    the same pad on a second plaintext (two plaintexts under one pad could be combined so that
    the pads cancel while the plaintexts do not)."""
    reads = {"count": 0}

    def changing(_index: int, chunk: ChunkSpec) -> np.ndarray:
        reads["count"] += 1
        return np.full(chunk.length, reads["count"] % 2, dtype=np.uint8)

    sim = SimulatedSession(
        "ckks", {0: changing, 1: changing, 2: changing}, SeededRandomSource("re-read")
    )
    chunk = ChunkSpec("w", 50, 0)
    _ask_some(sim, chunk, [0])
    with pytest.raises(ProtocolError, match="reads differently"):
        _ask_some(sim, chunk, [0])


def _ask_some(sim, chunk: ChunkSpec, clients: list[int]) -> dict:
    from fedprllm_secure.secure_sum.ckks.messages import EncryptRequest
    from fedprllm_secure.secure_sum.ckks.settings import session_packing

    packing = session_packing(sim.config, 1)
    request = EncryptRequest(sim.config.session_id, 0, 1, chunk, packing.base, packing.per_slot)
    return {c: sim.bus.clients[c].handle(request) for c in clients}
