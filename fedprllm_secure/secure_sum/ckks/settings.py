"""The session options `ckks` understands, parsed and checked once.

- "he_scheme": "ckks" (default) or "bfv".
- "authority": "separate" (default: a key authority that is not the server and not a client) or
  the id of the roster client that plays the key authority.
- "max_per_slot": cap on counts per slot (1 = the unpacked baseline); default: as many as exact.
- "min_contributors": the authority refuses to decrypt a sum over fewer clients (default 1).

Enrollment adds "ckks.public_context" (the authority's published public context, bytes) and, for
a separate authority, "local.ckks.authority_link" (the server's channel to it, local to the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError, ProtocolError
from ..api import ClientId, SessionConfig
from .params import SCHEMES, Packing, choose_packing, he_params

PUBLIC_CONTEXT = "ckks.public_context"
AUTHORITY_LINK = "local.ckks.authority_link"  # api.LOCAL_OPTION_PREFIX: not agreed on
SEPARATE = "separate"


@dataclass(frozen=True)
class Settings:
    scheme: str
    authority: ClientId | None  # None: a separate party
    max_per_slot: int | None
    min_contributors: int


def _int_option(options: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
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
    min_contributors = _int_option(options, "min_contributors", 1)
    assert min_contributors is not None
    return Settings(
        scheme=scheme,
        authority=authority,
        max_per_slot=_int_option(options, "max_per_slot", None),
        min_contributors=min_contributors,
    )


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
