"""What a Flower node trusts, pinned in its node config, and the checks it makes before releasing.

The server relays every node's public enrollment material (additive identity keys, the ckks public
context). A server that also controlled key distribution could substitute its own keys (its own
public context, whose secret it holds; identity keys of clients it plays itself) and learn every
node's mask. So each node pins, out of band:

* its **identity**: a long-term Ed25519 key file (node config `identity='PATH'`, made by
  `fedprllm-secure node-key PATH`), with which it attests its enrollment public part;
* a **trust file** (node config `trust='PATH'`, JSON, distributed by the operator):

      {"version": 1,
       "nodes": ["<hex Ed25519 public key>", ...],   # identity keys allowed on a roster
       "ckks_authority": "<hex key>",                # the node that may hold the ckks secret key
       "min_cohort": 3,                              # smallest sum any releasing party may reveal
       "min_threshold": 3,                           # additive: smallest t (default: its default)
       "protocols": ["additive", "ckks"]}            # what this node takes part in

  or `trust='server'`: the node trusts the server with key distribution (nothing is checked).
  Without either, a node takes part only in the insecure `plaintext` protocol (whose server sees
  every mask anyway), so a secure protocol never gives false assurance.

A node checks (`check_draft`) the draft session config at enrollment: the protocol is allowed, the
roster is at least `min_cohort` clients, the protocol's cohort option (the releasing party's
minimum) is at least `min_cohort`, the additive threshold at least `min_threshold`. It then
(`published_config`) builds the session config itself from the draft it enrolled in and the public
parts the server relays, each of which must come with an attestation: a signature by a pinned
identity key over (protocol, digest of the draft, client id, SHA-256 of the public part). Its own
entry must be its own key and public part, no key may appear twice, and under ckks the key
authority's public part (its public context) must be attested by the pinned `ckks_authority`.

Pure: no flwr import, so the checks run (and are mutation-tested) without Flower installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ...errors import ConfigError, ProtocolError
from ...secure_sum import registry
from ...secure_sum.api import ClientId, SessionConfig, config_digest

TRUST_SERVER = "server"  # node config trust='server': the server distributes keys, unchecked
TRUST_VERSION = 1
DEFAULT_MIN_COHORT = 3
ATTESTATION_LABEL = b"fedprllm-secure/flower/enrollment-attestation/v1\x00"


class TrustRefusal(ProtocolError):
    """A node refused a session: what the server sent differs from what the node pins."""


# --- the node's long-term identity -------------------------------------------------------------


def create_identity(path: str | Path) -> tuple[Ed25519PrivateKey, bool]:
    """The Ed25519 identity key in `path` (PEM, PKCS#8), created (mode 0600) if missing.

    Returns (key, created)."""
    file = Path(path).expanduser()
    if file.exists():
        return load_identity(file), False
    file.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    return key, True


def load_identity(path: str | Path) -> Ed25519PrivateKey:
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the node identity {file} ({exc.strerror}); create it with "
            f"`fedprllm-secure node-key {file}`"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the node identity {file} is not an unencrypted PEM key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the node identity {file} is not an Ed25519 key")
    return key


def public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# --- the trust file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustPolicy:
    """What a node pins. `server_trusted`: trust='server' (nothing pinned, nothing checked)."""

    nodes: frozenset[bytes] = frozenset()
    ckks_authority: bytes | None = None
    min_cohort: int = DEFAULT_MIN_COHORT
    min_threshold: int | None = None  # None: the additive default for the roster
    protocols: tuple[str, ...] = ("additive", "ckks")
    server_trusted: bool = False
    source: str = ""


def _hex_key(value: Any, where: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where} must be a 64-hex-digit Ed25519 public key, got {value!r}")
    return raw


def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a positive integer, got {value!r}")
    return value


def load_trust(setting: str | None) -> TrustPolicy | None:
    """The node config's `trust` value: None (unset), 'server', or a trust file's path."""
    if setting is None or setting == "":
        return None
    if setting == TRUST_SERVER:
        return TrustPolicy(server_trusted=True, source=TRUST_SERVER)
    file = Path(setting).expanduser()
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the trust file {file} ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigError(f"the trust file {file} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("version") != TRUST_VERSION:
        raise ConfigError(f"the trust file {file} is not a version-{TRUST_VERSION} trust file")
    unknown = set(data) - {
        "version", "nodes", "ckks_authority", "min_cohort", "min_threshold", "protocols",
    }  # fmt: skip
    if unknown:
        raise ConfigError(f"the trust file {file} has unknown keys {sorted(unknown)}")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError(f"the trust file {file} lists no node identity keys ('nodes')")
    keys = frozenset(_hex_key(k, f"{file}: nodes entry") for k in nodes)
    authority = data.get("ckks_authority")
    authority_key = None if authority is None else _hex_key(authority, f"{file}: ckks_authority")
    if authority_key is not None and authority_key not in keys:
        raise ConfigError(f"the trust file {file}: ckks_authority is not one of its nodes")
    protocols = data.get("protocols", list(TrustPolicy.protocols))
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise ConfigError(f"the trust file {file}: protocols must be a list of names")
    threshold = data.get("min_threshold")
    return TrustPolicy(
        nodes=keys,
        ckks_authority=authority_key,
        min_cohort=_positive(data.get("min_cohort", DEFAULT_MIN_COHORT), f"{file}: min_cohort"),
        min_threshold=None if threshold is None else _positive(threshold, f"{file}: min_threshold"),
        protocols=tuple(protocols),
        source=str(file),
    )


def write_trust(
    path: str | Path,
    nodes: list[bytes],
    ckks_authority: bytes | None = None,
    min_cohort: int = DEFAULT_MIN_COHORT,
    min_threshold: int | None = None,
    protocols: tuple[str, ...] | list[str] | None = None,
) -> Path:
    """Write a trust file (what an operator distributes to every node)."""
    data: dict[str, Any] = {"version": TRUST_VERSION, "nodes": [k.hex() for k in nodes]}
    if ckks_authority is not None:
        data["ckks_authority"] = ckks_authority.hex()
    data["min_cohort"] = min_cohort
    if min_threshold is not None:
        data["min_threshold"] = min_threshold
    data["protocols"] = list(protocols) if protocols is not None else list(TrustPolicy.protocols)
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data, indent=1) + "\n")
    return file


def pinned_node_configs(
    folder: str | Path,
    node_configs: Sequence[Mapping[str, Any]],
    *,
    authority: int = 0,
    min_cohort: int = DEFAULT_MIN_COHORT,
    min_threshold: int | None = None,
    protocols: tuple[str, ...] | list[str] | None = None,
    ledgers: bool = True,
) -> list[dict[str, Any]]:
    """`node_configs` with what an operator sets up for each node of a local federation: an
    identity key (FOLDER/node-I/identity.pem), one trust file (FOLDER/trust.json) pinning all of
    them, node `authority` as the ckks key authority, and (with `ledgers`, unless a config sets
    its own) a ledger folder FOLDER/node-I/ledger.
    """
    root = Path(folder).expanduser().resolve()
    identities = [root / f"node-{i}" / "identity.pem" for i in range(len(node_configs))]
    keys = [public_key(create_identity(path)[0]) for path in identities]
    trust = write_trust(
        root / "trust.json", keys, keys[authority] if keys else None, min_cohort,
        min_threshold, protocols,
    )  # fmt: skip
    configs = []
    for config, identity in zip(node_configs, identities, strict=True):
        pinned = {**config, "identity": str(identity), "trust": str(trust)}
        if ledgers:
            pinned.setdefault("ledger", str(identity.parent / "ledger"))
        configs.append(pinned)
    return configs


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
    if protocol == "additive":
        from ...secure_sum.additive.params import default_threshold, read_params

        params = read_params(draft, need_identities=False)
        least = policy.min_threshold
        if least is None:
            least = default_threshold(params.neighbors)
        if params.threshold < least:
            raise TrustRefusal(
                f"the session's additive threshold {params.threshold} is below the minimum "
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


def ckks_authority_of(draft: SessionConfig) -> ClientId | None:
    from ...secure_sum.ckks.settings import parse

    return parse(draft).authority


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
    node's entry is its own (`own` = (identity public key, public part)) and, under ckks, the key
    authority's by the pinned authority key."""
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
    if protocol == "ckks":
        authority = ckks_authority_of(draft)
        if policy.ckks_authority is None:
            raise TrustRefusal(
                f"the trust file {policy.source} pins no ckks_authority: this node cannot know "
                "whose public context to encrypt under"
            )
        if authority is None or bytes(attestations[authority][0]) != policy.ckks_authority:
            raise TrustRefusal(
                f"the ckks key authority (client {authority}) is not the node pinned as "
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
