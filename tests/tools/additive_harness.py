"""Drive one `additive` session by hand: build both sides, deliver messages through the codec.

Used by the vector generator and the tests; simulations and deployments use a transport instead.
Every message crosses `encode`/`decode`, so what is tested is what travels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedprllm_secure.randomness import RandomSource
from fedprllm_secure.secure_sum.additive import enroll
from fedprllm_secure.secure_sum.additive.client import AdditiveClient
from fedprllm_secure.secure_sum.additive.server import AdditiveServer
from fedprllm_secure.secure_sum.api import (
    AggregateResult,
    AggregationSpec,
    ClientId,
    InputProvider,
    SessionConfig,
)
from fedprllm_secure.secure_sum.driver import DropPlan, drive
from fedprllm_secure.secure_sum.messages import decode, encode


@dataclass
class Session:
    config: SessionConfig
    server: AdditiveServer
    clients: dict[ClientId, AdditiveClient]
    identities: dict[ClientId, bytes]
    transcript: list[tuple[str, ClientId, bytes]] = field(default_factory=list)
    record: bool = False


def build(
    roster: tuple[ClientId, ...],
    inputs: Mapping[ClientId, InputProvider],
    rng: RandomSource,
    options: Mapping[str, Any] | None = None,
    record: bool = False,
) -> Session:
    """A session whose every secret derives from `rng` (children named like SimulatedSession)."""
    session_id = rng.child("session-id").random_bytes(32)
    config, identities = enroll(
        SessionConfig(session_id, roster, dict(options or {})), rng.child("enroll")
    )
    server = AdditiveServer(config, rng.child("server"))
    clients = {
        c: AdditiveClient(config, c, rng.child(f"client-{c}"), inputs[c], identities[c])
        for c in roster
    }
    return Session(config, server, clients, identities, record=record)


def deliver(
    session: Session,
    outgoing: Mapping[ClientId, Any],
    drop: Callable[[ClientId, Any], bool] = lambda c, m: False,
) -> dict[ClientId, Any]:
    """Hand each message to its client (through the codec); collect the replies of the others."""
    replies = {}
    for client, msg in outgoing.items():
        wire = encode(msg)
        if session.record:
            session.transcript.append(("down", client, wire))
        if drop(client, msg):
            continue
        reply = session.clients[client].handle(decode(wire))
        if reply is None:
            continue
        reply_wire = encode(reply)
        if session.record:
            session.transcript.append(("up", client, reply_wire))
        replies[client] = decode(reply_wire)
    return replies


def run(
    session: Session,
    spec: AggregationSpec,
    drop_at: Mapping[ClientId, str] | None = None,
    gone: set[ClientId] | None = None,
) -> AggregateResult:
    """One aggregation; client c stops answering for good at round `drop_at[c]` (like InMemoryBus).

    `gone` carries the clients that already stopped across aggregations of one session.
    """
    plan = DropPlan(drop_at)
    if gone is not None:
        plan.stopped = gone  # shared across the aggregations of one session
    return drive(session.server, spec, lambda outgoing: deliver(session, outgoing, plan.silent))
