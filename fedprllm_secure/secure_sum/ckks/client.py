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
authority also answers decryption requests through its `KeyAuthority`.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ...errors import ConfigError, ProtocolError
from ...randomness import RandomSource
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
from .packing import pack, padded_values, slot_count
from .pads import chunk_pads, client_pad_key, pad_context
from .params import he_params
from .settings import (
    AUTHORITY_LINK,
    authority_pad_public,
    identity_keys,
    parse,
    public_context_bytes,
    session_packing,
)


class CkksClient(ClientProtocol):
    def __init__(
        self,
        config: SessionConfig,
        client_id: ClientId,
        inputs: InputProvider,
        identity: bytes | None,
        rng: RandomSource | None = None,
        pad_key: bytes | None = None,
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
            assert parsed.pad_key is not None
            self._authority = KeyAuthority(config, parsed.secret_context, parsed.pad_key)
        elif parsed.secret_context is not None:
            raise ConfigError(f"client {client_id} was given key material it must not hold")
        if pad_key is None:
            if rng is None:
                raise ConfigError(f"client {client_id} needs a random source for its pad key")
            pad_key = ident.new_pad_key(rng.child(f"ckks-pad-key-{client_id}"))
        self._pad_key = bytes(pad_key)
        self._pad_public = ident.pad_public(self._pad_key)
        self._pads_key = client_pad_key(
            self._pad_key, authority_pad_public(config), self._binding, client_id
        )
        # chunk name -> (pad context: aggregation, lengths, bound, packing; SHA-256 of the packed
        # plaintext) of its first signed upload: a later request must match both
        self._signed: dict[str, tuple[bytes, bytes]] = {}
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
            "pad_key": self._pad_key,
            "state": self._state,
            "signed": dict(self._signed),
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
            client = cls(f["config"], f["client_id"], inputs, f["identity"], None, f["pad_key"])
            client._state = str(f["state"])
            client._signed = {
                str(name): (bytes(context), bytes(digest))
                for name, (context, digest) in f["signed"].items()
            }
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
        chunk = request.chunk
        context = pad_context(
            request.aggregation, chunk.name, chunk.length, chunk.offset, request.bound,
            packing.base, packing.per_slot,
        )  # fmt: skip
        earlier = self._signed.get(chunk.name)
        if earlier is not None and earlier[0] != context:
            raise ProtocolError(
                f"client {self.client_id}: chunk {chunk.name!r} was already signed in this "
                "session under another aggregation, bound, length or packing; a second signed "
                "upload could be summed into a second aggregate"
            )
        vector = read_checked_input(self.inputs, request.aggregation, chunk, request.bound)
        packed = pack(vector, packing.base, packing.per_slot)
        digest = hashlib.sha256(packed.astype("<u8").tobytes()).digest()
        if earlier is not None and earlier[1] != digest:
            raise ProtocolError(
                f"client {self.client_id}: chunk {chunk.name!r} reads differently than when it "
                "was signed; one pad must never cover two plaintexts"
            )
        pads = chunk_pads(
            self._pads_key,
            context,
            slot_count(chunk.length, packing.per_slot),
            packing.pad_modulus,
        )
        values = padded_values(packed, pads, packing)
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
            pad_public=self._pad_public,
            signature=b"",
        )
        payload = upload_payload(
            self._binding, unsigned, request.chunk, request.bound, packing.base, packing.per_slot
        )
        self._signed[chunk.name] = (context, digest)
        return dataclasses.replace(unsigned, signature=ident.sign(self._signing_key, payload))
