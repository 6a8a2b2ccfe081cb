"""The in-process federation: `ClientNode`s in this process sharing one model.

Commands are still `NodeCommand` -> `NodeAnswer` (the server side reads nothing else of a node);
a session is a `SimulatedSession` over the nodes' providers, guarded by their ledgers, with a
simulated dropout plan (`simulate_drops`). Each node's secret randomness is its own child of the
run's source (`node-<c>`); session `k` draws from `session-<k>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import data
from ..errors import FedPrError
from ..randomness import RandomSource
from ..secure_sum.api import AggregateResult, AggregationSpec, ClientId, SessionConfig
from ..secure_sum.session import SimulatedSession
from .client_step import ClientNode, NodeEnv
from .federation import Federation, NodeAnswer, NodeCommand, SecureSumSession, SessionTraffic
from .workbench import Workbench


class InProcessSession(SecureSumSession):
    """A `SimulatedSession` seen through the port; `simulated` keeps its bus (tests, audit)."""

    def __init__(self, simulated: SimulatedSession) -> None:
        self.simulated = simulated
        self.config: SessionConfig = simulated.config

    @property
    def traffic(self) -> SessionTraffic:  # type: ignore[override]
        log = self.simulated.bus.log
        return SessionTraffic(
            uplink_bytes=log.uplink_by_client(),
            uplink_bytes_by_round={c: log.uplink_by_round(c) for c in self.config.roster},
            rounds=len({r.tag for r in log.received}),
            dropped=set(self.simulated.bus.dropped),
            received_messages=len(log.received),
            received_bytes=sum(r.nbytes for r in log.received),
            message_types=tuple(sorted({r.tag for r in log.received})),
        )

    def aggregate(self, spec: AggregationSpec) -> AggregateResult:
        return self.simulated.aggregate(spec)


class InProcessFederation(Federation):
    """`nodes[c]` answers client c's commands in this process; errors propagate (`strict`) or
    leave the client out with its reason in `failures`."""

    def __init__(
        self, nodes: Sequence[ClientNode], source: RandomSource, strict: bool = True
    ) -> None:
        self.nodes = {node.client_id: node for node in nodes}
        self.clients = tuple(self.nodes)
        self.failures: dict[ClientId, str] = {}
        self.source = source
        self.strict = strict
        self.drop: dict[ClientId, str] = {}
        self.sessions = 0

    @classmethod
    def build(
        cls, bench: Workbench, texts: Sequence[data.ClientText], source: RandomSource
    ) -> InProcessFederation:
        """One node per text (client c = texts[c]) on `bench`, node c drawing from
        `source.child("node-<c>")`."""
        nodes = [
            ClientNode(NodeEnv(bench, text, source.child(f"node-{c}")), c)
            for c, text in enumerate(texts)
        ]
        return cls(nodes, source)

    def simulate_drops(self, plan: Mapping[ClientId, str]) -> None:
        self.drop = dict(plan)

    def command(
        self, stage: str, commands: Mapping[ClientId, NodeCommand], timeout_s: float
    ) -> dict[ClientId, NodeAnswer]:
        answers: dict[ClientId, NodeAnswer] = {}
        for client, command in commands.items():
            try:
                answers[client] = self.nodes[client].handle(command)
            except FedPrError as exc:
                if self.strict:
                    raise
                self.failures.setdefault(client, f"{stage}: {exc}")
        return answers

    def open_session(
        self, protocol: str, options: Mapping[str, Any], roster: tuple[ClientId, ...]
    ) -> InProcessSession:
        self.sessions += 1
        simulated = SimulatedSession(
            protocol,
            {c: self.nodes[c].provider for c in roster},
            self.source.child(f"session-{self.sessions}"),
            options=options,
            drop_at=self.drop,
            ledgers={c: self.nodes[c].ledger for c in roster},
        )
        return InProcessSession(simulated)
