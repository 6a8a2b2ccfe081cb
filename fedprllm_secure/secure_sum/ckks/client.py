"""The client side: encrypt each requested chunk under the authority's public key.

A client holds only the public context and authority pad key published at enrollment (never one
offered by the server, which could otherwise substitute a key it can decrypt with), its own
Ed25519 identity key and a per-session X25519 pad key e_j (drawn from its RandomSource, kept in
its state). It adds to every slot a one-time pad derived from X25519(e_j, authority pad key)
(pads.py), encrypts, and signs the upload with e_j^pub (identity.chunk_payload). A chunk name is
signed under one request only: a request for it in another aggregation, or with another bound,
length, offset or packing, is refused, and so is a re-read whose plaintext differs (its
ContributionLedger covers other sessions). Within that aggregation the server may ask again
after a dropout (a repair: the same request, the same input under the same pad, re-encrypted),
which gives it nothing new: every signed upload of the chunk encrypts the same padded plaintext,
and the authority decrypts the chunk once. The pads are derived from the whole request
(`pads.pad_context`), so an upload made for one request never carries the pad the authority
removes for another. Memory is O(chunk). The client that is designated key
authority also answers decryption requests (authority.decrypt).

Structure: the frozen states `Ready` / `Aborted` (client_state.py), the pure transition `step`
(this module) and `CkksClient`, the shell that keeps the state and saves it whole
(`SavedClient`) through the strict state codec.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from ...errors import ConfigError, ProtocolError
from ...randomness import RandomSource
from ..api import (
    ClientId,
    ClientProtocol,
    ClientRefused,
    InputProvider,
    SessionConfig,
    config_digest,
    load_state,
    read_checked_input,
    save_state,
)
from ..messages import ABORT_INPUT, ABORT_REFUSED, Abort, abort_message
from . import context as he_ctx
from . import identity as ident
from .authority import AuthorityKeys, Refusal, decrypt, upload_payload
from .client_state import Aborted, ClientKeys, ClientState, Ready, SavedClient, SignedChunk
from .messages import DecryptReply, DecryptRequest, EncryptedChunk, EncryptRequest
from .packing import pack, padded_values, slot_count
from .pads import chunk_pads, client_pad_key, pad_context
from .params import he_params
from .settings import (
    agreed,
    authority_pad_public,
    identity_keys,
    parse,
    public_context_bytes,
    session_packing,
)


def load_keys(saved: SavedClient) -> ClientKeys:
    """The client's fixed part of the session, checked against the published config: its
    identity key must be the roster's, and only the designated authority holds key material."""
    config, client_id = saved.config, saved.client_id
    if client_id not in config.roster:
        raise ProtocolError(f"client {client_id} is not on the roster")
    settings = parse(config)
    parsed = ident.decode_identity(saved.identity)
    if ident.public_key(parsed.signing_key) != identity_keys(config)[client_id]:
        raise ProtocolError(f"client {client_id}: identity key does not match the roster")
    authority: AuthorityKeys | None = None
    if settings.authority == client_id:
        if parsed.secret_context is None or parsed.pad_key is None:
            raise ConfigError(f"client {client_id} is the key authority but holds no key")
        authority = AuthorityKeys.load(config, parsed.secret_context, parsed.pad_key)
    elif parsed.secret_context is not None:
        raise ConfigError(f"client {client_id} was given key material it must not hold")
    binding = config_digest(config)
    return ClientKeys(
        config=config,
        client_id=client_id,
        he=he_params(settings.scheme),
        public=he_ctx.load_context(public_context_bytes(config), private=False),
        binding=binding,
        signing_key=parsed.signing_key,
        pad_public=ident.pad_public(saved.pad_key),
        pads_key=client_pad_key(saved.pad_key, authority_pad_public(config), binding, client_id),
        authority=authority,
    )


# -- transitions ------------------------------------------------------------------------------


class InputRefused(ProtocolError):
    """The client's own input for a chunk is invalid or already released (abort code `input`)."""


def step(
    keys: ClientKeys, inputs: InputProvider, state: ClientState, message: Any
) -> tuple[ClientState, EncryptedChunk | DecryptReply | Abort | None]:
    """The next state and the reply to `message`: the upload or the counts from `Ready`; a
    refusal gives `(Aborted(reason), Abort)`; the server's own `Abort` gives `(Aborted, None)`."""
    session_id = keys.config.session_id
    if isinstance(message, Abort) and message.session_id == session_id:
        return Aborted(f"the server aborted: {message.text}"), None
    try:
        return answer(keys, inputs, state, message)
    except ProtocolError as exc:
        code = ABORT_INPUT if isinstance(exc, InputRefused) else ABORT_REFUSED
        index = getattr(message, "aggregation", -1)
        index = index if isinstance(index, int) else -1
        aborted = state if isinstance(state, Aborted) else Aborted(str(exc))
        return aborted, abort_message(session_id, index, code, str(exc))


def answer(
    keys: ClientKeys, inputs: InputProvider, state: ClientState, message: Any
) -> tuple[Ready, EncryptedChunk | DecryptReply]:
    """The reply to a request in `Ready`; ProtocolError refuses it."""
    if not isinstance(state, Ready):
        raise ProtocolError(f"client {keys.client_id} has aborted ({state.reason})")
    if isinstance(message, EncryptRequest):
        return encrypt(keys, inputs, state, message)
    if isinstance(message, DecryptRequest):
        if keys.authority is None:
            raise ProtocolError(f"client {keys.client_id} is not the key authority")
        record, outcome = decrypt(keys.authority, state.authority, message)
        if isinstance(outcome, Refusal):
            raise ProtocolError(outcome.reason)
        return dataclasses.replace(state, authority=record), outcome
    raise ProtocolError(f"client {keys.client_id}: unexpected {type(message).__name__}")


def encrypt(
    keys: ClientKeys, inputs: InputProvider, state: Ready, request: EncryptRequest
) -> tuple[Ready, EncryptedChunk]:
    """Pack, pad, encrypt and sign the requested chunk; the state records what was signed."""
    client = keys.client_id
    if request.session_id != keys.config.session_id:
        raise ProtocolError(f"client {client}: request for another session")
    if request.bound < 1:
        raise ProtocolError(f"client {client}: the bound must be at least 1")
    packing = session_packing(keys.config, request.bound)
    if (request.base, request.per_slot) != (packing.base, packing.per_slot):
        raise ProtocolError(f"client {client}: the server asked for another packing")
    chunk = request.chunk
    context = pad_context(
        request.aggregation, chunk.name, chunk.length, chunk.offset, request.bound,
        packing.base, packing.per_slot,
    )  # fmt: skip
    earlier = state.signed.get(chunk.name)
    if earlier is not None and earlier.context != context:
        raise ProtocolError(
            f"client {client}: chunk {chunk.name!r} was already signed in this "
            "session under another aggregation, bound, length or packing; a second signed "
            "upload could be summed into a second aggregate"
        )
    try:
        vector = read_checked_input(inputs, request.aggregation, chunk, request.bound)
    except ProtocolError as exc:
        raise InputRefused(str(exc)) from exc
    packed = pack(vector, packing.base, packing.per_slot)
    digest = hashlib.sha256(packed.astype("<u8").tobytes()).digest()
    if earlier is not None and earlier.digest != digest:
        raise ProtocolError(
            f"client {client}: chunk {chunk.name!r} reads differently than when it "
            "was signed; one pad must never cover two plaintexts"
        )
    pads = chunk_pads(
        keys.pads_key, context, slot_count(chunk.length, packing.per_slot), packing.pad_modulus
    )
    values = padded_values(packed, pads, packing)
    slots = keys.he.slots
    unsigned = EncryptedChunk(
        session_id=keys.config.session_id,
        aggregation=request.aggregation,
        sender=client,
        chunk_name=chunk.name,
        ciphertexts=tuple(
            he_ctx.encrypt(keys.public, keys.he, values[start : start + slots])
            for start in range(0, values.size, slots)
        ),
        pad_public=keys.pad_public,
        signature=b"",
    )
    payload = upload_payload(
        keys.binding, unsigned, chunk, request.bound, packing.base, packing.per_slot
    )
    signed = {**state.signed, chunk.name: SignedChunk(context, digest)}
    upload = dataclasses.replace(unsigned, signature=ident.sign(keys.signing_key, payload))
    return dataclasses.replace(state, signed=signed), upload


# -- the shell --------------------------------------------------------------------------------


class CkksClient(ClientProtocol):
    """Keeps the saved part (`SavedClient`: session, identity, pad key, state) and the keys
    derived from it; `handle` advances the state with `step`, `to_state` saves it whole."""

    def __init__(
        self,
        config: SessionConfig,
        client_id: ClientId,
        inputs: InputProvider,
        identity: bytes | None,
        rng: RandomSource | None = None,
    ) -> None:
        if identity is None:
            raise ConfigError(f"client {client_id} has no ckks identity (run enroll first)")
        if rng is None:
            raise ConfigError(f"client {client_id} needs a random source for its pad key")
        pad_key = ident.new_pad_key(rng.child(f"ckks-pad-key-{client_id}"))
        saved = SavedClient(agreed(config), client_id, bytes(identity), pad_key, Ready())
        self._resume(saved, inputs)

    def _resume(self, saved: SavedClient, inputs: InputProvider) -> None:
        self._saved = saved
        self._keys = load_keys(saved)
        self.config = saved.config
        self.client_id = saved.client_id
        self.inputs = inputs

    @property
    def state(self) -> str:
        return self._saved.state.NAME

    def to_state(self) -> bytes:
        """The session, this client's identity, pad key and state (the key authority's record
        included): keep the bytes on the client's node."""
        return save_state("ckks", self._saved)

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: object = None) -> CkksClient:
        saved = load_state("ckks", data, SavedClient)
        client = cls.__new__(cls)
        client._resume(saved, inputs)
        return client

    def handle(self, message: object) -> EncryptedChunk | DecryptReply | None:
        """The reply to `message`; `ClientRefused` (carrying the `Abort`) when refusing it."""
        state, reply = step(self._keys, self.inputs, self._saved.state, message)
        self._saved = dataclasses.replace(self._saved, state=state)
        if isinstance(reply, Abort):
            raise ClientRefused(str(reply.text), reply)
        return reply
