"""Enrollment where it belongs in a deployment: every secret is created on its own node.

Each protocol says how through its `ProtocolInfo` hooks (`prepare_options` on the server,
`node_enroll` on each node, `publish` on the server), so any registered protocol, built-in or from
an entry point, enrolls the same way. The server relays the public parts, so a malicious server
could substitute them; pin them out of band (a trust file, `trust.py`) where the server is not
trusted with key distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...randomness import RandomSource
from ...secure_sum import registry
from ...secure_sum.api import ClientId, SessionConfig


def prepare_options(
    protocol: str, roster: tuple[ClientId, ...], options: Mapping[str, Any]
) -> dict[str, Any]:
    """The session options every node receives before enrollment (validated here, on the server)."""
    return registry.get(protocol).prepare_options(roster, options)


def node_enroll(
    protocol: str, config: SessionConfig, client_id: ClientId, rng: RandomSource
) -> tuple[bytes | None, bytes]:
    """(secret kept in the node's state, public part sent to the server) for one node."""
    return registry.get(protocol).node_enroll(config, client_id, rng)


def publish(
    protocol: str, config: SessionConfig, publics: Mapping[ClientId, bytes]
) -> SessionConfig:
    """The session config with the nodes' public parts, as every party will use it."""
    return registry.get(protocol).publish(config, publics)
