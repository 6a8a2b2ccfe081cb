"""The client side: encrypt each requested chunk under the authority's public key.

A client holds only the public context published at enrollment (never one offered by the server,
which could otherwise substitute a key it can decrypt with). Memory is O(chunk): the chunk's
input, its packed slots and its ciphertexts. The client that is designated key authority also
answers decryption requests through its `KeyAuthority`.
"""

from __future__ import annotations

from ...errors import ConfigError, ProtocolError
from ..api import ClientId, ClientProtocol, InputProvider, SessionConfig, read_checked_input
from . import context as he_ctx
from .authority import KeyAuthority
from .messages import DecryptReply, DecryptRequest, EncryptedChunk, EncryptRequest
from .packing import pack, to_ckks_values
from .params import he_params
from .settings import parse, public_context_bytes, session_packing


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
        self._authority: KeyAuthority | None = None
        if settings.authority == client_id:
            if identity is None:
                raise ConfigError(f"client {client_id} is the key authority but holds no key")
            self._authority = KeyAuthority(config, identity)
        elif identity is not None:
            raise ConfigError(f"client {client_id} was given key material it must not hold")
        self._state = "ready"

    @property
    def state(self) -> str:
        return self._state

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
        vector = read_checked_input(self.inputs, request.aggregation, request.chunk, request.bound)
        packed = pack(vector, packing.base, packing.per_slot)
        values = to_ckks_values(packed, packing, request.bound) if packing.centered else packed
        slots = self._he.slots
        ciphertexts = tuple(
            he_ctx.encrypt(self._ctx, self._he, values[start : start + slots])
            for start in range(0, values.size, slots)
        )
        return EncryptedChunk(
            session_id=self.config.session_id,
            aggregation=request.aggregation,
            sender=self.client_id,
            chunk_name=request.chunk.name,
            ciphertexts=ciphertexts,
        )
