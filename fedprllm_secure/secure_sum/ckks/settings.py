"""The session options `ckks` understands, parsed and checked once.

- "he_scheme": "ckks" (default) or "bfv".
- "authority": "separate" (default: a key authority that is not the server and not a client) or
  the id of the roster client that plays the key authority.
- "max_per_slot": cap on counts per slot (1 = the unpacked baseline); default: as many as exact.
- "min_contributors": the authority refuses to decrypt a sum signed by fewer distinct clients
  (default 3, the minimum cohort; 1 or 2 only as an explicit, deliberate override).

Enrollment adds "ckks.public_context" (the authority's published public context, bytes),
"ckks.authority_pad_key" (the authority's X25519 pad public key, 32 bytes),
"identity_public_keys" ({client id: 32-byte Ed25519 public key} for every roster client: the keys
that sign uploads) and, for a separate authority, "local.ckks.authority_link" (the server's channel
to it, local to the server: only the registry's `make_server` reads it, and hands it to the
server's constructor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError, ProtocolError
from ..api import LOCAL_OPTION_PREFIX, ClientId, SessionConfig
from .params import SCHEMES, Packing, choose_packing, he_params

PUBLIC_CONTEXT = "ckks.public_context"
AUTHORITY_PAD_KEY = "ckks.authority_pad_key"
IDENTITY_KEYS = "identity_public_keys"
DEFAULT_MIN_CONTRIBUTORS = 3
AUTHORITY_LINK = "local.ckks.authority_link"  # api.LOCAL_OPTION_PREFIX: not agreed on
SEPARATE = "separate"


@dataclass(frozen=True)
class Settings:
    scheme: str
    authority: ClientId | None  # None: a separate party
    max_per_slot: int | None
    min_contributors: int
    identity_keys: Mapping[ClientId, bytes]  # empty before enrollment


def _positive(key: str, value: Any) -> int:
    """Option `key`'s value as an integer >= 1; ConfigError naming the option otherwise."""
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"option {key!r} must be an integer, got {value!r}") from exc
    if number < 1:
        raise ConfigError(f"option {key!r} must be at least 1, got {number}")
    return number


def parse(config: SessionConfig) -> Settings:
    options = config.options
    scheme = str(options.get("he_scheme", "ckks")).lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown he_scheme {scheme!r} (choose one of {', '.join(SCHEMES)})")
    raw = options.get("authority", SEPARATE)
    authority: ClientId | None
    if raw is None or str(raw) == SEPARATE:
        authority = None
    else:
        try:
            authority = int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"option 'authority' must be {SEPARATE!r} or a client id, got {raw!r}"
            ) from exc
        if authority not in config.roster:
            raise ConfigError(f"the key authority {authority} is not a client on the roster")
    cap = options.get("max_per_slot")
    return Settings(
        scheme=scheme,
        authority=authority,
        max_per_slot=None if cap is None else _positive("max_per_slot", cap),
        min_contributors=_positive(
            "min_contributors", options.get("min_contributors", DEFAULT_MIN_CONTRIBUTORS)
        ),
        identity_keys=_identity_keys(config),
    )


def _identity_keys(config: SessionConfig) -> dict[ClientId, bytes]:
    """The roster's identity public keys: absent before enrollment, else one of 32 bytes each."""
    keys = config.options.get(IDENTITY_KEYS)
    if keys is None:
        return {}
    if not isinstance(keys, Mapping):
        raise ConfigError(f"option {IDENTITY_KEYS!r} must map client ids to public keys")
    out: dict[ClientId, bytes] = {}
    for client in config.roster:
        key = keys.get(client)
        if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
            raise ConfigError(f"client {client} has no 32-byte identity public key")
        out[client] = bytes(key)
    if set(keys) - set(config.roster):
        raise ConfigError("identity public keys were published for clients not on the roster")
    return out


def identity_keys(config: SessionConfig) -> Mapping[ClientId, bytes]:
    """The roster's identity public keys; ConfigError if enrollment did not publish them."""
    keys = parse(config).identity_keys
    if not keys:
        raise ConfigError("the session has no ckks identity public keys (run enroll first)")
    return keys


def session_packing(config: SessionConfig, bound: int) -> Packing:
    """The packing every party derives from the roster size and the aggregation's bound."""
    settings = parse(config)
    try:
        return choose_packing(
            he_params(settings.scheme), len(config.roster), bound, settings.max_per_slot
        )
    except ConfigError as exc:
        raise ProtocolError(str(exc)) from exc


def public_context_bytes(config: SessionConfig) -> bytes:
    data = config.options.get(PUBLIC_CONTEXT)
    if not isinstance(data, (bytes, bytearray)):
        raise ConfigError("the session has no published ckks public context (run enroll first)")
    return bytes(data)


def authority_pad_public(config: SessionConfig) -> bytes:
    """The key authority's published X25519 pad public key (32 bytes)."""
    data = config.options.get(AUTHORITY_PAD_KEY)
    if not isinstance(data, (bytes, bytearray)) or len(data) != 32:
        raise ConfigError("the session has no published 32-byte ckks authority pad key")
    return bytes(data)


def agreed(config: SessionConfig) -> SessionConfig:
    """`config` without the options local to one party (`api.LOCAL_OPTION_PREFIX`): what a
    client keeps and saves (the server's authority link is no business of a client's)."""
    options = {
        key: value
        for key, value in config.options.items()
        if not str(key).startswith(LOCAL_OPTION_PREFIX)
    }
    return SessionConfig(config.session_id, config.roster, options)
