"""Parsers of untrusted bytes bound sizes before allocating and raise only the project's errors.

Two decoders read bytes another party wrote: the message codec (`secure_sum.messages`, every
message of every registered protocol) and the saved-state codec (`api.decode_state`: a Flower
node's saved client, its contribution ledger, and the session config the server sends it). The
cases here are structure-aware: valid encodings with a length or count rewritten, truncated at
every byte, nested deeply, or inflated past the size bound.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
import tracemalloc
import typing
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedprllm_secure.errors import MessageDecodeError, ProtocolError
from fedprllm_secure.secure_sum import api, messages, registry
from fedprllm_secure.secure_sum.api import (
    STATE_MAGIC,
    STATE_VERSION,
    AggregationSpec,
    ChunkSpec,
    SessionConfig,
    decode_state,
    encode_state,
)
from fedprllm_secure.secure_sum.ledger import ContributionLedger
from fedprllm_secure.secure_sum.messages import decode, encode, message

registry.available()  # every built-in protocol registers its messages on import

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)


# --- the message codec ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Empty:
    """An item that encodes to no bytes at all."""


@message("test/parsers-empties", "test-round")
@dataclass(frozen=True)
class Empties:
    items: tuple[Empty, ...]


@dataclass(frozen=True)
class Scaled:
    exponent: int

    def __post_init__(self) -> None:
        2.0**self.exponent  # OverflowError for a large exponent: a constructor's own check


@message("test/parsers-scaled", "test-round")
@dataclass(frozen=True)
class ScaledMessage:
    value: Scaled


@message("test/parsers-number", "test-round")
@dataclass(frozen=True)
class Number:
    value: int
    flag: bool


def registered() -> list[type]:
    """Every registered message type the codec can encode (all but `Empties`)."""
    return [messages._MESSAGES[tag] for tag in sorted(messages._MESSAGES) if tag != Empties.TAG]


def values(kind: Any) -> st.SearchStrategy[Any]:
    """Valid values of a codec field type (small, but every shape the codec can carry)."""
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers() | st.integers(-(2**300), 2**300)
    if kind is bytes:
        return st.binary(max_size=24)
    if kind is str:
        return st.text(max_size=8)
    if typing.get_origin(kind) is tuple:
        return st.lists(values(typing.get_args(kind)[0]), max_size=3).map(tuple)
    if kind is ChunkSpec:
        return st.builds(ChunkSpec, st.text(max_size=6), st.integers(0, 2**64), st.integers(0, 9))
    if kind is AggregationSpec:
        return st.builds(
            AggregationSpec.from_lengths,
            st.integers(0, 2**40),
            st.dictionaries(st.text(max_size=4), st.integers(0, 2**40), max_size=3),
            st.integers(1, 2**64),
        )
    assert dataclasses.is_dataclass(kind), kind
    fields = messages._fields(kind)

    def build(parts: tuple) -> Any:
        try:
            return kind(**dict(zip([name for name, _ in fields], parts, strict=True)))
        except (ValueError, TypeError, ArithmeticError):
            return None

    strategy = st.tuples(*(values(field_kind) for _, field_kind in fields)).map(build)
    return strategy.filter(lambda value: value is not None)


@st.composite
def wires(draw: st.DrawFn) -> bytes:
    msg = draw(values(draw(st.sampled_from(registered()))))
    wire = encode(msg)
    assert decode(wire) == msg
    return wire


def prefixes(wire: bytes) -> list[int]:
    """Offsets of every 4-byte length prefix and count in a valid encoding (the format's walk)."""
    found: list[int] = []
    pos = 5

    def walk(kind: Any) -> None:
        nonlocal pos
        if kind is bool:
            pos += 1
        elif kind in (int, bytes, str):
            found.append(pos)
            pos += 4 + struct.unpack(">I", wire[pos : pos + 4])[0]
        elif typing.get_origin(kind) is tuple:
            found.append(pos)
            count = struct.unpack(">I", wire[pos : pos + 4])[0]
            pos += 4
            for _ in range(count):
                walk(typing.get_args(kind)[0])
        else:
            for _name, field_kind in messages._fields(kind):
                walk(field_kind)

    tag_length = struct.unpack(">I", wire[5:9])[0]
    cls = messages._MESSAGES[wire[9 : 9 + tag_length].decode()]
    walk(str)
    walk(cls)
    assert pos == len(wire)
    return found


def bounded_decode(data: bytes, raising: bool = False) -> Any:
    """`decode(data)`: a message whose encoding is `data`, or MessageDecodeError (None unless
    `raising`); nothing else, within O(len(data)) memory and little time."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        msg = decode(data)
    except MessageDecodeError:
        if raising:
            raise
        msg = None
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 64 * len(data) + (1 << 20), f"decoding {len(data)} bytes took {peak} bytes"
    assert time.perf_counter() - start < 5
    if msg is not None:
        assert encode(msg) == bytes(data), "decode accepted a non-canonical encoding"
    return msg


LENGTHS = st.sampled_from([0, 1, 2, 3, 5, 14, 255, 2**16, 2**24, 2**31 - 1, 2**31, 2**32 - 1])


@FUZZ
@given(wire=wires(), data=st.data())
def test_rewritten_lengths_and_counts_raise_only_the_decode_error(wire: bytes, data) -> None:
    offsets = prefixes(wire)
    assume(offsets)
    mutated = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 3))):
        offset = data.draw(st.sampled_from(offsets))
        old = struct.unpack(">I", wire[offset : offset + 4])[0]
        new = data.draw(
            LENGTHS
            | st.integers(0, 2**32 - 1)
            | st.sampled_from([old + 1, max(old - 1, 0), len(wire) - offset, len(wire)])
        )
        mutated[offset : offset + 4] = struct.pack(">I", new % 2**32)
    bounded_decode(bytes(mutated))


@FUZZ
@given(wire=wires(), data=st.data())
def test_spliced_and_flipped_encodings_raise_only_the_decode_error(wire: bytes, data) -> None:
    mutated = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(mutated)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "repeat"]))
        if action == "flip" and where < len(mutated):
            mutated[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "insert":
            mutated[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del mutated[where : where + data.draw(st.integers(1, 8))]
        elif action == "repeat":
            mutated[where:where] = mutated[where : where + data.draw(st.integers(1, 16))]
    bounded_decode(bytes(mutated))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(wire=wires())
def test_every_truncation_of_a_valid_message_is_refused(wire: bytes) -> None:
    for cut in range(len(wire)):
        with pytest.raises(MessageDecodeError):
            decode(wire[:cut])


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@pytest.mark.parametrize("cls", registered(), ids=lambda c: c.TAG)
@given(data=st.data())
def test_every_count_and_length_at_its_maximum_is_refused_cheaply(cls: type, data) -> None:
    wire = encode(data.draw(values(cls)))
    for offset in prefixes(wire):
        for huge in (2**31, 2**32 - 1, len(wire)):
            mutated = bytearray(wire)
            mutated[offset : offset + 4] = struct.pack(">I", huge)
            assert bounded_decode(bytes(mutated)) is None


def test_a_count_of_fieldless_items_cannot_make_the_decoder_build_them() -> None:
    # Items that encode to no bytes: no message size bounds their count, so none are allowed.
    with pytest.raises(TypeError):
        encode(Empties((Empty(),) * 3))
    wire = bytearray(messages.MAGIC + bytes([messages.VERSION]))
    wire += struct.pack(">I", len(Empties.TAG)) + Empties.TAG.encode()
    for count in (0, 3, 1 << 20, 2**32 - 1):
        with pytest.raises(MessageDecodeError, match="no bytes"):
            bounded_decode(bytes(wire + struct.pack(">I", count)), raising=True)


def test_a_constructor_error_of_a_nested_record_is_a_decode_error() -> None:
    wire = encode(ScaledMessage(Scaled(3)))
    assert wire.endswith(struct.pack(">I", 1) + b"\x03")
    overflowing = wire[:-5] + struct.pack(">I", 2) + (4096).to_bytes(2, "big")
    with pytest.raises(MessageDecodeError, match="Scaled"):
        decode(overflowing)


def test_a_huge_but_valid_int_decodes_in_linear_time() -> None:
    # The generic layer does not bound values: a handler bounds what it acts on (e.g. a length).
    value = 1 << (8 * 2**20 - 2)
    wire = encode(Number(value, True))
    start = time.perf_counter()
    assert decode(wire) == Number(value, True)
    assert time.perf_counter() - start < 2


def test_only_the_canonical_encoding_decodes() -> None:
    # One message, one encoding: what a party signs or hashes is what the other one parsed.
    wire = encode(Number(5, True))
    assert wire.endswith(struct.pack(">I", 1) + b"\x05\x01")
    head = wire[:-6]
    assert decode(head + struct.pack(">I", 1) + b"\x05\x00") == Number(5, False)
    for other in (
        struct.pack(">I", 2) + b"\x00\x05\x01",  # an int with a leading zero byte
        struct.pack(">I", 2) + b"\xff\xfb\x01",  # -5 with a leading sign byte
        struct.pack(">I", 0) + b"\x01",  # an empty int
        struct.pack(">I", 1) + b"\x05\x02",  # a bool that is neither 0 nor 1
        struct.pack(">I", 1) + b"\x05\x01\x00",  # a trailing byte
    ):
        with pytest.raises(MessageDecodeError):
            decode(head + other)


# --- saved states -------------------------------------------------------------------------------


def state_blob(body: str) -> bytes:
    return STATE_MAGIC + bytes([STATE_VERSION]) + body.encode("utf-8")


def nested_lists(depth: int) -> str:
    return '{"protocol":"p","fields":{"$d":[["x",' + "[" * depth + "]" * depth + "]]}}"


def nested_tuples(depth: int) -> str:
    return '{"protocol":"p","fields":{"$d":[["x",' + '{"$t":[' * depth + "]}" * depth + "]]}}"


@pytest.mark.parametrize(
    "body",
    [
        nested_lists(100_000),
        nested_lists(3_000),
        nested_tuples(700),
        nested_tuples(400),
        '{"protocol":"p","fields":' + "[" * 200_000,  # unterminated
        '{"protocol":"p","fields":{"$d":[["x","' + "[" * 500 + '"]]}}' + "]" * 70,  # junk after
    ],
    ids=["lists-100k", "lists-3k", "tuples-700", "tuples-400", "unterminated", "junk"],
)
def test_deeply_nested_state_raises_only_the_protocol_error(body: str) -> None:
    with pytest.raises(ProtocolError):
        decode_state("p", state_blob(body))


def test_nesting_within_the_bound_still_decodes_and_brackets_in_strings_do_not_count() -> None:
    fields = {"x": [[[[["[[[[{{{{" * 100]]]]], "y": '\\"' + "[" * 1000}
    assert decode_state("p", encode_state("p", fields)) == fields
    assert decode_state("p", state_blob(nested_lists(api.MAX_STATE_DEPTH - 4)))["x"] is not None


def test_a_state_over_the_size_bound_is_refused_before_it_is_read(monkeypatch) -> None:
    blob = encode_state("p", {"x": "a" * 1000})
    monkeypatch.setattr(api, "MAX_STATE_BYTES", len(blob))
    assert decode_state("p", blob) == {"x": "a" * 1000}
    monkeypatch.setattr(api, "MAX_STATE_BYTES", len(blob) - 1)

    def not_parsed(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("an oversized state was parsed")

    monkeypatch.setattr(api.json, "loads", not_parsed)
    with pytest.raises(ProtocolError, match="bytes"):
        decode_state("p", blob)
    with pytest.raises(ProtocolError, match="bytes"):
        encode_state("p", {"x": "a" * 1000})  # and a state that large is never written


@pytest.mark.parametrize("data", [2**40, "FPST\x01{}", None, [1, 2]], ids=repr)
def test_a_state_that_is_not_bytes_is_refused(data: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_state("p", data)


def saved_states() -> list[tuple[str, bytes]]:
    config = SessionConfig(b"s" * 32, (1, 2, 3), {"t": 2, "key": b"\x00" * 5, "nested": {1: (2,)}})
    ledger = ContributionLedger()
    ledger.record(b"b" * 32, 0, ChunkSpec("layer.0", 4, 0))
    spec = AggregationSpec.from_lengths(1, {"a": 3, "b": 4}, bound=7)
    return [
        ("session-config", encode_state("session-config", {"config": config})),
        ("contribution-ledger", ledger.to_bytes()),
        ("p", encode_state("p", {"spec": spec, "set": {1, 2}, "none": None, "f": 0.5})),
    ]


@pytest.mark.parametrize("name,blob", saved_states(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_truncation_of_a_saved_state_raises_only_the_protocol_error(
    name: str, blob: bytes
) -> None:
    decode_state(name, blob)
    for cut in range(len(blob)):
        with pytest.raises(ProtocolError):
            decode_state(name, blob[:cut])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.binary(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=4) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)
STATE_EDITS = st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b'{"$t":[', b",", b"9" * 5000])


@FUZZ
@given(fields=st.dictionaries(st.text(max_size=4), json_values, max_size=4), data=st.data())
def test_edited_saved_states_raise_only_the_protocol_error(fields: dict, data) -> None:
    blob = encode_state("p", fields)
    assert decode_state("p", blob) == fields
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(5, len(mutated)))
        edit = data.draw(STATE_EDITS | st.binary(min_size=1, max_size=3))
        repeat = data.draw(st.sampled_from([1, 2, 70, 5000]))
        if data.draw(st.booleans()):
            mutated[where:where] = edit * repeat
        else:
            mutated[where : where + len(edit)] = edit
    try:
        decode_state("p", bytes(mutated))
    except ProtocolError:
        pass


@FUZZ
@given(value=json_values)
def test_the_depth_pre_scan_matches_the_parsed_depth(value: Any) -> None:
    from fedprllm_secure.secure_sum.api import _json_depth, _to_json

    def depth(item: Any) -> int:
        if isinstance(item, list):
            return 1 + max(map(depth, item), default=0)
        if isinstance(item, dict):
            return 1 + max(map(depth, item.values()), default=0)
        return 0

    as_json = _to_json(value)
    assert _json_depth(json.dumps(as_json).encode()) == depth(as_json)
