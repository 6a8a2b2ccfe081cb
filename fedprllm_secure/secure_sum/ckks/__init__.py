"""`ckks`: homomorphic secure sum with TenSEAL (CKKS by default, BFV as the exact-integer option).

Three parties: clients add an authority-keyed one-time pad to every packed slot, encrypt under
the key authority's public key and sign each upload (with their pad public key) with their
Ed25519 identity key; the aggregation server sums the uploads and never holds a secret key; the
key authority (a separate party by default, or a designated client) receives only that sum and
the contributors' signed statements, never an individual ciphertext, verifies at least
`min_contributors` distinct signers, removes their pads, decrypts each chunk name at most once per
session (a failed attempt included) and releases rounded integer counts only if every slot is a
valid sum. Server and authority must not collude. Spec: protocols/ckks.md; threat
model: threat_models/ckks.md.
"""

from __future__ import annotations

import dataclasses

from ...randomness import RandomSource
from ..api import ClientId, SessionConfig
from ..registry import ProtocolInfo, register
from . import context as he_ctx
from . import identity as ident
from .authority import AuthorityLink, KeyAuthority
from .client import CkksClient
from .params import he_params
from .server import CkksServer
from .settings import AUTHORITY_LINK, AUTHORITY_PAD_KEY, IDENTITY_KEYS, PUBLIC_CONTEXT, parse


def enroll(config: SessionConfig, rng: RandomSource) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """Set up a session: every client's identity key, and the key authority's keys.

    Each client gets an Ed25519 identity key (drawn from `rng`), published in the roster's
    "identity_public_keys"; its private identity bytes (identity.encode_identity) go to it alone.
    The key authority creates the TenSEAL keys and publishes the public context (SEAL draws them
    from its own CSPRNG: TenSEAL cannot take a seed), and an X25519 pad key (from `rng`) whose
    public key is published as "ckks.authority_pad_key". A separate authority stays behind an
    `AuthorityLink` placed in the local options for the server; a designated client receives the
    secret context inside its identity bytes.
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


INFO = register(
    ProtocolInfo(
        name="ckks",
        description="homomorphic encryption (TenSEAL CKKS or BFV) with authority-keyed one-time "
        "pads; a key authority that must not collude with the server decrypts only the sum",
        secure=True,
        make_server=lambda config, rng: CkksServer(config),
        make_client=lambda config, client_id, rng, inputs, identity: CkksClient(
            config, client_id, inputs, identity, rng
        ),
        enroll=enroll,
        cohort_option="min_contributors",
    )
)

__all__ = ["INFO", "CkksClient", "CkksServer", "KeyAuthority", "AuthorityLink", "enroll"]
