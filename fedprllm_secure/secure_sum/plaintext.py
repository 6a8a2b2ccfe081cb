"""`plaintext`: the insecure reference protocol. The server sees every client's vector.

Use it for baselines and as the oracle the secure protocols are tested against. Each chunk is
requested from every live client and sent bit-packed to `bits_for(bound)` bits per entry. A client
that misses any chunk of an aggregation is left out of that aggregation's sum (the server keeps
what each client sent until the aggregation ends, which a plaintext server may).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProtocolError
from .api import (
    AggregateResult,
    AggregationSpec,
    ChunkSpec,
    ClientId,
    ClientProtocol,
    InputProvider,
    ServerProtocol,
    SessionConfig,
    decode_state,
    encode_state,
    read_checked_input,
    sum_dtype,
)
from .messages import message
from .packing import bits_for, pack_uint, unpack_uint
from .registry import ProtocolInfo, register

ROUND = "input"


@message("plaintext/request", ROUND)
@dataclass(frozen=True)
class ChunkRequest:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec


@message("plaintext/submission", ROUND)
@dataclass(frozen=True)
class ChunkSubmission:
    session_id: bytes
    aggregation: int
    sender: int
    chunk_name: str
    data: bytes


class PlaintextClient(ClientProtocol):
    def __init__(self, config: SessionConfig, client_id: ClientId, inputs: InputProvider) -> None:
        if client_id not in config.roster:
            raise ProtocolError(f"client {client_id} is not on the roster")
        self.config = config
        self.client_id = client_id
        self.inputs = inputs
        self._state = "ready"

    @property
    def state(self) -> str:
        return self._state

    def to_state(self) -> bytes:
        return encode_state(
            "plaintext",
            {"config": self.config, "client_id": self.client_id, "state": self._state},
        )

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: object = None) -> PlaintextClient:
        fields = decode_state("plaintext", data)
        try:
            client = cls(fields["config"], fields["client_id"], inputs)
            client._state = str(fields["state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"saved plaintext client state is corrupt: {exc}") from exc
        return client

    def handle(self, message: object) -> ChunkSubmission:
        if self._state != "ready" or not isinstance(message, ChunkRequest):
            self._state = "aborted"
            raise ProtocolError(f"client {self.client_id}: unexpected {type(message).__name__}")
        if message.session_id != self.config.session_id:
            self._state = "aborted"
            raise ProtocolError(f"client {self.client_id}: request for another session")
        try:
            vector = read_checked_input(
                self.inputs, message.aggregation, message.chunk, message.bound
            )
        except ProtocolError:
            # A refused input (out of range, or a chunk its ledger already released) ends this
            # client's session: it submits nothing now or later.
            self._state = "aborted"
            raise
        return ChunkSubmission(
            session_id=self.config.session_id,
            aggregation=message.aggregation,
            sender=self.client_id,
            chunk_name=message.chunk.name,
            data=pack_uint(vector, bits_for(message.bound)),
        )


class PlaintextServer(ServerProtocol):
    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._state = "idle"
        self._spec: AggregationSpec | None = None
        self._next_chunk = 0
        self._alive: set[ClientId] = set(config.roster)
        self._received: dict[ClientId, dict[str, bytes]] = {}

    @property
    def state(self) -> str:
        return self._state

    def begin(self, spec: AggregationSpec) -> dict[ClientId, ChunkRequest]:
        if self._state == "collecting":
            raise ProtocolError("an aggregation is already running")
        self._spec = spec
        self._next_chunk = 0
        self._received = {client: {} for client in self._alive}
        self._state = "collecting"
        return self._requests()

    def _requests(self) -> dict[ClientId, ChunkRequest]:
        assert self._spec is not None
        chunk = self._spec.chunks[self._next_chunk]
        request = ChunkRequest(self.config.session_id, self._spec.index, self._spec.bound, chunk)
        return {client: request for client in sorted(self._alive)}

    def handle(
        self, replies: dict[ClientId, object]
    ) -> dict[ClientId, ChunkRequest] | AggregateResult:
        if self._state != "collecting" or self._spec is None:
            raise ProtocolError("no aggregation is running")
        spec = self._spec
        chunk = spec.chunks[self._next_chunk]
        for client, reply in replies.items():
            self._accept(client, reply, spec, chunk)
        self._alive &= set(replies)
        self._next_chunk += 1
        if self._next_chunk < len(spec.chunks) and self._alive:
            return self._requests()
        return self._finish(spec)

    def _accept(
        self, client: ClientId, reply: object, spec: AggregationSpec, chunk: ChunkSpec
    ) -> None:
        if client not in self._alive:
            raise ProtocolError(f"reply from client {client}, which is not in this aggregation")
        if not isinstance(reply, ChunkSubmission):
            raise ProtocolError(
                f"client {client} sent {type(reply).__name__}, expected a submission"
            )
        if (
            reply.session_id != self.config.session_id
            or reply.aggregation != spec.index
            or reply.sender != client
            or reply.chunk_name != chunk.name
        ):
            raise ProtocolError(f"client {client} sent a submission for another chunk or session")
        values = unpack_uint(reply.data, bits_for(spec.bound), chunk.length)
        if values.size and int(values.max()) > spec.bound:
            raise ProtocolError(f"client {client} sent a value above the bound {spec.bound}")
        self._received[client][chunk.name] = reply.data

    def _finish(self, spec: AggregationSpec) -> AggregateResult:
        contributors = tuple(sorted(self._alive))
        dtype = sum_dtype(spec.bound * len(self.config.roster))
        bits = bits_for(spec.bound)
        sums = {}
        for chunk in spec.chunks:
            total = np.zeros(chunk.length, dtype=dtype)
            for client in contributors:
                total += unpack_uint(self._received[client][chunk.name], bits, chunk.length).astype(
                    dtype
                )
            sums[chunk.name] = total
        self._received = {}
        self._state = "idle"
        return AggregateResult(spec=spec, sums=sums, contributors=contributors)


register(
    ProtocolInfo(
        name="plaintext",
        description="insecure reference: the server sees every client's mask",
        secure=False,
        make_server=lambda config, rng: PlaintextServer(config),
        make_client=lambda config, client_id, rng, inputs, identity: PlaintextClient(
            config, client_id, inputs
        ),
    )
)
