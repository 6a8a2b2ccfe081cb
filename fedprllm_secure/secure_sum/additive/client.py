"""The client of `additive`: a thin shell around the typed states and their transitions.

It holds the client's context (`client_checks.ClientContext`) and its current state (one frozen
type per round, `client_states`), and answers each message with `client_steps.client_step`.
Saving it saves that state through the strict state codec (`api.save_state`).
"""

from __future__ import annotations

from typing import Any

from ...errors import ProtocolError
from ...randomness import RandomSource
from ..api import (
    ClientId,
    ClientProtocol,
    ClientRefused,
    InputProvider,
    SessionConfig,
    config_digest,
    load_state,
    save_state,
)
from ..messages import Abort
from . import primitives as P
from .client_checks import ClientContext
from .client_states import (
    CLIENT_STATES,
    Aborted,
    Advertising,
    AwaitingInput,
    ClientState,
    Consistency,
    Masking,
    SavedClient,
    Unmasking,
)
from .client_steps import CLIENT_TRANSITIONS, client_step
from .params import Params, read_params

__all__ = ["AdditiveClient", "CLIENT_TRANSITIONS"]


def _context(
    config: SessionConfig,
    client_id: ClientId,
    rng: RandomSource,
    inputs: InputProvider,
    identity: bytes | None,
) -> ClientContext:
    """The context of a roster client whose identity key matches the roster's."""
    params = read_params(config)
    if client_id not in params.roster:
        raise ProtocolError(f"client {client_id} is not on the roster")
    if identity is None or len(identity) != 32:
        raise ProtocolError(f"client {client_id} has no 32-byte identity key")
    key = P.Ed25519PrivateKey.from_private_bytes(identity)
    if P.public_bytes(key) != params.identity_keys[client_id]:
        raise ProtocolError(f"client {client_id}: identity key does not match the roster")
    return ClientContext(
        config=config,
        client_id=client_id,
        params=params,
        binding=config_digest(config),
        identity=key,
        rng=rng,
        inputs=inputs,
    )


class AdditiveClient(ClientProtocol):
    """One client of one session. Memory is O(one chunk) plus O(neighbours) keys and shares."""

    def __init__(
        self,
        config: SessionConfig,
        client_id: ClientId,
        rng: RandomSource,
        inputs: InputProvider,
        identity: bytes | None,
    ) -> None:
        self._ctx = _context(config, client_id, rng, inputs, identity)
        self.client_id = client_id
        self._current: ClientState = Advertising()

    @property
    def state(self) -> str:
        """The round name of the current state."""
        return self._current.ROUND

    @property
    def current(self) -> ClientState:
        """The current typed state (frozen; secrets included)."""
        return self._current

    def handle(self, message: Any) -> Any:
        """The reply to `message`; `ClientRefused` (carrying the `Abort`) when refusing it."""
        self._current, reply = client_step(self._ctx, self._current, message)
        if isinstance(reply, Abort) and isinstance(self._current, Aborted):
            raise ClientRefused(self._current.reason, reply)
        return reply

    # --- saving and restoring (a client process per message, e.g. Flower) ---------------------

    def to_state(self) -> bytes:
        """All of this client's state, secrets included: keep the bytes on the client's node."""
        ctx = self._ctx
        identity = ctx.identity.private_bytes_raw()
        return save_state(
            "additive", SavedClient(ctx.config, ctx.client_id, identity, self._current)
        )

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: RandomSource) -> AdditiveClient:
        """The client `to_state` saved; it draws any fresh randomness from `rng`."""
        saved = load_state("additive", data, SavedClient)
        if not isinstance(saved.state, CLIENT_STATES):
            raise ProtocolError("saved additive client state holds no additive client state")
        client = cls(saved.config, saved.client_id, rng, inputs, saved.identity)
        client._current = saved.state
        return client

    # --- read-only views of the context and state (tests and attacks in tests read them) -------

    @property
    def config(self) -> SessionConfig:
        return self._ctx.config

    @property
    def params(self) -> Params:
        return self._ctx.params

    @property
    def binding(self) -> bytes:
        return self._ctx.binding

    @property
    def graph(self) -> dict[int, frozenset[int]]:
        peers = getattr(self._current, "peers", None)
        return dict(peers.graph) if peers is not None else {}

    @property
    def holders(self) -> frozenset[int]:
        return self.graph[self.client_id] | {self.client_id}

    @property
    def cipher_key(self) -> P.X25519PrivateKey:
        """The session's X25519 key; AttributeError until the client has advertised it."""
        peers = getattr(self._current, "peers", None)
        if peers is None:
            raise AttributeError("cipher_key")
        return P.X25519PrivateKey.from_private_bytes(peers.cipher_key)

    @property
    def mask_key(self) -> P.X25519PrivateKey | None:
        if not isinstance(self._current, (AwaitingInput, Masking, Consistency, Unmasking)):
            return None
        return P.X25519PrivateKey.from_private_bytes(self._current.secrets.mask_key)

    @property
    def self_seed(self) -> bytes | None:
        secrets = getattr(self._current, "secrets", None)
        return secrets.self_seed if secrets is not None else None

    @property
    def self_shares(self) -> dict[int, bytes]:
        secrets = getattr(self._current, "secrets", None)
        return dict(secrets.self_shares) if secrets is not None else {}

    @property
    def key_shares(self) -> dict[int, bytes]:
        secrets = getattr(self._current, "secrets", None)
        return dict(secrets.key_shares) if secrets is not None else {}
