"""Enrollment where it belongs in a deployment: every secret is created on its own node.

`ProtocolInfo.enroll` (used by simulations) creates every party's keys in one process. Here each
node makes its own secret and sends only the public part; the server publishes the public parts
in the session config:

* plaintext: nothing to enroll.
* additive: each node draws its Ed25519 identity key; the roster carries the public keys.
* ckks: each node draws its Ed25519 identity key (it signs the node's uploads); the roster carries
  the public keys. The key authority must be one of the nodes (option "authority": client id;
  default the first client on the roster): that node also creates the TenSEAL secret context and
  an X25519 pad key, and publishes the pad public key and the public context after its identity
  key (ckks.identity.encode_public); they become options "ckks.authority_pad_key" and
  "ckks.public_context", bound by the config digest. A "separate" authority has no place to live
  in a Flower federation.

The server relays the public parts, so a malicious server could substitute them; pin them out of
band (node config) where the server is not trusted with key distribution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import ConfigError, ProtocolError
from ...randomness import RandomSource
from ...secure_sum.api import ClientId, SessionConfig


def prepare_options(
    protocol: str, roster: tuple[ClientId, ...], options: Mapping[str, Any]
) -> dict[str, Any]:
    """The session options every node receives before enrollment (validated here, on the server)."""
    options = dict(options)
    if protocol == "ckks":
        from ...secure_sum.ckks.settings import SEPARATE

        if str(options.get("authority", SEPARATE)) == SEPARATE:
            if "authority" in options:
                raise ConfigError(
                    "a separate ckks key authority cannot run inside a Flower federation: "
                    "set option authority=<client id> to make one node the key authority"
                )
            options["authority"] = roster[0]
    if protocol == "additive":
        from ...secure_sum.additive.params import read_params

        read_params(SessionConfig(b"\x00" * 32, roster, options), need_identities=False)
    return options


def node_enroll(
    protocol: str, config: SessionConfig, client_id: ClientId, rng: RandomSource
) -> tuple[bytes | None, bytes]:
    """(secret kept in the node's state, public part sent to the server) for one node."""
    if protocol == "additive":
        from ...secure_sum.additive.primitives import new_ed25519, public_bytes

        key = new_ed25519(rng)
        return key.private_bytes_raw(), public_bytes(key)
    if protocol == "ckks":
        from ...secure_sum.ckks import context as he_ctx
        from ...secure_sum.ckks import identity as ident
        from ...secure_sum.ckks.params import he_params
        from ...secure_sum.ckks.settings import parse

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
    return None, b""


def publish(
    protocol: str, config: SessionConfig, publics: Mapping[ClientId, bytes]
) -> SessionConfig:
    """The session config with the nodes' public parts, as every party will use it."""
    options = dict(config.options)
    if protocol == "additive":
        keys = {c: publics[c] for c in config.roster}
        if any(len(k) != 32 for k in keys.values()):
            raise ProtocolError("a node sent a malformed identity public key")
        options["identity_public_keys"] = keys
    elif protocol == "ckks":
        from ...secure_sum.ckks.identity import decode_public
        from ...secure_sum.ckks.settings import (
            AUTHORITY_PAD_KEY,
            IDENTITY_KEYS,
            PUBLIC_CONTEXT,
            parse,
        )

        authority = parse(config).authority
        if any(c not in publics for c in config.roster):
            raise ProtocolError("a node did not send its ckks identity public key")
        parts = {c: decode_public(publics[c]) for c in config.roster}
        if authority is None or parts[authority][2] is None:
            raise ProtocolError("the ckks key authority node did not publish its public context")
        if any(context is not None for c, (_, _, context) in parts.items() if c != authority):
            raise ProtocolError("a node that is not the ckks key authority sent a public context")
        options[IDENTITY_KEYS] = {c: key for c, (key, _, _) in parts.items()}
        options[AUTHORITY_PAD_KEY] = parts[authority][1]
        options[PUBLIC_CONTEXT] = parts[authority][2]
    return SessionConfig(config.session_id, config.roster, options)
