"""`ckks`: homomorphic secure sum with TenSEAL (CKKS by default, BFV as the exact-integer option).

Three parties: clients encrypt their packed count vectors under the key authority's public key;
the aggregation server adds ciphertexts and never holds a secret key; the key authority (a
separate party by default, or a designated client) decrypts only the final aggregate and releases
rounded integer counts. Server and authority must not collude. Spec: protocols/ckks.md; threat
model: threat_models/ckks.md.
"""

from __future__ import annotations

import dataclasses

from ...randomness import RandomSource
from ..api import ClientId, SessionConfig
from ..registry import ProtocolInfo, register
from . import context as he_ctx
from .authority import AuthorityLink, KeyAuthority
from .client import CkksClient
from .params import he_params
from .server import CkksServer
from .settings import AUTHORITY_LINK, PUBLIC_CONTEXT, parse


def enroll(config: SessionConfig, rng: RandomSource) -> tuple[SessionConfig, dict[ClientId, bytes]]:
    """The key authority's setup, once per session: create the keys, publish the public context.

    A separate authority stays behind an `AuthorityLink` placed in the options for the server; a
    designated client receives the secret context as its private identity bytes. `rng` is unused:
    SEAL generates keys from its own CSPRNG and TenSEAL cannot take a seed.
    """
    settings = parse(config)
    secret = he_ctx.new_secret_context(he_params(settings.scheme))
    options = dict(config.options)
    options[PUBLIC_CONTEXT] = he_ctx.public_bytes(secret)
    identities: dict[ClientId, bytes] = {}
    published = dataclasses.replace(config, options=options)
    if settings.authority is None:
        authority = KeyAuthority(published, he_ctx.secret_bytes(secret))
        options[AUTHORITY_LINK] = AuthorityLink(authority)
    else:
        identities[settings.authority] = he_ctx.secret_bytes(secret)
    return dataclasses.replace(config, options=options), identities


INFO = register(
    ProtocolInfo(
        name="ckks",
        description="homomorphic encryption (TenSEAL CKKS or BFV); a key authority that must not "
        "collude with the server decrypts only the sum",
        secure=True,
        make_server=lambda config, rng: CkksServer(config),
        make_client=lambda config, client_id, rng, inputs, identity: CkksClient(
            config, client_id, inputs, identity
        ),
        enroll=enroll,
        cohort_option="min_contributors",
    )
)

__all__ = ["INFO", "CkksClient", "CkksServer", "KeyAuthority", "AuthorityLink", "enroll"]
