"""The protocol seam: codec, packing, the in-memory bus, and the plaintext reference protocol."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedprllm_secure.errors import MessageDecodeError, ProtocolError
from fedprllm_secure.randomness import SeededRandomSource, SystemRandomSource, random_below
from fedprllm_secure.secure_sum.api import (
    AggregationSpec,
    ChunkSpec,
    SessionConfig,
    config_digest,
    sum_dtype,
)
from fedprllm_secure.secure_sum.ledger import ContributionLedger
from fedprllm_secure.secure_sum.messages import decode, encode, message
from fedprllm_secure.secure_sum.packing import bits_for, pack_uint, unpack_uint
from fedprllm_secure.secure_sum.plaintext import ChunkRequest, ChunkSubmission, PlaintextClient
from fedprllm_secure.secure_sum.session import SimulatedSession


@message("test/everything", "test-round")
@dataclass(frozen=True)
class Everything:
    number: int
    flag: bool
    blob: bytes
    text: str
    chunk: ChunkSpec
    numbers: tuple[int, ...]
    chunks: tuple[ChunkSpec, ...]


def sample_message() -> Everything:
    return Everything(
        number=-(2**200) + 7,
        flag=True,
        blob=b"\x00\xff" * 5,
        text="café",
        chunk=ChunkSpec("layer.0", 12, 0),
        numbers=(0, 1, -1, 255, 256),
        chunks=(ChunkSpec("a", 1, 0), ChunkSpec("b", 2, 1)),
    )


def test_codec_round_trip_and_strictness() -> None:
    msg = sample_message()
    wire = encode(msg)
    assert decode(wire) == msg
    assert decode(wire, Everything) == msg
    with pytest.raises(MessageDecodeError):
        decode(wire, ChunkRequest)
    with pytest.raises(MessageDecodeError):
        decode(wire + b"\x00")
    for cut in range(len(wire)):
        with pytest.raises(MessageDecodeError):
            decode(wire[:cut])


def test_codec_fuzz_only_raises_the_project_error() -> None:
    rng = random.Random(1)
    seeds = [encode(sample_message()), encode(ChunkRequest(b"s" * 32, 0, 1, ChunkSpec("x", 3, 0)))]
    for trial in range(10_000):
        if trial % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode(bytes(data))
        except MessageDecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(
    bits=st.integers(1, 64),
    values=st.lists(st.integers(0, 2**64 - 1), max_size=40),
)
def test_packing_round_trip(bits: int, values: list[int]) -> None:
    vector = np.array([v % (1 << bits) for v in values], dtype=np.uint64)
    data = pack_uint(vector, bits)
    assert len(data) == (len(values) * bits + 7) // 8
    assert np.array_equal(unpack_uint(data, bits, len(values)), vector)


def test_packing_refuses_malformed_input() -> None:
    with pytest.raises(ValueError):
        pack_uint(np.array([4]), 2)
    with pytest.raises(MessageDecodeError):
        unpack_uint(b"\x00", 4, 3)  # wrong length
    with pytest.raises(MessageDecodeError):
        unpack_uint(b"\xf0", 4, 1)  # non-zero padding
    assert bits_for(1) == 1 and bits_for(8) == 4 and bits_for(15) == 4 and bits_for(16) == 5


def test_sum_dtype_never_overflows() -> None:
    assert sum_dtype(255) == np.uint8 and sum_dtype(256) == np.uint16
    assert sum_dtype(2**40) == np.uint64


def test_randomness_sources() -> None:
    a, b = SeededRandomSource(7), SeededRandomSource(7)
    assert a.random_bytes(40) == b.random_bytes(40)
    assert a.child("x").random_bytes(8) != a.child("y").random_bytes(8)
    assert SeededRandomSource(7).random_bytes(8) != SeededRandomSource(8).random_bytes(8)
    values = [random_below(SeededRandomSource(i), 3) for i in range(300)]
    assert set(values) == {0, 1, 2}
    assert len(SystemRandomSource().random_bytes(16)) == 16


def random_inputs(
    clients: int, lengths: dict[str, int], seed: int
) -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        c: {n: rng.integers(0, 2, size=size) for n, size in lengths.items()} for c in range(clients)
    }


def providers(vectors: dict[int, dict[str, np.ndarray]]):
    return {c: (lambda _i, chunk, c=c: vectors[c][chunk.name]) for c in vectors}


@pytest.mark.parametrize("drops", [{}, {2: "input"}, {0: "input", 4: "input"}])
def test_plaintext_sum_equals_direct_sum_over_survivors(drops: dict[int, str]) -> None:
    lengths = {"q": 37, "k": 8, "mlp": 101}
    # A client releases each chunk to one aggregation only: the second one sums other chunks.
    later = {f"{name}.1": length for name, length in lengths.items()}
    vectors = random_inputs(5, lengths | later, seed=3)
    session = SimulatedSession(
        "plaintext", providers(vectors), SeededRandomSource(0), drop_at=drops
    )
    result = session.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    survivors = [c for c in range(5) if c not in drops]
    assert list(result.contributors) == survivors
    for name in lengths:
        assert np.array_equal(result.sums[name], sum(vectors[c][name] for c in survivors))
    # Sessions run several aggregations; the uplink is bit-packed (1 bit per entry + framing).
    again = session.aggregate(AggregationSpec.from_lengths(1, later, bound=1))
    assert again.contributors == result.contributors
    for name in later:
        assert np.array_equal(again.sums[name], sum(vectors[c][name] for c in survivors))
    sent = session.bus.log.uplink_by_client()[survivors[0]]
    assert sent < 2 * 300 + sum(lengths.values()) // 4


def test_plaintext_refuses_bad_input_and_bad_messages() -> None:
    lengths = {"a": 4}
    bad = {0: {"a": np.array([0, 1, 2, 0])}}
    session = SimulatedSession("plaintext", providers(bad), SeededRandomSource(0))
    with pytest.raises(ProtocolError):
        session.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    client = PlaintextClient(session.config, 0, lambda i, c: np.zeros(4, dtype=int))
    with pytest.raises(ProtocolError):
        client.handle(ChunkSubmission(b"x" * 32, 0, 0, "a", b""))
    assert client.state == "aborted"


def test_a_client_releases_each_chunk_to_one_aggregation_only() -> None:
    lengths = {"q": 5, "k": 3}
    vectors = random_inputs(3, lengths | {"v": 4}, seed=4)
    session = SimulatedSession("plaintext", providers(vectors), SeededRandomSource(1))
    session.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    # The same chunk under another aggregation index: every client refuses, nothing is summed.
    with pytest.raises(ProtocolError, match="already contributed"):
        session.aggregate(AggregationSpec.from_lengths(1, {"k": 3, "v": 4}, bound=1))
    assert all(session.ledgers[c].released("q") for c in range(3))
    assert not any(session.ledgers[c].released("v") for c in range(3))


def test_a_new_session_with_the_same_ledgers_cannot_ask_for_a_chunk_again() -> None:
    lengths = {"q": 5}
    vectors = random_inputs(3, lengths, seed=5)
    first = SimulatedSession("plaintext", providers(vectors), SeededRandomSource(2))
    first.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    # Same pruning round (same ledgers), new session: same index, same chunk, refused.
    again = SimulatedSession(
        "plaintext", providers(vectors), SeededRandomSource(3), ledgers=first.ledgers
    )
    with pytest.raises(ProtocolError, match="already contributed"):
        again.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))
    # The ledger a Flower node saves between messages keeps every release.
    restored = {c: ContributionLedger.from_bytes(first.ledgers[c].to_bytes()) for c in range(3)}
    assert all(restored[c].released("q") for c in range(3))
    later = SimulatedSession(
        "plaintext", providers(vectors), SeededRandomSource(4), ledgers=restored
    )
    with pytest.raises(ProtocolError, match="already contributed"):
        later.aggregate(AggregationSpec.from_lengths(0, lengths, bound=1))


def test_a_refused_chunk_aborts_the_client() -> None:
    ledger = ContributionLedger()
    chunk = ChunkSpec("a", 4, 0)
    ledger.record(b"b" * 32, 0, chunk)
    ledger.record(b"b" * 32, 0, chunk)  # a re-read within the same aggregation is allowed
    with pytest.raises(ProtocolError):
        ledger.record(b"b" * 32, 1, chunk)
    with pytest.raises(ProtocolError):
        ledger.record(b"c" * 32, 0, chunk)
    session = SimulatedSession(
        "plaintext", providers(random_inputs(1, {"a": 4}, 6)), SeededRandomSource(5)
    )
    client = PlaintextClient(
        session.config, 0, ledger.guard(lambda i, c: np.zeros(4, dtype=int), b"b" * 32)
    )
    request = ChunkRequest(session.config.session_id, 1, 1, chunk)
    with pytest.raises(ProtocolError, match="already contributed"):
        client.handle(request)
    assert client.state == "aborted"


def test_config_digest_covers_everything_the_parties_agree_on() -> None:
    base = SessionConfig(b"s" * 32, (1, 2, 3), {"t": 2, "key": b"\x01" * 4, "nested": {"a": (1,)}})
    digest = config_digest(base)
    assert digest == config_digest(SessionConfig(base.session_id, base.roster, dict(base.options)))
    changed = [
        SessionConfig(b"z" * 32, base.roster, base.options),
        SessionConfig(base.session_id, (1, 2, 4), base.options),
        SessionConfig(base.session_id, base.roster, {**base.options, "t": 3}),
        SessionConfig(base.session_id, base.roster, {**base.options, "key": b"\x02" * 4}),
        SessionConfig(base.session_id, base.roster, {**base.options, "nested": {"a": (2,)}}),
        SessionConfig(base.session_id, base.roster, {**base.options, "extra": 0}),
    ]
    assert len({digest, *map(config_digest, changed)}) == len(changed) + 1
    local = SessionConfig(base.session_id, base.roster, {**base.options, "local.link": object()})
    assert config_digest(local) == digest
