"""What a Flower node pins out of band (`trust`'s checks compare the server's messages with it):

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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ...errors import ConfigError

TRUST_SERVER = "server"  # node config trust='server': the server distributes keys, unchecked
TRUST_VERSION = 1
DEFAULT_MIN_COHORT = 3


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
