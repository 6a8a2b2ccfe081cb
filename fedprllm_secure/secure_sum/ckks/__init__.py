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

from collections.abc import Mapping
from typing import Any

from ..api import ClientId, SessionConfig
from ..registry import ProtocolInfo, register
from .authority import AuthorityLink, KeyAuthority
from .client import CkksClient
from .enrollment import (
    enroll,
    make_server,
    node_enroll,
    prepare_options,
    publish,
    trust_facts,
)
from .server import CkksServer
from .settings import parse


def check_options(roster: tuple[ClientId, ...], options: Mapping[str, Any]) -> None:
    """The user's options parsed against `roster` (scheme, authority, caps), before any key."""
    parse(SessionConfig(b"\x00" * 32, roster, dict(options)))


INFO = register(
    ProtocolInfo(
        name="ckks",
        description="homomorphic encryption (TenSEAL CKKS or BFV) with authority-keyed one-time "
        "pads; a key authority that must not collude with the server decrypts only the sum",
        secure=True,
        make_server=make_server,
        make_client=lambda config, client_id, rng, inputs, identity: CkksClient(
            config, client_id, inputs, identity, rng
        ),
        enroll=enroll,
        prepare_options=prepare_options,
        node_enroll=node_enroll,
        publish=publish,
        trust_facts=trust_facts,
        cohort_option="min_contributors",
        option_names=("he_scheme", "authority", "max_per_slot", "min_contributors"),
        check_options=check_options,
    )
)

__all__ = ["INFO", "CkksClient", "CkksServer", "KeyAuthority", "AuthorityLink", "enroll"]
