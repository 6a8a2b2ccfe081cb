"""The client side: encrypt each requested chunk under the authority's public key.

A client holds only the public context published at enrollment (never one offered by the server,
which could otherwise substitute a key it can decrypt with) and its own Ed25519 identity key. It
signs each encrypted chunk (identity.chunk_payload), and signs each chunk name at most once per
session: a second request for a name it already answered is refused, so no two signed uploads of
one chunk exist for the server to combine (its ContributionLedger covers other sessions). Memory
is O(chunk): the chunk's input, its packed slots and its ciphertexts. The client that is
designated key authority also answers decryption requests through its `KeyAuthority`.
"""

from __future__ import annotations

import dataclasses

from ...errors import ConfigError, ProtocolError
from ..api import (
    ClientId,
    ClientProtocol,
    InputProvider,
    SessionConfig,
    config_digest,
    decode_state,
    encode_state,
    read_checked_input,
)
from . import context as he_ctx
from . import identity as ident
from .authority import KeyAuthority, upload_payload
from .messages import DecryptReply, DecryptRequest, EncryptedChunk, EncryptRequest
from .packing import pack, to_ckks_values
from .params import he_params
from .settings import AUTHORITY_LINK, identity_keys, parse, public_context_bytes, session_packing


class CkksClient(ClientProtocol):
    def __init__(
        self,
        config: SessionConfig,
        client_id: ClientId,
        inputs: InputProvider,
        identity: bytes | None,
    ) -> None:
        if client_id not in config.roster:
            raise ProtocolError(f"client {client_id} is not on the roster")
        settings = parse(config)
        self.config = config
        self.client_id = client_id
        self.inputs = inputs
        self._he = he_params(settings.scheme)
        self._ctx = he_ctx.load_context(public_context_bytes(config), private=False)
        self._binding = config_digest(config)
        self._authority: KeyAuthority | None = None
        if identity is None:
            raise ConfigError(f"client {client_id} has no ckks identity (run enroll first)")
        self._identity = bytes(identity)
        parsed = ident.decode_identity(identity)
        if ident.public_key(parsed.signing_key) != identity_keys(config)[client_id]:
            raise ProtocolError(f"client {client_id}: identity key does not match the roster")
        self._signing_key = parsed.signing_key
        if settings.authority == client_id:
            if parsed.secret_context is None:
                raise ConfigError(f"client {client_id} is the key authority but holds no key")
            self._authority = KeyAuthority(config, parsed.secret_context)
        elif parsed.secret_context is not None:
            raise ConfigError(f"client {client_id} was given key material it must not hold")
        self._signed: set[str] = set()  # chunk names signed in this session
        self._state = "ready"

    @property
    def state(self) -> str:
        return self._state

    def to_state(self) -> bytes:
        """The session, this client's id and state, and (key authority only) the secret context
        with the record of what it already decrypted: keep the bytes on the client's node."""
        options = {k: v for k, v in self.config.options.items() if k != AUTHORITY_LINK}
        fields = {
            "config": dataclasses.replace(self.config, options=options),
            "client_id": self.client_id,
            "identity": self._identity,
            "state": self._state,
            "signed": set(self._signed),
            "decrypted": None,
            "contributors": None,
        }
        if self._authority is not None:
            fields["decrypted"] = set(self._authority._decrypted)
            fields["contributors"] = dict(self._authority._contributors)
        return encode_state("ckks", fields)

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: object = None) -> CkksClient:
        f = decode_state("ckks", data)
        try:
            client = cls(f["config"], f["client_id"], inputs, f["identity"])
            client._state = str(f["state"])
            client._signed = {str(name) for name in f["signed"]}
            if client._authority is not None:
                client._authority._decrypted = set(f["decrypted"] or ())
                client._authority._contributors = dict(f["contributors"] or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"saved ckks client state is corrupt: {exc}") from exc
        return client

    def handle(self, message: object) -> EncryptedChunk | DecryptReply:
        if self._state != "ready":
            raise ProtocolError(f"client {self.client_id} has aborted")
        try:
            if isinstance(message, EncryptRequest):
                return self._encrypt(message)
            if isinstance(message, DecryptRequest):
                if self._authority is None:
                    raise ProtocolError(f"client {self.client_id} is not the key authority")
                return self._authority.handle(message)
            raise ProtocolError(f"client {self.client_id}: unexpected {type(message).__name__}")
        except ProtocolError:
            self._state = "aborted"
            raise

    def _encrypt(self, request: EncryptRequest) -> EncryptedChunk:
        if request.session_id != self.config.session_id:
            raise ProtocolError(f"client {self.client_id}: request for another session")
        if request.bound < 1:
            raise ProtocolError(f"client {self.client_id}: the bound must be at least 1")
        packing = session_packing(self.config, request.bound)
        if (request.base, request.per_slot) != (packing.base, packing.per_slot):
            raise ProtocolError(f"client {self.client_id}: the server asked for another packing")
        if request.chunk.name in self._signed:
            raise ProtocolError(
                f"client {self.client_id}: chunk {request.chunk.name!r} was already signed in this "
                "session; a second signed upload could be summed into a second aggregate"
            )
        vector = read_checked_input(self.inputs, request.aggregation, request.chunk, request.bound)
        packed = pack(vector, packing.base, packing.per_slot)
        values = to_ckks_values(packed, packing, request.bound) if packing.centered else packed
        slots = self._he.slots
        ciphertexts = tuple(
            he_ctx.encrypt(self._ctx, self._he, values[start : start + slots])
            for start in range(0, values.size, slots)
        )
        unsigned = EncryptedChunk(
            session_id=self.config.session_id,
            aggregation=request.aggregation,
            sender=self.client_id,
            chunk_name=request.chunk.name,
            ciphertexts=ciphertexts,
            signature=b"",
        )
        payload = upload_payload(
            self._binding, unsigned, request.chunk, request.bound, packing.base, packing.per_slot
        )
        self._signed.add(request.chunk.name)
        return dataclasses.replace(unsigned, signature=ident.sign(self._signing_key, payload))
