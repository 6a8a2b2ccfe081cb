"""One secure-sum session run in process: enroll, build both sides, run aggregations on a bus.

This is what `simulate` uses and what a test needs to sum vectors through any registered protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..randomness import RandomSource
from .api import (
    AggregateResult,
    AggregationSpec,
    ClientId,
    InputProvider,
    SessionConfig,
    config_digest,
)
from .ledger import ContributionLedger
from .registry import get
from .transport import InMemoryBus


class SimulatedSession:
    """A session of protocol `name` between one server and `inputs.keys()` clients.

    `inputs[c]` is client c's InputProvider. `drop_at[c]` names the round at which client c stops
    answering for good. `rng` seeds everything (server, clients, enrollment) through children.
    Each client's provider is guarded by its `ledgers[c]` (a fresh ledger where none is given):
    a chunk goes to at most one aggregation; pass the same ledgers to every session of one
    pruning round so that a later session cannot ask for it again.
    """

    def __init__(
        self,
        name: str,
        inputs: Mapping[ClientId, InputProvider],
        rng: RandomSource,
        options: Mapping[str, Any] | None = None,
        drop_at: Mapping[ClientId, str] | None = None,
        record_payloads: bool = False,
        ledgers: Mapping[ClientId, ContributionLedger] | None = None,
    ) -> None:
        self.info = get(name)
        session_id = rng.child("session-id").random_bytes(32)
        config = SessionConfig(session_id, tuple(sorted(inputs)), dict(options or {}))
        self.config, identities = self.info.enroll(config, rng.child("enroll"))
        server = self.info.make_server(self.config, rng.child("server"))
        binding = config_digest(self.config)
        self.ledgers = {
            c: (ledgers or {}).get(c) or ContributionLedger() for c in self.config.roster
        }
        clients = {
            client: self.info.make_client(
                self.config,
                client,
                rng.child(f"client-{client}"),
                self.ledgers[client].guard(inputs[client], binding),
                identities.get(client),
            )
            for client in self.config.roster
        }
        self.bus = InMemoryBus(server, clients, drop_at=drop_at, record_payloads=record_payloads)

    def aggregate(self, spec: AggregationSpec) -> AggregateResult:
        return self.bus.run(spec)
