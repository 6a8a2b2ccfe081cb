"""What a Flower node trusts, pinned in its node config, and the checks it makes before releasing.

The server relays every node's public enrollment material (additive identity keys, the ckks public
context). A server that also controlled key distribution could substitute its own keys (its own
public context, whose secret it holds; identity keys of clients it plays itself) and learn every
node's mask. So each node pins, out of band:

* its **identity** (an Ed25519 key file) and a **trust file** (or `trust='server'`): see
  `trust_file`, which loads them.

A node checks (`check_draft`) the draft session config at enrollment: the protocol is allowed, the
roster is at least `min_cohort` clients, the protocol's cohort option (the releasing party's
minimum) is at least `min_cohort`, a share threshold the protocol reports (`ProtocolInfo.
trust_facts`; additive) at least `min_threshold`. It then (`published_config`) builds the session
config itself from the draft it enrolled in and the public parts the server relays, each of which
must come with an attestation: a signature by a pinned identity key over (protocol, digest of the
draft, client id, SHA-256 of the public part). Its own entry must be its own key and public part,
no key may appear twice, and the public part of a key authority the protocol reports (ckks: the
public context) must be attested by the pinned `ckks_authority`.

Pure: no flwr import, so the checks run (and are mutation-tested) without Flower installed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ...errors import ProtocolError
from ...secure_sum import registry
from ...secure_sum.api import ClientId, SessionConfig, config_digest
from .trust_file import (  # noqa: F401 - re-exported: a node's trust API is this module
    DEFAULT_MIN_COHORT,
    TRUST_SERVER,
    TRUST_VERSION,
    TrustPolicy,
    create_identity,
    load_identity,
    load_trust,
    pinned_node_configs,
    public_key,
    write_trust,
)

ATTESTATION_LABEL = b"fedprllm-secure/flower/enrollment-attestation/v1\x00"


class TrustRefusal(ProtocolError):
    """A node refused a session: what the server sent differs from what the node pins."""


# --- checks ------------------------------------------------------------------------------------


def check_draft(
    policy: TrustPolicy | None, protocol: str, draft: SessionConfig, client_id: ClientId
) -> None:
    """Refuse (TrustRefusal) a draft session config this node must not enroll in."""
    info = registry.get(protocol)
    if client_id not in draft.roster:
        raise TrustRefusal(f"this node (client {client_id}) is not on the session's roster")
    if policy is None:
        if info.secure:
            raise TrustRefusal(
                f"this node has no trust file, so it refuses the secure protocol {protocol!r}: "
                "the server would hand it every key. Set node config trust='PATH' (a trust file, "
                "see docs/flower.md) or trust='server' to trust the server with key distribution"
            )
        return
    if policy.server_trusted:
        return
    if protocol not in policy.protocols:
        raise TrustRefusal(
            f"protocol {protocol!r} is not allowed by the trust file {policy.source} "
            f"(allowed: {', '.join(policy.protocols) or 'none'})"
        )
    if not info.secure:
        return  # its server sees every mask: a cohort or threshold would protect nothing
    if len(draft.roster) < policy.min_cohort:
        raise TrustRefusal(
            f"the roster has {len(draft.roster)} clients, fewer than the minimum cohort "
            f"{policy.min_cohort} of the trust file {policy.source}"
        )
    if info.cohort_option is not None:
        cohort = draft.options.get(info.cohort_option)
        if isinstance(cohort, bool) or not isinstance(cohort, int) or cohort < policy.min_cohort:
            raise TrustRefusal(
                f"the session's {info.cohort_option} is {cohort!r}, below the minimum cohort "
                f"{policy.min_cohort} of the trust file {policy.source}"
            )
    _check_threshold(policy, protocol, info.trust_facts(draft))


def _check_threshold(policy: TrustPolicy, protocol: str, facts: Mapping[str, Any]) -> None:
    """Refuse a protocol's reported share threshold below the pinned (or default) minimum."""
    if "threshold" not in facts:
        return
    threshold = facts["threshold"]
    least = policy.min_threshold
    if least is None:
        least = facts["default_threshold"]
    if threshold < least:
        raise TrustRefusal(
            f"the session's {protocol} threshold {threshold} is below the minimum "
            f"{least} this node accepts ("
            + (f"trust file {policy.source}" if policy.min_threshold else "the default")
            + ")"
        )


def attestation_payload(
    protocol: str, draft: SessionConfig, client_id: ClientId, public: bytes
) -> bytes:
    """What a node's identity key signs: its public part for this draft, as this client."""
    return (
        ATTESTATION_LABEL
        + protocol.encode("utf-8")
        + b"\x00"
        + config_digest(draft)
        + struct.pack(">Q", int(client_id))
        + hashlib.sha256(bytes(public)).digest()
    )


def attest(
    key: Ed25519PrivateKey, protocol: str, draft: SessionConfig, client_id: ClientId, public: bytes
) -> tuple[bytes, bytes]:
    """(identity public key, signature) for this node's public part."""
    return public_key(key), key.sign(attestation_payload(protocol, draft, client_id, public))


def _verified(identity: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes(identity)).verify(bytes(signature), payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_attestations(
    policy: TrustPolicy,
    protocol: str,
    draft: SessionConfig,
    client_id: ClientId,
    own: tuple[bytes, bytes],
    publics: Mapping[ClientId, bytes],
    attestations: Mapping[ClientId, tuple[bytes, bytes]],
) -> None:
    """Refuse unless every roster member's public part is attested by a distinct pinned key, this
    node's entry is its own (`own` = (identity public key, public part)) and the key authority's
    (a protocol whose `trust_facts` names one, e.g. ckks) by the pinned authority key."""
    seen: dict[bytes, ClientId] = {}
    for c in draft.roster:
        if c not in publics or c not in attestations:
            raise TrustRefusal(f"the server sent no attested public part for client {c}")
        identity, signature = attestations[c]
        identity = bytes(identity)
        if identity not in policy.nodes:
            raise TrustRefusal(
                f"client {c}'s identity key {identity.hex()[:16]}... is not one of the node "
                f"keys pinned in the trust file {policy.source}"
            )
        if identity in seen:
            raise TrustRefusal(f"clients {seen[identity]} and {c} have the same identity key")
        seen[identity] = c
        if not _verified(identity, signature, attestation_payload(protocol, draft, c, publics[c])):
            raise TrustRefusal(
                f"client {c}'s public part is not signed by its identity key for this session "
                "(substituted by the server?)"
            )
    own_identity, own_public = own
    if seen.get(bytes(own_identity)) != client_id or bytes(publics[client_id]) != bytes(own_public):
        raise TrustRefusal(
            f"the server's entry for this node (client {client_id}) is not this node's own "
            "identity key and public part"
        )
    _check_authority(policy, protocol, registry.get(protocol).trust_facts(draft), attestations)


def _check_authority(
    policy: TrustPolicy,
    protocol: str,
    facts: Mapping[str, Any],
    attestations: Mapping[ClientId, tuple[bytes, bytes]],
) -> None:
    """Refuse unless the protocol's reported key authority is attested by the pinned one."""
    if "authority" not in facts:
        return
    authority = facts["authority"]
    if policy.ckks_authority is None:
        raise TrustRefusal(
            f"the trust file {policy.source} pins no ckks_authority: this node cannot know "
            "whose public context to encrypt under"
        )
    if authority is None or bytes(attestations[authority][0]) != policy.ckks_authority:
        raise TrustRefusal(
            f"the {protocol} key authority (client {authority}) is not the node pinned as "
            f"ckks_authority in the trust file {policy.source}: its public context is not "
            "signed by the pinned authority"
        )


def published_config(
    policy: TrustPolicy | None,
    protocol: str,
    draft: SessionConfig,
    client_id: ClientId,
    own: tuple[bytes, bytes] | None,
    publics: Mapping[ClientId, bytes],
    attestations: Mapping[ClientId, tuple[bytes, bytes]],
) -> SessionConfig:
    """The session config this node uses: built here from the draft it enrolled in and the public
    parts the server relays (after `check_attestations` unless the server is trusted), never
    taken from the server as a whole."""
    from .enrollment import publish

    check_draft(policy, protocol, draft, client_id)
    missing = [c for c in draft.roster if c not in publics]
    if missing:
        raise TrustRefusal(f"the server sent no public part for clients {missing}")
    if policy is not None and not policy.server_trusted:
        if own is None:
            raise TrustRefusal("this node has no identity key to check its own entry with")
        check_attestations(policy, protocol, draft, client_id, own, publics, attestations)
    return publish(protocol, draft, {c: bytes(publics[c]) for c in publics if c in draft.roster})


# --- what the server relays after enrollment ---------------------------------------------------

_ENROLLMENT_STATE = "flower-enrollment"


def encode_enrollment(
    publics: Mapping[ClientId, bytes], attestations: Mapping[ClientId, tuple[bytes, bytes]]
) -> bytes:
    """The public parts and attestations the server relays to every node (wire bytes)."""
    from ...secure_sum.api import encode_state

    return encode_state(
        _ENROLLMENT_STATE,
        {
            "publics": {int(c): bytes(p) for c, p in publics.items()},
            "attestations": {int(c): (bytes(k), bytes(s)) for c, (k, s) in attestations.items()},
        },
    )


def decode_enrollment(
    data: bytes,
) -> tuple[dict[ClientId, bytes], dict[ClientId, tuple[bytes, bytes]]]:
    from ...secure_sum.api import decode_state

    fields = decode_state(_ENROLLMENT_STATE, data)
    publics, attestations = fields.get("publics"), fields.get("attestations")
    if not (
        isinstance(publics, dict)
        and isinstance(attestations, dict)
        and all(isinstance(c, int) and isinstance(p, bytes) for c, p in publics.items())
        and all(
            isinstance(c, int)
            and isinstance(a, tuple)
            and len(a) == 2
            and all(isinstance(x, bytes) for x in a)
            for c, a in attestations.items()
        )
    ):
        raise ProtocolError("the enrollment the server relayed is malformed")
    return publics, attestations
