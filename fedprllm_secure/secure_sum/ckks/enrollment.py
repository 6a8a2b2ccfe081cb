"""Enrollment of `ckks`: identity keys, the key authority's TenSEAL keys and pad key.

`enroll` sets up a whole session in one process (simulations, where the authority may be a
separate party). `prepare_options`, `node_enroll` and `publish` are the same setup with each secret
created on its own node (`ProtocolInfo`): the key authority must then be one of the nodes (option
"authority": client id; default the first client on the roster). That node also creates the
TenSEAL secret context and an X25519 pad key, and publishes the pad public key and the public
context after its identity key (identity.encode_public); they become options
"ckks.authority_pad_key" and "ckks.public_context", bound by the config digest. A "separate"
authority has no node to live on there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError, ProtocolError
from ...randomness import RandomSource
from ..api import ClientId, SessionConfig
from . import context as he_ctx
from . import identity as ident
from .authority import AuthorityLink, KeyAuthority
from .params import he_params
from .server import CkksServer
from .settings import (
    AUTHORITY_LINK,
    AUTHORITY_PAD_KEY,
    IDENTITY_KEYS,
    PUBLIC_CONTEXT,
    SEPARATE,
    parse,
)


def enroll(config: SessionConfig, rng: RandomSource) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """Set up a session: every client's identity key, and the key authority's keys.

    Each client gets an Ed25519 identity key (drawn from `rng`), published in the roster's
    "identity_public_keys"; its private identity bytes (identity.encode_identity) go to it alone.
    The key authority creates the TenSEAL keys and publishes the public context (SEAL draws them
    from its own CSPRNG: TenSEAL cannot take a seed), and an X25519 pad key (from `rng`) whose
    public key is published as "ckks.authority_pad_key". A separate authority stays behind an
    `AuthorityLink` placed in the local options for the server; a designated client receives the
    secret context inside its identity bytes.

    The link lives in the local options (`api.LOCAL_OPTION_PREFIX`: outside the config digest,
    never saved by a client) because `ProtocolInfo.enroll` returns one config for every party;
    `make_server` alone reads it.
    """
    settings = parse(config)
    secret = he_ctx.new_secret_context(he_params(settings.scheme))
    pad_key = ident.new_pad_key(rng.child("authority-pad-key"))
    keys = {c: ident.new_identity_key(rng.child(f"identity-{c}")) for c in config.roster}
    options = dict(config.options)
    options[PUBLIC_CONTEXT] = he_ctx.public_bytes(secret)
    options[AUTHORITY_PAD_KEY] = ident.pad_public(pad_key)
    options[IDENTITY_KEYS] = {c: ident.public_key(k) for c, k in keys.items()}
    published = dataclasses.replace(config, options=dict(options))
    identities = {
        c: ident.encode_identity(k, he_ctx.secret_bytes(secret), pad_key)
        if c == settings.authority
        else ident.encode_identity(k)
        for c, k in keys.items()
    }
    if settings.authority is None:
        options[AUTHORITY_LINK] = AuthorityLink(
            KeyAuthority(published, he_ctx.secret_bytes(secret), pad_key)
        )
    return dataclasses.replace(config, options=options), identities


def make_server(config: SessionConfig, rng: RandomSource) -> CkksServer:
    """The registry's server factory: the one reader of the link that `enroll` leaves, for a
    separate key authority, in the server's local options; the server receives it as its
    constructor's `authority` (None when a roster client plays the authority)."""
    link = config.options.get(AUTHORITY_LINK)
    return CkksServer(config, link if isinstance(link, AuthorityLink) else None)


def prepare_options(roster: tuple[ClientId, ...], options: Mapping[str, Any]) -> dict[str, Any]:
    """The options with a node as key authority (default: the first client on the roster)."""
    options = dict(options)
    if str(options.get("authority", SEPARATE)) == SEPARATE:
        if "authority" in options:
            raise ConfigError(
                "a separate ckks key authority cannot run inside a federation of nodes: "
                "set option authority=<client id> to make one node the key authority"
            )
        options["authority"] = roster[0]
    return options


def node_enroll(
    config: SessionConfig, client_id: ClientId, rng: RandomSource
) -> tuple[bytes | None, bytes]:
    """(this node's identity bytes, its public part); the authority node adds its HE keys."""
    settings = parse(config)
    signing_key = ident.new_identity_key(rng)
    public = ident.public_key(signing_key)
    if settings.authority != client_id:
        return ident.encode_identity(signing_key), ident.encode_public(public)
    secret = he_ctx.new_secret_context(he_params(settings.scheme))
    pad_key = ident.new_pad_key(rng.child("authority-pad-key"))
    return (
        ident.encode_identity(signing_key, he_ctx.secret_bytes(secret), pad_key),
        ident.encode_public(public, he_ctx.public_bytes(secret), ident.pad_public(pad_key)),
    )


def trust_facts(config: SessionConfig) -> dict[str, Any]:
    """The client that holds the session's secret key (None: a separate authority): a node's
    trust policy requires its attested identity to be the pinned authority key."""
    return {"authority": parse(config).authority}


def publish(config: SessionConfig, publics: Mapping[ClientId, bytes]) -> SessionConfig:
    """The draft with every identity key and the authority's pad key and public context."""
    options = dict(config.options)
    authority = parse(config).authority
    if any(c not in publics for c in config.roster):
        raise ProtocolError("a node did not send its ckks identity public key")
    parts = {c: ident.decode_public(publics[c]) for c in config.roster}
    if authority is None or parts[authority][2] is None:
        raise ProtocolError("the ckks key authority node did not publish its public context")
    if any(context is not None for c, (_, _, context) in parts.items() if c != authority):
        raise ProtocolError("a node that is not the ckks key authority sent a public context")
    options[IDENTITY_KEYS] = {c: key for c, (key, _, _) in parts.items()}
    options[AUTHORITY_PAD_KEY] = parts[authority][1]
    options[PUBLIC_CONTEXT] = parts[authority][2]
    return SessionConfig(config.session_id, config.roster, options)
