"""An in-memory transport that drives a protocol session in one process.

Every message goes through the wire codec in both directions, so simulations exercise exactly the
bytes a real deployment would send. The bus records what the server receives (sizes always,
payloads on request) and can make clients drop out at a named round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from .api import AggregateResult, AggregationSpec, ClientId, ClientProtocol, ServerProtocol
from .driver import DropPlan, drive
from .messages import decode, encode, round_of, tag_of


@dataclass
class Received:
    """One message as the server received it."""

    step: int
    sender: ClientId
    tag: str
    round_name: str
    nbytes: int
    payload: bytes | None


@dataclass
class TrafficLog:
    """Bytes per (client, round) in each direction, and the server's view when recorded."""

    uplink: dict[tuple[ClientId, str], int] = field(default_factory=lambda: defaultdict(int))
    downlink: dict[tuple[ClientId, str], int] = field(default_factory=lambda: defaultdict(int))
    received: list[Received] = field(default_factory=list)

    def uplink_by_client(self) -> dict[ClientId, int]:
        totals: dict[ClientId, int] = defaultdict(int)
        for (client, _round), nbytes in self.uplink.items():
            totals[client] += nbytes
        return dict(totals)

    def uplink_by_round(self, client: ClientId) -> dict[str, int]:
        return {r: n for (c, r), n in self.uplink.items() if c == client}


class InMemoryBus:
    """Runs aggregations between one server and its clients.

    `drop_at` maps a client to the round name at which it stops answering (it never answers a
    message of that round or any later one, in this or later aggregations).
    """

    def __init__(
        self,
        server: ServerProtocol,
        clients: Mapping[ClientId, ClientProtocol],
        drop_at: Mapping[ClientId, str] | None = None,
        record_payloads: bool = False,
        max_steps: int = 1_000_000,
    ) -> None:
        self.server = server
        self.clients = dict(clients)
        self.drops = DropPlan(drop_at)
        self.record_payloads = record_payloads
        self.max_steps = max_steps
        self.log = TrafficLog()
        self._step = 0

    @property
    def dropped(self) -> set[ClientId]:
        """The clients that have stopped answering."""
        return self.drops.stopped

    def run(self, spec: AggregationSpec) -> AggregateResult:
        return drive(self.server, spec, self._deliver_all, self.max_steps)

    def _deliver_all(self, outgoing: Mapping[ClientId, object]) -> dict[ClientId, object]:
        replies = {}
        for client_id, msg in outgoing.items():
            reply = self._deliver(client_id, msg)
            if reply is not None:
                replies[client_id] = reply
        self._step += 1
        return replies

    def _deliver(self, client_id: ClientId, msg: object) -> object | None:
        wire = encode(msg)
        round_name = round_of(msg)
        self.log.downlink[(client_id, round_name)] += len(wire)
        if self.drops.silent(client_id, msg) or client_id not in self.clients:
            return None
        reply = self.clients[client_id].handle(decode(wire))
        if reply is None:
            return None
        reply_wire = encode(reply)
        self.log.uplink[(client_id, round_name)] += len(reply_wire)
        self.log.received.append(
            Received(
                step=self._step,
                sender=client_id,
                tag=tag_of(reply),
                round_name=round_name,
                nbytes=len(reply_wire),
                payload=reply_wire if self.record_payloads else None,
            )
        )
        return decode(reply_wire)
