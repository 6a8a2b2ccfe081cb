"""Fuzz: >= 10^4 random and mutated byte strings per run into every additive decoder.

Only the project's error type (MessageDecodeError / ProtocolError) may come out; decoded mutants
are also handed to a party in the matching state, which must answer or refuse with ProtocolError.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from fedprllm_secure.errors import MessageDecodeError, ProtocolError
from fedprllm_secure.randomness import SeededRandomSource
from fedprllm_secure.secure_sum.additive import primitives as P
from fedprllm_secure.secure_sum.additive.messages import CLIENT_MESSAGES, SERVER_MESSAGES
from fedprllm_secure.secure_sum.additive.shamir import parse_share
from fedprllm_secure.secure_sum.api import AggregateResult, AggregationSpec
from fedprllm_secure.secure_sum.messages import decode
from fedprllm_secure.secure_sum.packing import unpack_uint
from tests.tools.additive_harness import build, deliver

ROSTER = (0, 1, 2)
MUTANTS_PER_TYPE = 1000
RANDOM_PER_TYPE = 100
STATEFUL_PER_TYPE = 15


def new_session():
    inputs = {c: (lambda i, ch: np.ones(ch.length, dtype=np.uint8)) for c in ROSTER}
    return build(ROSTER, inputs, SeededRandomSource(b"fuzz"), {"threshold": 2}, record=True)


def spec():
    return AggregationSpec.from_lengths(0, {"a": 9, "b": 2}, 1)


def honest_wires():
    """One valid wire encoding of every additive message type, from a recorded session."""
    session = new_session()
    out = session.server.begin(spec())
    while not isinstance(out, AggregateResult):
        out = session.server.handle(deliver(session, out))
    wires = {}
    for _direction, _client, wire in session.transcript:
        kind = type(decode(wire))
        wires.setdefault(kind, wire)
    assert set(wires) == set(SERVER_MESSAGES + CLIENT_MESSAGES)
    return wires


def mutate(data: bytes, rnd: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(6)
        if op == 0 and buf:  # flip bits
            i = rnd.randrange(len(buf))
            buf[i] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:  # truncate
            del buf[rnd.randrange(len(buf)) :]
        elif op == 2:  # append
            buf += rnd.randbytes(rnd.randint(1, 8))
        elif op == 3 and buf:  # delete a byte
            del buf[rnd.randrange(len(buf))]
        elif op == 4 and len(buf) > 4:  # overwrite a 4-byte window (often a length prefix)
            i = rnd.randrange(len(buf) - 3)
            buf[i : i + 4] = rnd.choice(
                [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x01", rnd.randbytes(4)]
            )
        elif op == 5 and buf:  # set a byte to an edge value
            buf[rnd.randrange(len(buf))] = rnd.choice([0, 1, 0x7F, 0x80, 0xFF])
    return bytes(buf)


def party_in_state(kind):
    """A fresh party that would accept a message of `kind` in its current state."""
    session = new_session()
    server, client = session.server, session.clients[0]
    out = server.begin(spec())
    if kind in CLIENT_MESSAGES:
        index = CLIENT_MESSAGES.index(kind)
        target = ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmasking")
        while server.state != target[index]:
            out = server.handle(deliver(session, out))
        return lambda msg: server.handle({0: msg})
    state = {
        SERVER_MESSAGES[0]: "advertise-keys",
        SERVER_MESSAGES[1]: "share-keys",
        SERVER_MESSAGES[2]: "masked-input",
        SERVER_MESSAGES[3]: "consistency-check",
        SERVER_MESSAGES[4]: "unmasking",
    }[kind]
    while client.state != state:
        out = server.handle(deliver(session, out))
    return client.handle


@pytest.fixture(scope="module")
def wires():
    return honest_wires()


@pytest.mark.parametrize("kind", SERVER_MESSAGES + CLIENT_MESSAGES, ids=lambda k: k.__name__)
def test_decoder_raises_only_the_project_error(kind, wires):
    rnd = random.Random(kind.__name__)  # fuzz inputs only, not protocol randomness
    valid = wires[kind]
    decoded = []
    for i in range(MUTANTS_PER_TYPE + RANDOM_PER_TYPE):
        if i < MUTANTS_PER_TYPE:
            data = mutate(valid, rnd)
        elif i % 2:
            data = rnd.randbytes(rnd.randint(0, 300))
        else:
            data = valid[:9] + rnd.randbytes(rnd.randint(0, 300))  # right magic and tag prefix
        try:
            msg = decode(data)
        except MessageDecodeError:
            continue
        if type(msg) is kind and data != valid:
            decoded.append(msg)
    for msg in decoded[:STATEFUL_PER_TYPE]:
        handle = party_in_state(kind)
        try:
            handle(msg)
        except ProtocolError:
            pass


def test_total_fuzz_volume_is_at_least_ten_thousand():
    kinds = len(SERVER_MESSAGES + CLIENT_MESSAGES)
    assert kinds * (MUTANTS_PER_TYPE + RANDOM_PER_TYPE) >= 10_000


def test_field_decoders_raise_only_the_project_error():
    rnd = random.Random(7)
    key = bytes(32)
    for _ in range(2000):
        data = rnd.randbytes(rnd.randint(0, 80))
        for bits in (1, 2, 3, 4, 7, 12):
            length = rnd.randint(0, 100)
            try:
                unpack_uint(data, bits, length)
            except MessageDecodeError:
                pass
        try:
            parse_share(data)
        except ProtocolError:
            pass
        try:
            P.open_sealed(key, key, 0, 1, 2, data)
        except ProtocolError:
            pass
        try:
            P.agree(P.new_x25519(SeededRandomSource(data)), data)
        except ProtocolError:
            pass
