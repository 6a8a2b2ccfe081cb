"""Enrollment of `additive`: every client's Ed25519 identity key on the roster.

`enroll` sets up a whole session in one process (simulations); `prepare_options`, `node_enroll`
and `publish` are the same setup with each key drawn on its own node (`ProtocolInfo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..api import ClientId, SessionConfig
from .params import default_threshold, read_params
from .primitives import new_ed25519, public_bytes

IDENTITY_KEYS = "identity_public_keys"
_CHECK_ID = b"\x00" * 32  # session id of the throwaway config the options are checked in


def prepare_options(roster: tuple[ClientId, ...], options: Mapping[str, Any]) -> dict[str, Any]:
    """The options, checked against the roster (a bad threshold or graph fails before any key)."""
    read_params(SessionConfig(_CHECK_ID, roster, dict(options)), need_identities=False)
    return dict(options)


def trust_facts(config: SessionConfig) -> dict[str, Any]:
    """The draft's share threshold and the default one for its graph (what a node's trust policy
    compares with its pinned minimum threshold)."""
    params = read_params(config, need_identities=False)
    return {"threshold": params.threshold, "default_threshold": default_threshold(params.neighbors)}


def node_enroll(
    config: SessionConfig, client_id: ClientId, rng: RandomSource
) -> tuple[bytes | None, bytes]:
    """(this node's Ed25519 private key, its public key)."""
    return _new_identity(rng)


def _new_identity(rng: RandomSource) -> tuple[bytes, bytes]:
    key = new_ed25519(rng)
    return key.private_bytes_raw(), public_bytes(key)


def publish(config: SessionConfig, publics: Mapping[ClientId, bytes]) -> SessionConfig:
    """The draft with every roster client's identity public key."""
    if any(c not in publics for c in config.roster):
        raise ProtocolError("a node did not send its identity public key")
    keys = {c: publics[c] for c in config.roster}
    if any(len(k) != 32 for k in keys.values()):
        raise ProtocolError("a node sent a malformed identity public key")
    return SessionConfig(config.session_id, config.roster, {**config.options, IDENTITY_KEYS: keys})


def enroll(config: SessionConfig, rng: RandomSource) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """Give every client an Ed25519 identity; publish the public keys in the config's options.

    Validates the options first, so a bad --threshold or --neighbors fails before any key exists.
    """
    prepare_options(config.roster, config.options)
    private: dict[ClientId, bytes] = {}
    public: dict[ClientId, bytes] = {}
    for client in sorted(config.roster):
        private[client], public[client] = _new_identity(rng.child(f"identity-{client}"))
    return publish(config, public), private
