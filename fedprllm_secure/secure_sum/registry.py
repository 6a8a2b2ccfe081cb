"""Name -> protocol implementation. Built-ins register on import; third parties register too.

A third-party package can also expose a `ProtocolInfo` under the entry-point group
`fedprllm_secure.protocols`; it is loaded the first time the registry is consulted.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..errors import ConfigError
from ..randomness import RandomSource
from .api import ClientId, ClientProtocol, InputProvider, ServerProtocol, SessionConfig

BUILTIN_MODULES = ("plaintext", "additive", "ckks")


def no_enrollment(
    config: SessionConfig, rng: RandomSource
) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """Default `enroll`: protocols without client identities need no setup."""
    return config, {}


def options_as_given(roster: tuple[ClientId, ...], options: Mapping[str, Any]) -> dict[str, Any]:
    """Default `prepare_options`: the options need no roster-dependent defaults or checks."""
    return dict(options)


def no_node_secret(
    config: SessionConfig, client_id: ClientId, rng: RandomSource
) -> tuple[bytes | None, bytes]:
    """Default `node_enroll`: no secret to keep, nothing to publish."""
    return None, b""


def nothing_to_publish(config: SessionConfig, publics: Mapping[ClientId, bytes]) -> SessionConfig:
    """Default `publish`: the draft config is the session config."""
    return config


def no_option_checks(roster: tuple[ClientId, ...], options: Mapping[str, Any]) -> object:
    """Default `check_options`: nothing to check before a run."""
    return None


def no_trust_facts(config: SessionConfig) -> Mapping[str, Any]:
    """Default `trust_facts`: nothing for a node's trust policy to check."""
    return {}


@dataclass(frozen=True)
class ProtocolInfo:
    """How to build both sides of a protocol. `secure` is False for the insecure reference.

    `enroll` is the out-of-band setup a deployment does before any session (e.g. publishing each
    client's identity public key on the roster): it returns the config everyone shares and each
    client's private identity bytes, handed to `make_client` as `identity`.

    `cohort_option` names the session option with which a party other than the server refuses to
    reveal a sum over fewer clients (ckks: the key authority's "min_contributors"); callers set it
    from the minimum cohort so that the guard does not rest on the server alone. None: no such
    option.

    `input_rounds` are the rounds in which clients upload their (masked) inputs and before which
    nothing is released: if a session aborts there because clients stopped answering, a fresh
    session over the clients that still answer reveals only its own sum (the aborted one revealed
    nothing), so a driver may restart once.

    Enrollment where each party lives on its own machine (a Flower deployment, or the pipeline's
    node-by-node enrollment) uses three hooks instead of `enroll`:

    * `prepare_options(roster, options)`: the draft options every node is shown (validated, with
      roster-dependent defaults filled in), on the server; ConfigError naming the bad option;
    * `node_enroll(draft, client_id, rng)`: on each node, (secret it keeps, public part it sends);
      the secret is what `make_client` receives as `identity`;
    * `publish(draft, publics)`: the session config built from the draft and every node's public
      part (ProtocolError on a malformed part).

    `option_names` are the options a user may set (None: not declared, so not checked);
    `check_options(roster, options)` raises ConfigError on options no session over `roster`
    could run with (called before any model loads or key exists).

    `trust_facts(draft)` reports what a node's pinned trust policy checks in a draft session
    config (ConfigError on a bad draft); the keys a node knows are "threshold" and
    "default_threshold" (the draft's share threshold, and the least one accepted when the policy
    pins none; the node refuses `threshold` below its minimum) and "authority" (the client id
    that holds the session's decryption key, or None; the node refuses unless its attested
    identity key is the pinned authority key). Default: no facts.
    """

    name: str
    description: str
    secure: bool
    make_server: Callable[[SessionConfig, RandomSource], ServerProtocol]
    make_client: Callable[
        [SessionConfig, ClientId, RandomSource, InputProvider, bytes | None], ClientProtocol
    ]
    enroll: Callable[[SessionConfig, RandomSource], tuple[SessionConfig, dict[ClientId, bytes]]] = (
        no_enrollment
    )
    cohort_option: str | None = None
    input_rounds: tuple[str, ...] = ()
    prepare_options: Callable[[tuple[ClientId, ...], Mapping[str, Any]], dict[str, Any]] = (
        options_as_given
    )
    node_enroll: Callable[[SessionConfig, ClientId, RandomSource], tuple[bytes | None, bytes]] = (
        no_node_secret
    )
    publish: Callable[[SessionConfig, Mapping[ClientId, bytes]], SessionConfig] = nothing_to_publish
    trust_facts: Callable[[SessionConfig], Mapping[str, Any]] = no_trust_facts
    option_names: tuple[str, ...] | None = None
    check_options: Callable[[tuple[ClientId, ...], Mapping[str, Any]], object] = no_option_checks

    def with_cohort(self, options: dict, min_cohort: int) -> dict:
        """`options` plus the cohort option set to `min_cohort`, unless given explicitly."""
        if self.cohort_option is None or self.cohort_option in options:
            return dict(options)
        return {**options, self.cohort_option: min_cohort}


_PROTOCOLS: dict[str, ProtocolInfo] = {}
_loaded = False


def register(info: ProtocolInfo) -> ProtocolInfo:
    existing = _PROTOCOLS.get(info.name)
    if existing is not None and existing != info:
        raise ValueError(f"protocol {info.name!r} registered twice")
    _PROTOCOLS[info.name] = info
    return info


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
    for entry in entry_points(group="fedprllm_secure.protocols"):
        register(entry.load())


def available() -> list[str]:
    _load()
    return sorted(_PROTOCOLS)


def get(name: str) -> ProtocolInfo:
    _load()
    if name not in _PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r} (available: {', '.join(available())})")
    return _PROTOCOLS[name]
