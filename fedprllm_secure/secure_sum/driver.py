"""The one loop that drives a protocol's server through an aggregation, over any transport.

`begin(spec)`, then: send the server's messages, hand it the replies that came back, until it
returns the `AggregateResult`. The transport (`deliver`) decides what "came back" means: the
in-memory bus, a test harness or a federation's deadline. `DropPlan` is the one place that makes a
client stop answering for good at a named round (simulated dropouts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ProtocolError
from .api import AggregateResult, AggregationSpec, ClientId, ServerProtocol
from .messages import round_of

# Sends each message to its client; returns the replies that arrived (absent: no reply).
Deliver = Callable[[Mapping[ClientId, Any]], Mapping[ClientId, Any]]


def drive(
    server: ServerProtocol, spec: AggregationSpec, deliver: Deliver, max_steps: int = 1_000_000
) -> AggregateResult:
    """Run one aggregation of `server` to its result; ProtocolError if it never finishes."""
    outgoing: Any = server.begin(spec)
    for _ in range(max_steps):
        result = server.handle(dict(deliver(outgoing)))
        if isinstance(result, AggregateResult):
            return result
        outgoing = result
    raise ProtocolError(f"protocol did not finish within {max_steps} steps")


class DropPlan:
    """Client c stops answering for good at the first message of round `at[c]` (in this and every
    later aggregation of the session)."""

    def __init__(self, at: Mapping[ClientId, str] | None = None) -> None:
        self.at = dict(at or {})
        self.stopped: set[ClientId] = set()

    def silent(self, client: ClientId, message: Any) -> bool:
        """True if `client` does not answer `message` (it has dropped out)."""
        if self.at.get(client) == round_of(message):
            self.stopped.add(client)
        return client in self.stopped
