"""The federation port: how the pipeline's server side reaches the clients, whatever carries it.

The pipeline (strategies in `pipeline/strategies.py`) never knows whether its clients are objects
in this process, SuperNodes of a Flower deployment, or virtual clients of Flower's simulation
engine. It talks to a `Federation`:

* `command(stage, commands, timeout_s)`: send each client a `NodeCommand` (calibrate, prepare an
  upload, apply a global block mask, ...) and collect the `NodeAnswer`s that arrive in time. A
  client that does not answer, or answers with an error, is absent from the result and its reason
  is in `failures`.
* `open_session(protocol, options, roster)`: enroll `roster` in one secure-sum session of
  `protocol`; its `aggregate(spec)` sums what each client's node staged for that spec (the node's
  `provider`), through the protocol, and returns only the sum.

Every adapter drives the protocol with the one loop of `secure_sum.driver.drive`.
Adapters: `pipeline.inprocess.InProcessFederation`, `integrations.flower.federation.FlowerFederation`
(deployment and simulation engine alike).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..secure_sum.api import AggregateResult, AggregationSpec, ClientId, SessionConfig


@dataclass(frozen=True)
class NodeCommand:
    """One pipeline message to one client node: a kind, small JSON values, named arrays."""

    kind: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeAnswer:
    """A node's reply to a `NodeCommand`."""

    settings: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass
class SessionTraffic:
    """What a session's protocol messages cost, as the server saw them."""

    uplink_bytes: dict[ClientId, int] = field(default_factory=dict)
    uplink_bytes_by_round: dict[ClientId, dict[str, int]] = field(default_factory=dict)
    rounds: int = 0
    dropped: set[ClientId] = field(default_factory=set)
    received_messages: int = 0
    received_bytes: int = 0
    message_types: tuple[str, ...] = ()  # the protocol message tags the server received


class SecureSumSession(ABC):
    """One enrolled secure-sum session: several aggregations, keys set up once."""

    config: SessionConfig
    traffic: SessionTraffic

    @abstractmethod
    def aggregate(self, spec: AggregationSpec) -> AggregateResult:
        """Sum, through the protocol, what every roster client's node staged for `spec`."""


class Federation(ABC):
    """The clients of one run, reachable by commands and secure-sum sessions."""

    clients: tuple[ClientId, ...]  # every client of the run, in roster order
    failures: dict[ClientId, str]  # client -> why it was left out (first reason kept)

    @abstractmethod
    def command(
        self, stage: str, commands: Mapping[ClientId, NodeCommand], timeout_s: float
    ) -> dict[ClientId, NodeAnswer]:
        """Send each client its command; the answers that arrived within `timeout_s`."""

    @abstractmethod
    def open_session(
        self, protocol: str, options: Mapping[str, Any], roster: tuple[ClientId, ...]
    ) -> SecureSumSession:
        """Enroll `roster` in a new session of `protocol` with `options` (cohort option set)."""

    def simulate_drops(self, plan: Mapping[ClientId, str]) -> None:
        """Make client c stop answering at round `plan[c]` in the sessions opened from now on
        (`federation.drop`); only an engine that simulates its clients can."""
        if plan:
            raise ConfigError("federation.drop simulates dropouts: only the in-process engine")

    def alive(self) -> tuple[ClientId, ...]:
        """The clients not left out so far."""
        return tuple(c for c in self.clients if c not in self.failures)
