"""The server of `additive`: a thin shell around the typed states and their transitions.

It holds the server's context and its current state (one frozen type per round,
`server_states`), advances it with `server_steps.server_begin` / `server_step`, and maps the
outcome onto `ServerProtocol`: `Send` -> the messages, `Finished` -> the `AggregateResult`,
`AbortAggregation` -> `AggregationAborted` (a ProtocolError carrying the abort notices).
Clients dropped for refusing are kept in `dropped`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...randomness import RandomSource
from ..api import (
    AggregateResult,
    AggregationAborted,
    AggregationSpec,
    ClientId,
    ServerProtocol,
    SessionConfig,
    config_digest,
)
from .messages import SignedKeys
from .params import Params, read_params
from .server_rounds import ServerContext
from .server_states import ROUND_TYPES, AbortAggregation, Finished, Idle, Outcome, ServerState
from .server_steps import server_begin, server_step

ROUND_STATES = tuple(dict.fromkeys(kind.ROUND for kind in ROUND_TYPES))


class AdditiveServer(ServerProtocol):
    def __init__(self, config: SessionConfig, rng: RandomSource) -> None:
        # the server draws no randomness (`rng` is part of the protocol factory's signature)
        self._ctx = ServerContext(config, read_params(config), config_digest(config))
        self._current: ServerState = Idle()
        self.dropped: dict[ClientId, str] = {}  # clients left out because they refused

    @property
    def state(self) -> str:
        """The round name of the current state."""
        return self._current.ROUND

    @property
    def current(self) -> ServerState:
        """The current typed state (frozen)."""
        return self._current

    def begin(self, spec: AggregationSpec) -> dict[ClientId, Any]:
        self._current, outcome = server_begin(self._ctx, self._current, spec)
        return self._deliver(outcome)  # type: ignore[return-value]

    def handle(self, replies: dict[ClientId, Any]) -> dict[ClientId, Any] | AggregateResult:
        self._current, outcome = server_step(self._ctx, self._current, replies)
        return self._deliver(outcome)

    def _deliver(self, outcome: Outcome) -> dict[ClientId, Any] | AggregateResult:
        if isinstance(outcome, AbortAggregation):
            raise AggregationAborted(outcome.reason, outcome.notices)
        self.dropped.update({d.client: d.reason for d in outcome.dropped})
        if isinstance(outcome, Finished):
            return outcome.result
        return dict(outcome.messages)

    # --- read-only views (tests read them) ------------------------------------------------------

    @property
    def config(self) -> SessionConfig:
        return self._ctx.config

    @property
    def params(self) -> Params:
        return self._ctx.params

    @property
    def graph(self) -> dict[int, frozenset[int]]:
        roster = getattr(self._current, "roster", None)
        return dict(roster.graph) if roster is not None else {}

    @property
    def keys(self) -> dict[int, SignedKeys]:
        roster = getattr(self._current, "roster", None)
        return dict(roster.keys) if roster is not None else {}

    @property
    def sums(self) -> dict[str, np.ndarray]:
        """The running masked sums of the aggregation (packed words), by chunk."""
        return dict(getattr(self._current, "sums", {}))
