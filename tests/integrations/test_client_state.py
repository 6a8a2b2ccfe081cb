"""Protocol clients survive a save/restore around every message (a process per message)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum import registry
from fedprllm_secure.secure_sum.api import (
    AggregationSpec,
    ChunkSpec,
    ClientProtocol,
    SessionConfig,
    decode_state,
    encode_state,
)
from fedprllm_secure.secure_sum.transport import InMemoryBus

LENGTHS = {"a": 37, "b": 20}


class Reborn(ClientProtocol):
    """Holds only the saved bytes: every message restores the client, answers, saves it again."""

    def __init__(self, client: ClientProtocol, inputs: Any, seed: str) -> None:
        self.kind = type(client)
        self.client_id = client.client_id
        self.saved = client.to_state()
        self.inputs = inputs
        self.rng = SeededRandomSource(seed)
        self.restores = 0

    @property
    def state(self) -> str:
        return self.kind.from_state(self.saved, self.inputs, self.rng).state

    def handle(self, message: Any) -> Any:
        client = self.kind.from_state(self.saved, self.inputs, self.rng.child(str(self.restores)))
        self.restores += 1
        reply = client.handle(message)
        self.saved = client.to_state()
        return reply


def lengths(index: int) -> dict[str, int]:
    """Each aggregation sums its own chunks (a client contributes a chunk at most once)."""
    return {f"{index}.{name}": n for name, n in LENGTHS.items()}


def vectors(client: int, index: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([client, index])
    return {name: rng.integers(0, 2, n) for name, n in lengths(index).items()}


def run(protocol: str, options: dict, drop: dict[int, str]) -> list[Any]:
    info = registry.get(protocol)
    rng = SeededRandomSource(f"state-{protocol}")
    config = SessionConfig(rng.random_bytes(32), (0, 1, 2, 3), options)
    config, identities = info.enroll(config, rng.child("enroll"))

    def provider(c: int) -> Any:
        return lambda index, chunk: vectors(c, index)[chunk.name]

    clients = {
        c: Reborn(
            info.make_client(config, c, rng.child(f"c{c}"), provider(c), identities.get(c)),
            provider(c),
            f"reborn-{c}",
        )
        for c in config.roster
    }
    bus = InMemoryBus(info.make_server(config, rng.child("server")), clients, drop_at=drop)
    results = []
    for index in (0, 1):
        result = bus.run(AggregationSpec.from_lengths(index, lengths(index), bound=1))
        for name in lengths(index):
            expected = sum(vectors(c, index)[name] for c in result.contributors)
            assert np.array_equal(result.sums[name], expected)
        results.append(result)
    assert all(client.restores > 0 for c, client in clients.items() if c not in drop)
    return results


@pytest.mark.parametrize(
    "protocol, options, drop, contributors",
    [
        ("plaintext", {}, {}, (0, 1, 2, 3)),
        ("plaintext", {}, {2: "input"}, (0, 1, 3)),
        ("additive", {}, {}, (0, 1, 2, 3)),
        ("additive", {"threshold": 3}, {1: "masked-input"}, (0, 2, 3)),
        ("ckks", {"authority": 0}, {3: "encrypted-input"}, (0, 1, 2)),
        ("ckks", {"he_scheme": "bfv", "authority": 2}, {}, (0, 1, 2, 3)),
    ],
)
def test_a_client_restored_before_every_message_gives_the_same_sums(
    protocol: str, options: dict, drop: dict[int, str], contributors: tuple[int, ...]
) -> None:
    results = run(protocol, options, drop)
    assert results[0].contributors == contributors


def test_state_codec_round_trips_and_refuses_garbage() -> None:
    spec = AggregationSpec.from_lengths(3, {"x": 4, "y": 2}, bound=2)
    config = SessionConfig(b"s" * 32, (4, 9), {"keys": {4: b"\x00\xff"}, "t": None, "k": 2})
    fields = {
        "spec": spec,
        "cfg": config,
        "ids": {1, 2},
        "pair": (1, b"z"),
        "chunk": spec.chunks[1],
    }
    assert decode_state("p", encode_state("p", fields)) == fields
    with pytest.raises(ProtocolError):
        decode_state("q", encode_state("p", fields))
    for junk in (b"", b"FPST\x01{", b"FPST\x02{}", b"hello", encode_state("p", fields)[:-3]):
        with pytest.raises(ProtocolError):
            decode_state("p", junk)
    assert isinstance(spec.chunks[0], ChunkSpec)


def test_a_client_saved_after_an_abort_stays_aborted() -> None:
    info = registry.get("plaintext")
    config = SessionConfig(b"q" * 32, (0, 1))
    client = info.make_client(config, 0, SeededRandomSource(1), lambda i, c: np.zeros(1), None)
    with pytest.raises(ProtocolError):
        client.handle("not a message")
    restored = type(client).from_state(client.to_state(), lambda i, c: np.zeros(1), None)
    assert restored.state == "aborted"
