"""`ckks` end to end through the in-memory bus: exact sums, roles, refusals, dropouts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest
import tenseal as ts

from fedprllm_secure.errors import ConfigError, ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.api import (
    AggregationSpec,
    ChunkSpec,
    ClientProtocol,
    ServerProtocol,
    SessionConfig,
    config_digest,
)
from fedprllm_secure.secure_sum.ckks import context as he_ctx
from fedprllm_secure.secure_sum.ckks import identity as ident
from fedprllm_secure.secure_sum.ckks import server as ckks_server
from fedprllm_secure.secure_sum.ckks.authority import (
    AuthorityLink,
    chunk_request,
    statement_of,
    upload_payload,
)
from fedprllm_secure.secure_sum.ckks.messages import EncryptedChunk, EncryptRequest
from fedprllm_secure.secure_sum.ckks.params import choose_packing, he_params
from fedprllm_secure.secure_sum.ckks.settings import (
    AUTHORITY_LINK,
    AUTHORITY_PAD_KEY,
    PUBLIC_CONTEXT,
    session_packing,
)
from fedprllm_secure.secure_sum.packing import bits_for, packed_size, unpack_uint
from fedprllm_secure.secure_sum.registry import get
from fedprllm_secure.secure_sum.session import SimulatedSession
from fedprllm_secure.secure_sum.transport import InMemoryBus

Data = dict[int, dict[int, dict[str, np.ndarray]]]  # client -> aggregation -> chunk -> vector


def provider(data: Data, client: int):
    return lambda index, chunk: data[client][index][chunk.name]


def session(data: Data, seed: int = 0, **options) -> SimulatedSession:
    """A simulated ckks session; below 3 clients the authority's minimum cohort (default 3) is
    lowered explicitly, as a deliberate override, so that small sums can be checked."""
    drop_at = options.pop("drop_at", None)
    if len(data) < 3:
        options.setdefault("min_contributors", len(data))
    inputs = {client: provider(data, client) for client in data}
    return SimulatedSession(
        "ckks", inputs, SeededRandomSource(seed), options=options, drop_at=drop_at
    )


def spec_of(data: Data, index: int, bound: int = 1) -> AggregationSpec:
    first = next(iter(data.values()))[index]
    return AggregationSpec.from_lengths(index, {n: v.size for n, v in first.items()}, bound)


def check_exact(result, data: Data, index: int) -> None:
    for name, total in result.sums.items():
        expected = sum(data[c][index][name].astype(np.int64) for c in result.contributors)
        assert total.dtype == np.dtype(total.dtype)  # an unsigned dtype from api.sum_dtype
        assert np.array_equal(total.astype(np.int64), expected), name


def stressed_masks(clients: int, lengths: Mapping[str, int], seed: int, per_slot: int = 7) -> Data:
    """Random bits, except the first third of each chunk where every client has the same
    slot-level pattern: a slot is all ones iff its index is a multiple of 3. Identical masks make
    every digit 0 or maximal, so centred slots alternate between -V and +V: the pattern with the
    largest measured CKKS error (see protocols/ckks.md)."""
    rng = np.random.default_rng(seed)
    data: Data = {}
    for client in range(clients):
        chunks = {}
        for name, length in lengths.items():
            bits = rng.integers(0, 2, length, dtype=np.uint8)
            head = length // 3
            slot = np.arange(head) // per_slot
            bits[:head] = (slot % 3 == 0).astype(np.uint8)
            chunks[name] = bits
        data[client] = {0: chunks}
    return data


def packing_boundaries(scheme: str) -> list[int]:
    """Both sides of every client count (1..127, bound 1) where K, counts per slot, changes."""
    he = he_params(scheme)
    k = {n: choose_packing(he, n, 1).per_slot for n in range(1, 128)}
    changes = [n for n in range(2, 128) if k[n] != k[n - 1]]
    return sorted({1, 127, *changes, *(n - 1 for n in changes)})


CKKS_COUNTS = packing_boundaries("ckks")


@pytest.mark.parametrize("clients", CKKS_COUNTS + [100])
def test_ckks_sum_is_exact_at_every_packing_boundary(clients: int) -> None:
    packing = choose_packing(he_params("ckks"), clients, 1)
    slots = he_params("ckks").slots
    lengths = {
        "full-ciphertext": packing.per_slot * slots,
        "slot-plus-one": packing.per_slot + 1,
        "one": 1,
    }
    data = stressed_masks(clients, lengths, seed=clients, per_slot=packing.per_slot)
    result = session(data).aggregate(spec_of(data, 0))
    assert result.contributors == tuple(range(clients))
    check_exact(result, data, 0)


@pytest.mark.parametrize("clients", [1, 2, 86, 87, 127])
def test_bfv_sum_is_exact(clients: int) -> None:
    packing = choose_packing(he_params("bfv"), clients, 1)
    lengths = {"a": packing.per_slot * 8192 // 4, "b": packing.per_slot + 1}
    data = stressed_masks(clients, lengths, seed=1000 + clients, per_slot=packing.per_slot)
    result = session(data, he_scheme="bfv").aggregate(spec_of(data, 0))
    check_exact(result, data, 0)


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
@pytest.mark.parametrize("clients", [1, 8, 127])
@pytest.mark.parametrize("fill", [0, 1])
def test_all_zeros_and_all_ones(scheme: str, clients: int, fill: int) -> None:
    packing = choose_packing(he_params(scheme), clients, 1)
    length = packing.per_slot * 300 + 3
    data: Data = {c: {0: {"w": np.full(length, fill, np.uint8)}} for c in range(clients)}
    result = session(data, he_scheme=scheme).aggregate(spec_of(data, 0))
    assert np.array_equal(result.sums["w"], np.full(length, fill * clients))


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_bounds_above_one_and_several_aggregations(scheme: str) -> None:
    rng = np.random.default_rng(7)
    bound = 5
    # Each aggregation sums its own chunks: a chunk goes to at most one aggregation.
    data: Data = {
        c: {
            i: {f"{i}.L{j}": rng.integers(0, bound + 1, 500 + 31 * j) for j in range(3)}
            for i in (0, 1)
        }
        for c in range(6)
    }
    sim = session(data, he_scheme=scheme)
    for index in (0, 1):
        result = sim.aggregate(spec_of(data, index, bound))
        check_exact(result, data, index)
        assert result.sums[f"{index}.L0"].dtype == np.uint8  # sum_dtype(5 * 6)


def test_packed_uploads_are_smaller_than_one_count_per_slot() -> None:
    data = stressed_masks(8, {"w": 9 * 4096 * 3}, seed=3, per_slot=15)
    packed = session(data)
    packed.aggregate(spec_of(data, 0))
    unpacked = session(data, max_per_slot=1)
    unpacked.aggregate(spec_of(data, 0))
    ratio = unpacked.bus.log.uplink_by_client()[0] / packed.bus.log.uplink_by_client()[0]
    assert ratio > 5
    assert packed.bus.log.uplink_by_client()[0] / (9 * 4096 * 3) < 10  # bytes per entry


# -- roles ------------------------------------------------------------------------------------


def test_server_holds_only_a_public_context_and_cannot_decrypt() -> None:
    data = stressed_masks(3, {"w": 100}, seed=4)
    sim = session(data)
    server = sim.bus.server
    assert server.public_context.is_private() is False
    assert not he_ctx.load_context(sim.config.options[PUBLIC_CONTEXT], private=False).is_private()
    packing = choose_packing(he_params("ckks"), 3, 1)
    reply = sim.bus.clients[0].handle(
        EncryptRequest(
            sim.config.session_id, 0, 1, ChunkSpec("w", 100, 0), packing.base, packing.per_slot
        )
    )
    vector = ts.ckks_vector_from(server.public_context, reply.ciphertexts[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    with pytest.raises(ProtocolError, match="secret key"):
        he_ctx.decrypt(server.public_context, he_params("ckks"), vector)
    # Nothing the server is configured with holds the secret key.
    for key, value in sim.config.options.items():
        if isinstance(value, bytes) and key != AUTHORITY_PAD_KEY:  # 32-byte X25519 public key
            assert not ts.context_from(value).is_private()
    assert repr(sim.config.options[AUTHORITY_LINK]) == "AuthorityLink(<separate key authority>)"


def test_server_refuses_a_private_context() -> None:
    sim = session(stressed_masks(2, {"w": 10}, seed=5))
    secret = he_ctx.secret_bytes(he_ctx.new_secret_context(he_params("ckks")))
    config = dataclasses.replace(sim.config, options={**sim.config.options, PUBLIC_CONTEXT: secret})
    with pytest.raises(ProtocolError, match="secret key"):
        get("ckks").make_server(config, SeededRandomSource(0))


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_designated_client_authority(scheme: str) -> None:
    data = stressed_masks(4, {"a": 3000, "b": 17}, seed=6)
    sim = session(data, he_scheme=scheme, authority=2)
    assert AUTHORITY_LINK not in sim.config.options
    result = sim.aggregate(spec_of(data, 0))
    check_exact(result, data, 0)
    assert sim.bus.log.uplink_by_round(2)["decrypt"] > 0  # the counts came from client 2
    assert "decrypt" not in sim.bus.log.uplink_by_round(1)


def test_designated_authority_dropping_out_aborts() -> None:
    data = stressed_masks(4, {"a": 30}, seed=7)
    with pytest.raises(ProtocolError, match="key authority"):
        session(data, authority=1, drop_at={1: "decrypt"}).aggregate(spec_of(data, 0))
    with pytest.raises(ProtocolError, match="key authority"):
        session(data, authority=1, drop_at={1: "encrypted-input"}).aggregate(spec_of(data, 0))


def test_bad_options_are_config_errors() -> None:
    data = stressed_masks(2, {"a": 3}, seed=8)
    with pytest.raises(ConfigError):
        session(data, he_scheme="paillier")
    with pytest.raises(ConfigError):
        session(data, authority=9)
    with pytest.raises(ConfigError):
        session(data, max_per_slot=0)


# -- dropouts ---------------------------------------------------------------------------------


def test_dropouts_give_the_survivors_sum() -> None:
    data = stressed_masks(6, {"a": 2000, "b": 500}, seed=9)
    # Two aggregations, each with its own chunks (a chunk goes to at most one aggregation).
    data = {
        c: {i: {f"{i}.{name}": x for name, x in v[0].items()} for i in (0, 1)}
        for c, v in data.items()
    }
    sim = session(data, drop_at={1: "encrypted-input", 4: "encrypted-input"})
    for index in (0, 1):
        result = sim.aggregate(spec_of(data, index))
        assert result.contributors == (0, 2, 3, 5)
        check_exact(result, data, index)


class DropsAfter(ClientProtocol):
    """Answers `answers` messages, then never again (a dropout in the middle of a stream)."""

    def __init__(self, inner: ClientProtocol, answers: int) -> None:
        self.inner, self.left, self.client_id = inner, answers, inner.client_id

    @property
    def state(self) -> str:
        return self.inner.state

    def handle(self, message: object) -> object | None:
        if self.left <= 0:
            return None
        self.left -= 1
        return self.inner.handle(message)


def test_dropout_mid_stream_is_left_out_of_every_chunk() -> None:
    lengths = {f"L{j}": 300 + j for j in range(5)}
    data = stressed_masks(5, lengths, seed=10)
    sim = session(data)
    clients = dict(sim.bus.clients)
    clients[1] = DropsAfter(clients[1], 3)  # sent L0..L2, then vanished
    clients[3] = DropsAfter(clients[3], 1)
    link: AuthorityLink = sim.config.options[AUTHORITY_LINK]
    asked: list[tuple[str, tuple[int, ...]]] = []
    forward = link.request

    def spy(request):
        asked.append((request.chunk.name, request.contributors))
        return forward(request)

    link.request = spy  # type: ignore[method-assign]
    bus = InMemoryBus(sim.bus.server, clients)
    result = bus.run(spec_of(data, 0))
    assert result.contributors == (0, 2, 4)
    check_exact(result, data, 0)
    # Decryption waited for the final contributor set: one request per chunk, all over {0, 2, 4}.
    assert asked == [(name, (0, 2, 4)) for name in lengths]


def test_everyone_dropping_gives_empty_contributors() -> None:
    data = stressed_masks(2, {"a": 10}, seed=11)
    sim = session(data, drop_at={0: "encrypted-input", 1: "encrypted-input"})
    result = sim.aggregate(spec_of(data, 0))
    assert result.contributors == () and not result.sums["a"].any()


def test_too_few_contributors_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key authority itself refuses: the server's own guard is bypassed here (a server that
    skips it sends the two signed uploads it holds), and the refusal must be the authority's."""
    data = stressed_masks(3, {"a": 10}, seed=12)
    sim = session(data, drop_at={0: "encrypted-input"})
    assert sim.config.options.get("min_contributors") is None  # the default: 3
    monkeypatch.setattr(ckks_server, "check_cohort", lambda keys, alive: None)
    with pytest.raises(ProtocolError, match="key authority's minimum is 3"):
        sim.aggregate(spec_of(data, 0))


# -- refusals ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Started:
    """A ckks session whose clients answered the first request of one chunk 'w'."""

    config: SessionConfig
    server: ServerProtocol
    clients: dict[int, ClientProtocol]
    identities: dict[int, bytes]
    spec: AggregationSpec
    good: dict[int, EncryptedChunk]


def started(clients: int = 2, length: int = 5000, **options) -> Started:
    data = stressed_masks(clients, {"w": length}, seed=13)
    if clients < 3:
        options.setdefault("min_contributors", clients)
    info, rng = get("ckks"), SeededRandomSource(13)
    draft = SessionConfig(rng.random_bytes(32), tuple(range(clients)), options)
    config, identities = info.enroll(draft, rng.child("enroll"))
    parties = {
        c: info.make_client(config, c, rng.child(f"c{c}"), provider(data, c), identities[c])
        for c in config.roster
    }
    server = info.make_server(config, rng.child("server"))
    spec = spec_of(data, 0)
    requests = server.begin(spec)
    good = {c: parties[c].handle(requests[c]) for c in requests}
    return Started(config, server, parties, identities, spec, good)


def replace_ciphertexts(reply: EncryptedChunk, ciphertexts: tuple[bytes, ...]) -> EncryptedChunk:
    return dataclasses.replace(reply, ciphertexts=ciphertexts)


def signed(run: Started, reply: EncryptedChunk, ciphertexts: tuple[bytes, ...]):
    """`reply` with other ciphertexts, signed by its sender (a lying client signs its lie)."""
    packing = session_packing(run.config, run.spec.bound)
    chunk = run.spec.chunk(reply.chunk_name)
    bad = replace_ciphertexts(reply, ciphertexts)
    payload = upload_payload(
        config_digest(run.config), bad, chunk, 1, packing.base, packing.per_slot
    )
    key = ident.decode_identity(run.identities[reply.sender]).signing_key
    return dataclasses.replace(bad, signature=ident.sign(key, payload))


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda ct, other: (b"garbage",),
        lambda ct, other: (ct[0][:-100],),
        lambda ct, other: (ct[0][:50] + bytes([ct[0][50] ^ 1]) + ct[0][51:],),
        lambda ct, other: (),
        lambda ct, other: (ct[0], ct[0]),
        lambda ct, other: (other,),
    ],
    ids=["garbage", "truncated", "bit-flip", "missing", "extra", "other-parameters"],
)
def test_server_refuses_bad_ciphertexts(corrupt) -> None:
    run = started()
    good = run.good
    small = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=4096, coeff_mod_bit_sizes=[40, 20, 40]
    )
    small.global_scale = 2.0**20
    other = ts.ckks_vector(small, [1.0] * 10).serialize()
    bad = signed(run, good[1], corrupt(good[1].ciphertexts, other))
    with pytest.raises(ProtocolError):
        run.server.handle({0: good[0], 1: bad})
    assert run.server.state == "aborted"


def test_server_refuses_a_ciphertext_of_the_wrong_length() -> None:
    run = started()
    good = run.good
    public = he_ctx.load_context(run.config.options[PUBLIC_CONTEXT], private=False)
    short = he_ctx.encrypt(public, he_params("ckks"), np.zeros(10))
    with pytest.raises(ProtocolError, match="slots"):
        run.server.handle({0: good[0], 1: signed(run, good[1], (short,))})


def test_server_refuses_a_bfv_ciphertext_in_a_ckks_session() -> None:
    run = started()
    good = run.good
    bfv = he_ctx.new_secret_context(he_params("bfv"))
    wrong = he_ctx.encrypt(bfv, he_params("bfv"), np.zeros(10, dtype=np.int64))
    with pytest.raises(ProtocolError):
        run.server.handle({0: good[0], 1: signed(run, good[1], (wrong,))})


def test_server_refuses_a_submission_for_another_chunk_or_sender() -> None:
    run = started()
    good = run.good
    with pytest.raises(ProtocolError):
        run.server.handle({0: good[0], 1: dataclasses.replace(good[1], sender=0)})


@pytest.mark.parametrize("scheme", ["ckks", "bfv"])
def test_ciphertext_under_another_key_is_never_released(scheme: str) -> None:
    # Same parameters, different key: the server cannot tell, but the authority's range and
    # rounding checks refuse the garbage aggregate instead of releasing it.
    run = started(he_scheme=scheme)
    good = run.good
    stranger = he_ctx.new_secret_context(he_params(scheme))
    packing = choose_packing(he_params(scheme), 2, 1)
    count = good[1].ciphertexts
    size = min(he_params(scheme).slots, -(-5000 // packing.per_slot))
    values = np.zeros(size) if scheme == "ckks" else np.zeros(size, dtype=np.int64)
    foreign = (he_ctx.encrypt(stranger, he_params(scheme), values),) + count[1:]
    with pytest.raises(ProtocolError):
        run.server.handle({0: good[0], 1: signed(run, good[1], foreign)})


def test_server_refuses_an_unsigned_or_resigned_upload() -> None:
    run = started()
    good = run.good
    with pytest.raises(ProtocolError, match="not signed"):
        run.server.handle({0: good[0], 1: dataclasses.replace(good[1], signature=b"")})
    run = started()
    good = run.good
    with pytest.raises(ProtocolError, match="not signed"):  # client 0's signature on 1's upload
        run.server.handle(
            {0: good[0], 1: dataclasses.replace(good[1], signature=good[0].signature)}
        )


def test_authority_decrypts_each_chunk_once_and_checks_requests() -> None:
    run = started(length=100)
    good = run.good
    link: AuthorityLink = run.config.options[AUTHORITY_LINK]
    packing = choose_packing(he_params("ckks"), 2, 1)
    chunk = ChunkSpec("w", 100, 0)

    public = he_ctx.load_context(run.config.options[PUBLIC_CONTEXT], private=False)
    he = he_params("ckks")
    size = -(-100 // packing.per_slot)
    total = he_ctx.load_ciphertext(public, he, good[0].ciphertexts[0], size)
    total = he_ctx.add_into(total, he_ctx.load_ciphertext(public, he, good[1].ciphertexts[0], size))
    summed = (he_ctx.serialize(total),)

    def request(uploads=(good[0], good[1]), base=packing.base, ciphertexts=summed, name="w"):
        layout = dataclasses.replace(packing, base=base)
        statements = tuple(statement_of(u) for u in uploads)
        made = chunk_request(run.config, 0, 1, ChunkSpec(name, 100, 0), layout, ciphertexts, ())
        return dataclasses.replace(made, statements=statements)

    # Each refused request uses up its chunk name (one try per chunk): fresh names here.
    with pytest.raises(ProtocolError, match="increasing order"):
        link.request(request(uploads=(good[1], good[0]), name="w1"))
    with pytest.raises(ProtocolError, match="increasing order"):
        link.request(request(uploads=(good[0], good[0]), name="w2"))
    with pytest.raises(ProtocolError, match="packing"):
        link.request(request(base=7, name="w3"))
    with pytest.raises(ProtocolError, match="ciphertexts"):
        link.request(request(ciphertexts=summed * 2, name="w4"))
    reply = link.request(request())
    assert reply.chunk_name == "w"
    # Only rounded integers leave the authority: 100 counts of bits_for(2) = 2 bits each.
    assert len(reply.counts) == packed_size(100, bits_for(2))
    expected = sum(run.clients[c].inputs(0, chunk).astype(np.int64) for c in (0, 1))
    assert unpack_uint(reply.counts, 2, 100).tolist() == expected.tolist()
    with pytest.raises(ProtocolError, match="already"):
        link.request(request())


def test_client_refuses_another_packing_and_decrypt_requests() -> None:
    data = stressed_masks(3, {"w": 10}, seed=14)
    sim = session(data)
    client = sim.bus.clients[0]
    with pytest.raises(ProtocolError, match="packing"):
        client.handle(EncryptRequest(sim.config.session_id, 0, 1, ChunkSpec("w", 10, 0), 2, 49))
    assert client.state == "aborted"
    packing = choose_packing(he_params("ckks"), 3, 1)
    honest = EncryptRequest(
        sim.config.session_id, 0, 1, ChunkSpec("w", 10, 0), packing.base, packing.per_slot
    )
    with pytest.raises(ProtocolError, match="has aborted"):  # it answers nothing after a refusal
        client.handle(honest)
    assert sim.bus.clients[2].handle(honest).sender == 2  # the same request, to a live client
    other = sim.bus.clients[1]
    with pytest.raises(ProtocolError, match="not the key authority"):
        other.handle(
            chunk_request(
                sim.config,
                0,
                1,
                ChunkSpec("w", 10, 0),
                choose_packing(he_params("ckks"), 3, 1),
                (),
                (),
            )
        )
