"""The ckks server's state: one frozen type per round, and the session's fixed part
(`ServerKeys`, built by `load_keys` from the config and the server's link to the authority).

`Idle` (between aggregations) -> `Collecting` (encrypted-input rounds, repair passes included)
-> `Decrypting` (a designated client decrypts chunk by chunk; a separate authority answers
within the last collecting step) -> `Idle`; any refusal -> `Aborted` (terminal). Transitions
(server.py) return a new state and never change one in place: the running ciphertext sums of a
state are built fresh for each chunk and only read afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import ConfigError, ProtocolError
from ..api import AggregationSpec, ChunkSpec, ClientId, SessionConfig, config_digest
from . import context as he_ctx
from .authority import AuthorityLink
from .messages import Statement
from .params import HEParams, Packing, he_params
from .settings import Settings, identity_keys, parse, public_context_bytes


@dataclass(frozen=True, repr=False)
class ServerKeys:
    """What the server holds for the whole session: the config, the public context (it cannot
    decrypt), the roster's identity keys, the config digest, and how sums get decrypted: the
    link to a separate key authority, or the id of the client that plays it."""

    config: SessionConfig
    settings: Settings
    he: HEParams
    public: Any  # the public TenSEAL context
    identity_keys: Mapping[ClientId, bytes]
    binding: bytes
    decryptor: AuthorityLink | ClientId

    def __repr__(self) -> str:
        return f"ServerKeys(session={self.config.session_id.hex()[:8]}...)"


def load_keys(config: SessionConfig, authority: AuthorityLink | None) -> ServerKeys:
    """The server's fixed part of a session; the link must match the "authority" option."""
    settings = parse(config)
    decryptor: AuthorityLink | ClientId
    if settings.authority is None:
        if not isinstance(authority, AuthorityLink):
            raise ProtocolError("a separate key authority was configured but none is linked")
        decryptor = authority
    elif authority is not None:
        raise ConfigError(
            f"client {settings.authority} is the key authority: the server takes no link to a "
            "separate one"
        )
    else:
        decryptor = settings.authority
    he = he_params(settings.scheme)
    return ServerKeys(
        config=config,
        settings=settings,
        he=he,
        public=he_ctx.load_context(public_context_bytes(config), private=False),
        identity_keys=identity_keys(config),
        binding=config_digest(config),
        decryptor=decryptor,
    )


@dataclass(frozen=True)
class Idle:
    """No aggregation running; `alive` are the clients that have not dropped out."""

    NAME: ClassVar[str] = "idle"
    alive: frozenset[ClientId]


@dataclass(frozen=True)
class Collecting:
    """Collecting signed uploads, chunk `queue[pos]` next (a repair pass re-queues the chunks
    whose sums still hold a client that dropped later). Per chunk name: the running sum (one
    ciphertext per part) and the statements of the clients in it."""

    NAME: ClassVar[str] = "collecting"
    alive: frozenset[ClientId]
    spec: AggregationSpec
    packing: Packing
    queue: tuple[int, ...]
    pos: int
    sums: Mapping[str, tuple[Any, ...]]
    held: Mapping[str, Mapping[ClientId, Statement]]

    @property
    def current(self) -> ChunkSpec:
        return self.spec.chunks[self.queue[self.pos]]


@dataclass(frozen=True)
class Decrypting:
    """Client `authority` (the designated key authority) decrypts chunk `pos` next; the
    contributor set `alive` is final."""

    NAME: ClassVar[str] = "decrypting"
    alive: frozenset[ClientId]
    spec: AggregationSpec
    packing: Packing
    authority: ClientId
    pos: int
    sums: Mapping[str, tuple[Any, ...]]
    held: Mapping[str, Mapping[ClientId, Statement]]
    counts: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Aborted:
    """The session refused a message; nothing more is sent or released."""

    NAME: ClassVar[str] = "aborted"
    reason: str


ServerState = Idle | Collecting | Decrypting | Aborted
