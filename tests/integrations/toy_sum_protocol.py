"""`toy-sum`: a secure-sum protocol defined outside fedprllm_secure, for the entry-point test.

Not secure (the server sees every vector); it claims `secure=True` only so that a Flower node runs
every check it runs for a real one (trust file, attestations, ledger). It uses every enrollment
hook: `prepare_options` adds an option, `node_enroll` makes a per-node secret whose digest is the
public part, `publish` puts the public parts in the config, and each client refuses a session
whose published config does not hold its own public part. The test copies this file next to a
dist-info that names `INFO` under the entry-point group `fedprllm_secure.protocols`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedprllm_secure.errors import ProtocolError
from fedprllm_secure.secure_sum.api import (
    AggregateResult,
    AggregationSpec,
    ChunkSpec,
    ClientProtocol,
    ServerProtocol,
    SessionConfig,
    decode_state,
    encode_state,
    read_checked_input,
)
from fedprllm_secure.secure_sum.messages import message
from fedprllm_secure.secure_sum.registry import ProtocolInfo

NAME = "toy-sum"
PUBLICS = "toy.publics"


@message("toy-sum/request", "toy-input")
@dataclass(frozen=True)
class Request:
    session_id: bytes
    aggregation: int
    bound: int
    chunk: ChunkSpec


@message("toy-sum/reply", "toy-input")
@dataclass(frozen=True)
class Reply:
    session_id: bytes
    sender: int
    chunk_name: str
    data: bytes  # int64, little-endian


def prepare_options(roster: tuple[int, ...], options: Mapping[str, Any]) -> dict[str, Any]:
    return {**options, "toy.roster-size": len(roster)}


def node_enroll(config: SessionConfig, client_id: int, rng: Any) -> tuple[bytes | None, bytes]:
    secret = os.urandom(16)
    return secret, hashlib.sha256(secret).digest()


def publish(config: SessionConfig, publics: Mapping[int, bytes]) -> SessionConfig:
    if any(len(publics.get(c, b"")) != 32 for c in config.roster):
        raise ProtocolError("a toy-sum node sent no public part")
    options = {**config.options, PUBLICS: {c: publics[c] for c in config.roster}}
    return SessionConfig(config.session_id, config.roster, options)


class ToyClient(ClientProtocol):
    def __init__(self, config: SessionConfig, client_id: int, inputs: Any, secret: bytes) -> None:
        if config.options.get(PUBLICS, {}).get(client_id) != hashlib.sha256(secret).digest():
            raise ProtocolError("the published toy-sum config does not hold this node's part")
        self.config, self.client_id, self.inputs, self.secret = config, client_id, inputs, secret

    @property
    def state(self) -> str:
        return "ready"

    def to_state(self) -> bytes:
        fields = {"config": self.config, "client_id": self.client_id, "secret": self.secret}
        return encode_state(NAME, fields)

    @classmethod
    def from_state(cls, data: bytes, inputs: Any, rng: object = None) -> ToyClient:
        fields = decode_state(NAME, data)
        return cls(fields["config"], fields["client_id"], inputs, fields["secret"])

    def handle(self, message: object) -> Reply:
        if not isinstance(message, Request) or message.session_id != self.config.session_id:
            raise ProtocolError("toy-sum: unexpected message")
        vector = read_checked_input(self.inputs, message.aggregation, message.chunk, message.bound)
        data = vector.astype("<i8").tobytes()
        return Reply(self.config.session_id, self.client_id, message.chunk.name, data)


class ToyServer(ServerProtocol):
    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.spec: AggregationSpec | None = None
        self.alive = set(config.roster)
        self.sums: dict[str, np.ndarray] = {}
        self.next = 0

    @property
    def state(self) -> str:
        return "idle" if self.spec is None else "collecting"

    def begin(self, spec: AggregationSpec) -> dict[int, Request]:
        self.spec, self.next, self.sums = spec, 0, {}
        return self._requests()

    def _requests(self) -> dict[int, Request]:
        assert self.spec is not None
        chunk = self.spec.chunks[self.next]
        request = Request(self.config.session_id, self.spec.index, self.spec.bound, chunk)
        return {c: request for c in sorted(self.alive)}

    def handle(self, replies: dict[int, object]) -> dict[int, Request] | AggregateResult:
        assert self.spec is not None
        chunk = self.spec.chunks[self.next]
        total = np.zeros(chunk.length, dtype=np.int64)
        for client, reply in replies.items():
            if not isinstance(reply, Reply) or reply.sender != client:
                raise ProtocolError(f"toy-sum: client {client} sent something else")
            total += np.frombuffer(reply.data, dtype="<i8")
        self.sums[chunk.name] = total
        self.alive &= set(replies)
        self.next += 1
        if self.next < len(self.spec.chunks):
            return self._requests()
        spec, self.spec = self.spec, None
        return AggregateResult(spec=spec, sums=self.sums, contributors=tuple(sorted(self.alive)))


INFO = ProtocolInfo(
    name=NAME,
    description="a toy protocol from outside the package (entry-point test)",
    secure=True,
    make_server=lambda config, rng: ToyServer(config),
    make_client=lambda config, client_id, rng, inputs, identity: ToyClient(
        config, client_id, inputs, identity or b""
    ),
    prepare_options=prepare_options,
    node_enroll=node_enroll,
    publish=publish,
)
