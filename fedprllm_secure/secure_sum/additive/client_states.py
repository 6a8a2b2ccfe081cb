"""The client states of `additive`: one frozen type per round (protocols/additive.md section 5).

A state holds exactly what its round needs, nothing optional: what the client learned for the
whole session (`Peers`), the secrets of the running aggregation (`Secrets`), and the round's own
fields. Keys are raw bytes, so every state is saved as it is through the strict state codec
(`api.save_state`); `ROUND` is the round name `AdditiveClient.state` reports.

    Advertising --advertise-request--> FirstShare --share-keys-request--> AwaitingInput
    Completed --share-keys-request (next aggregation)--> AwaitingInput
    AwaitingInput --masked-input-request 0--> Masking (or Consistency after the last chunk)
    Masking --masked-input-request j--> Masking (or Consistency after the last chunk)
    Consistency --consistency-request--> Unmasking --unmask-request--> Completed
    any state --anything else, or an abort from the server--> Aborted (final)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from ..api import AggregationSpec, SessionConfig, state_type
from .messages import ADVERTISE, CONSISTENCY, MASKED, SHARE, UNMASK, SignedKeys

COMPLETED = "completed"
ABORTED = "aborted"

# records of the messages that states keep (registered so the codec can save them)
state_type("additive/signed-keys")(SignedKeys)


@state_type("additive/peers")
@dataclass(frozen=True)
class Peers:
    """What the client keeps for the whole session once it advertised its keys."""

    graph: Mapping[int, frozenset[int]]
    cipher_key: bytes  # X25519 private key of the session (encrypts shares)
    own_keys: SignedKeys
    peer_keys: Mapping[int, SignedKeys]  # checked once, in the first aggregation
    share_keys: Mapping[int, bytes]  # K_uv per peer, derived once (section 3.2)
    dead: frozenset[int]  # peers whose mask key was revealed: never again


@state_type("additive/secrets")
@dataclass(frozen=True)
class Secrets:
    """The running aggregation: its spec and this client's fresh secrets and held shares."""

    spec: AggregationSpec  # spec.index is the aggregation index
    listed: frozenset[int]  # the holders on the key list (this client included)
    self_seed: bytes  # b_u
    mask_key: bytes  # X25519 private key s_u
    self_shares: Mapping[int, bytes]  # shares of b_v this client holds, by owner
    key_shares: Mapping[int, bytes]  # shares of s_v this client holds, by owner


@state_type("additive/advertising")
@dataclass(frozen=True)
class Advertising:
    ROUND: ClassVar[str] = ADVERTISE


@state_type("additive/first-share")
@dataclass(frozen=True)
class FirstShare:
    ROUND: ClassVar[str] = SHARE
    peers: Peers
    advertised: int  # the aggregation index of the advertise request


@state_type("additive/completed")
@dataclass(frozen=True)
class Completed:
    ROUND: ClassVar[str] = COMPLETED
    peers: Peers
    last: int  # index of the last completed aggregation: the next must exceed it


@state_type("additive/awaiting-input")
@dataclass(frozen=True)
class AwaitingInput:
    """Shares sent; chunk 0 (with the peers' shares and mask keys) comes next."""

    ROUND: ClassVar[str] = MASKED
    peers: Peers
    secrets: Secrets


@state_type("additive/masking")
@dataclass(frozen=True)
class Masking:
    """Chunks 0 .. next_chunk - 1 sent, masked with the peers of `u2`."""

    ROUND: ClassVar[str] = MASKED
    peers: Peers
    secrets: Secrets
    u2: frozenset[int]  # the holders that shared keys with this client, itself included
    pair_seeds: Mapping[int, bytes]  # s_uv for every v in u2 - {u}
    next_chunk: int


@state_type("additive/consistency")
@dataclass(frozen=True)
class Consistency:
    ROUND: ClassVar[str] = CONSISTENCY
    peers: Peers
    secrets: Secrets
    u2: frozenset[int]


@state_type("additive/unmasking")
@dataclass(frozen=True)
class Unmasking:
    ROUND: ClassVar[str] = UNMASK
    peers: Peers
    secrets: Secrets
    u2: frozenset[int]
    signed: tuple[int, ...]  # the one survivor list this client signed in this aggregation


@state_type("additive/aborted")
@dataclass(frozen=True)
class Aborted:
    """Final: every secret of the session forgotten."""

    ROUND: ClassVar[str] = ABORTED
    reason: str


ClientState = (
    Advertising
    | FirstShare
    | Completed
    | AwaitingInput
    | Masking
    | Consistency
    | Unmasking
    | Aborted
)
CLIENT_STATES = (
    Advertising,
    FirstShare,
    Completed,
    AwaitingInput,
    Masking,
    Consistency,
    Unmasking,
    Aborted,
)


@state_type("additive/client")
@dataclass(frozen=True)
class SavedClient:
    """What `AdditiveClient.to_state` saves: its setup and its current state (secrets included)."""

    config: SessionConfig
    client_id: int
    identity: bytes  # Ed25519 private key
    state: ClientState
