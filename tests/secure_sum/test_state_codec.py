"""Frozen protocol states survive the strict state codec, and a blob builds nothing else."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.secure_sum.api import (
    STATE_MAGIC,
    STATE_VERSION,
    AggregationSpec,
    SessionConfig,
    decode_state,
    encode_state,
    load_state,
    save_state,
    state_type,
)


@state_type("test-codec/inner")
@dataclasses.dataclass(frozen=True)
class Inner:
    owner: int
    key: bytes


@state_type("test-codec/outer")
@dataclasses.dataclass(frozen=True)
class Outer:
    config: SessionConfig
    spec: AggregationSpec
    peers: dict[int, Inner]
    graph: dict[int, frozenset[int]]
    dead: frozenset[int]
    order: tuple[int, ...]


@state_type("test-codec/empty")
@dataclasses.dataclass(frozen=True)
class Empty:
    pass


def outer() -> Outer:
    return Outer(
        config=SessionConfig(b"s" * 32, (1, 2), {"k": {1: b"\x00"}}),
        spec=AggregationSpec.from_lengths(2, {"a": 3}, 1),
        peers={1: Inner(1, b"\xff" * 3), 2: Inner(2, b"")},
        graph={1: frozenset({2}), 2: frozenset({1})},
        dead=frozenset({5, 3}),
        order=(2, 1),
    )


def raw(protocol: str, state: object) -> bytes:
    """A hand-written blob whose "state" field is the tagged JSON `state`."""
    fields = {"$d": [["state", state]]}
    body = json.dumps({"protocol": protocol, "fields": fields}).encode()
    return STATE_MAGIC + bytes([STATE_VERSION]) + body


def test_a_registered_state_round_trips_exactly_with_frozen_sets() -> None:
    state = outer()
    back = load_state("p", save_state("p", state), Outer)
    assert back == state
    assert type(back.dead) is frozenset and type(back.graph[1]) is frozenset
    assert type(back.peers[1]) is Inner
    assert load_state("p", save_state("p", Empty()), (Empty, Outer)) == Empty()
    # top-level sets outside a registered state keep their old meaning
    assert type(decode_state("p", encode_state("p", {"s": {1}}))["s"]) is set


def test_only_registered_frozen_dataclasses_are_states() -> None:
    @dataclasses.dataclass(frozen=True)
    class Unregistered:
        x: int

    @dataclasses.dataclass
    class Mutable:
        x: int

    with pytest.raises(TypeError):
        save_state("p", Unregistered(1))
    with pytest.raises(TypeError):
        encode_state("p", {"x": Unregistered(1)})
    with pytest.raises(TypeError, match="frozen"):
        state_type("test-codec/mutable")(Mutable)
    with pytest.raises(ValueError, match="twice"):
        state_type("test-codec/inner")(Unregistered)
    with pytest.raises(ValueError, match="twice"):
        state_type("test-codec/other-name")(Inner)


def test_a_blob_names_only_registered_types_and_their_exact_fields() -> None:
    for name in ("os:system", "builtins.eval", "fedprllm_secure.secure_sum.api:SessionConfig"):
        with pytest.raises(ProtocolError, match="unknown state type"):
            decode_state("p", raw("p", {"$dc": [name, []]}))
    good = [["owner", 1], ["key", {"$b": ""}]]
    assert load_state("p", raw("p", {"$dc": ["test-codec/inner", good]}), Inner) == Inner(1, b"")
    for body in (
        good[:1],  # a field missing
        [*good, ["extra", 1]],  # an unknown field
        [good[0], good[0]],  # a field twice
        [["owner", 1], ["key", {"$b": ""}], ["owner", 2]],
        "not a list",
    ):
        with pytest.raises(ProtocolError):
            decode_state("p", raw("p", {"$dc": ["test-codec/inner", body]}))


def test_load_state_refuses_another_protocol_or_kind() -> None:
    blob = save_state("p", Empty())
    with pytest.raises(ProtocolError):
        load_state("q", blob, Empty)
    with pytest.raises(ProtocolError, match="holds no"):
        load_state("p", blob, Outer)
    with pytest.raises(ProtocolError, match="holds no"):
        load_state("p", encode_state("p", {"state": Empty(), "more": 1}), Empty)
