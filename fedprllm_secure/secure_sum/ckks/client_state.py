"""The ckks client's state: one frozen type per round, saved whole through the state codec.

`Ready` answers requests (it records each chunk it signed and, for the designated key authority,
the authority's record); any refusal moves to `Aborted` (terminal). `SavedClient` is everything
a client needs to resume besides its InputProvider: the agreed session config, its id, its
private identity bytes, its per-session pad key and its state. `ClientKeys` is derived from it
on every restore and never saved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...errors import ProtocolError
from ..api import ClientId, SessionConfig, state_type
from .authority import AuthorityKeys, AuthorityRecord
from .params import HEParams


@state_type("ckks/signed-chunk")
@dataclass(frozen=True)
class SignedChunk:
    """A chunk's first signed upload: its pad context (aggregation, lengths, bound, packing) and
    the SHA-256 of its packed plaintext; a later request for the name must match both."""

    context: bytes
    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.context, bytes) or not isinstance(self.digest, bytes):
            raise ProtocolError("a signed-chunk record must hold bytes")


@state_type("ckks/ready")
@dataclass(frozen=True)
class Ready:
    """Answering requests. `signed`: chunk name -> its first signed upload. `authority`: the key
    authority's record (empty unless this client is the designated key authority)."""

    NAME: ClassVar[str] = "ready"
    signed: Mapping[str, SignedChunk] = field(default_factory=dict)
    authority: AuthorityRecord = field(default_factory=AuthorityRecord)

    def __post_init__(self) -> None:
        if not isinstance(self.signed, Mapping) or not all(
            isinstance(name, str) and isinstance(record, SignedChunk)
            for name, record in self.signed.items()
        ):
            raise ProtocolError("the signed-chunk records are malformed")
        if not isinstance(self.authority, AuthorityRecord):
            raise ProtocolError("the key authority's record is malformed")


@state_type("ckks/aborted")
@dataclass(frozen=True)
class Aborted:
    """The client refused a message; it answers nothing more in this session."""

    NAME: ClassVar[str] = "aborted"
    reason: str


ClientState = Ready | Aborted


@state_type("ckks/client")
@dataclass(frozen=True, repr=False)
class SavedClient:
    """What `to_state` saves: the session config the parties agreed on (no `local.` options),
    the client's id, its private identity bytes, its X25519 pad key and its round state."""

    config: SessionConfig
    client_id: ClientId
    identity: bytes
    pad_key: bytes
    state: ClientState

    def __post_init__(self) -> None:
        if not isinstance(self.config, SessionConfig) or not isinstance(self.client_id, int):
            raise ProtocolError("saved ckks client state is corrupt")
        if not isinstance(self.identity, bytes) or not isinstance(self.pad_key, bytes):
            raise ProtocolError("saved ckks client state is corrupt")
        if len(self.pad_key) != 32 or not isinstance(self.state, (Ready, Aborted)):
            raise ProtocolError("saved ckks client state is corrupt")

    def __repr__(self) -> str:  # never print key material
        return f"SavedClient(client={self.client_id}, state={self.state.NAME})"


@dataclass(frozen=True, repr=False)
class ClientKeys:
    """The client's fixed part of the session, derived from `SavedClient`: the public context,
    the config digest, its signing key, its pad public key and pad-derivation key, and the
    authority's keys if it is the designated key authority (None for every other client)."""

    config: SessionConfig
    client_id: ClientId
    he: HEParams
    public: Any  # the public TenSEAL context
    binding: bytes
    signing_key: bytes
    pad_public: bytes
    pads_key: bytes
    authority: AuthorityKeys | None

    def __repr__(self) -> str:  # never print key material
        return f"ClientKeys(client={self.client_id})"
