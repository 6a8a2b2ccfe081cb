"""`plaintext`: the insecure reference protocol. The server sees every client's vector.

Use it for baselines and as the oracle the secure protocols are tested against. Each chunk is
requested from every live client and sent bit-packed to `bits_for(bound)` bits per entry. A client
that misses any chunk of an aggregation is left out of that aggregation's sum (the server keeps
what each client sent until the aggregation ends, which a plaintext server may).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import ProtocolError
from .api import (
    AggregateResult,
    AggregationAborted,
    AggregationSpec,
    ChunkSpec,
    ClientId,
    ClientProtocol,
    ClientRefused,
    InputProvider,
    ServerProtocol,
    SessionConfig,
    load_state,
    read_checked_input,
    save_state,
    state_type,
    sum_dtype,
)
from .messages import (
    ABORT_AGGREGATION,
    ABORT_INPUT,
    ABORT_REFUSED,
    Abort,
    abort_message,
    message,
)
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


# -- client -----------------------------------------------------------------------------------


@state_type("plaintext/ready")
@dataclass(frozen=True)
class Ready:
    """Answering chunk requests."""

    NAME: ClassVar[str] = "ready"


@state_type("plaintext/aborted")
@dataclass(frozen=True)
class Aborted:
    """Refused a message (or an input); answers nothing more in this session. Also the
    server's terminal state."""

    NAME: ClassVar[str] = "aborted"
    reason: str


@state_type("plaintext/client")
@dataclass(frozen=True)
class SavedClient:
    """What a client saves: the agreed session config, its id and its round state."""

    config: SessionConfig
    client_id: ClientId
    state: Ready | Aborted

    def __post_init__(self) -> None:
        if (
            not isinstance(self.config, SessionConfig)
            or not isinstance(self.client_id, int)
            or not isinstance(self.state, (Ready, Aborted))
        ):
            raise ProtocolError("saved plaintext client state is corrupt")
        if self.client_id not in self.config.roster:
            raise ProtocolError(f"client {self.client_id} is not on the roster")


class InputRefused(ProtocolError):
    """The client's own input for a chunk is invalid or already released (abort code `input`)."""


def client_step(
    saved: SavedClient, inputs: InputProvider, message: object
) -> tuple[Ready | Aborted, ChunkSubmission | Abort | None]:
    """The next state and the reply: the submission from `Ready`; a refusal (a bad message, or
    an input out of range or already released by its ledger) gives `(Aborted(reason), Abort)`:
    the client submits nothing now or later; the server's own `Abort` gives `(Aborted, None)`."""
    session_id = saved.config.session_id
    if isinstance(message, Abort) and message.session_id == session_id:
        return Aborted(f"the server aborted: {message.text}"), None
    try:
        return saved.state, submission(saved, inputs, message)
    except ProtocolError as exc:
        code = ABORT_INPUT if isinstance(exc, InputRefused) else ABORT_REFUSED
        index = getattr(message, "aggregation", -1)
        index = index if isinstance(index, int) else -1
        state = saved.state if isinstance(saved.state, Aborted) else Aborted(str(exc))
        return state, abort_message(session_id, index, code, str(exc))


def submission(saved: SavedClient, inputs: InputProvider, message: object) -> ChunkSubmission:
    """The packed chunk a request in `Ready` asks for; ProtocolError refuses it."""
    client, config = saved.client_id, saved.config
    if isinstance(saved.state, Aborted):
        raise ProtocolError(f"client {client} has aborted ({saved.state.reason})")
    if not isinstance(message, ChunkRequest):
        raise ProtocolError(f"client {client}: unexpected {type(message).__name__}")
    if message.session_id != config.session_id:
        raise ProtocolError(f"client {client}: request for another session")
    try:
        vector = read_checked_input(inputs, message.aggregation, message.chunk, message.bound)
    except ProtocolError as exc:
        raise InputRefused(str(exc)) from exc
    return ChunkSubmission(
        session_id=config.session_id,
        aggregation=message.aggregation,
        sender=client,
        chunk_name=message.chunk.name,
        data=pack_uint(vector, bits_for(message.bound)),
    )


class PlaintextClient(ClientProtocol):
    """Keeps its `SavedClient` and advances it with `client_step`."""

    def __init__(self, config: SessionConfig, client_id: ClientId, inputs: InputProvider) -> None:
        self._resume(SavedClient(config, client_id, Ready()), inputs)

    def _resume(self, saved: SavedClient, inputs: InputProvider) -> None:
        self._saved = saved
        self.config = saved.config
        self.client_id = saved.client_id
        self.inputs = inputs

    @property
    def state(self) -> str:
        return self._saved.state.NAME

    def to_state(self) -> bytes:
        return save_state("plaintext", self._saved)

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: object = None) -> PlaintextClient:
        client = cls.__new__(cls)
        client._resume(load_state("plaintext", data, SavedClient), inputs)
        return client

    def handle(self, message: object) -> ChunkSubmission | None:
        """The reply to `message`; `ClientRefused` (carrying the `Abort`) when refusing it."""
        state, reply = client_step(self._saved, self.inputs, message)
        self._saved = dataclasses.replace(self._saved, state=state)
        if isinstance(reply, Abort):
            raise ClientRefused(reply.text, reply)
        return reply


# -- server -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """No aggregation running; `alive`: the clients that have not dropped out."""

    NAME: ClassVar[str] = "idle"
    alive: frozenset[ClientId]


@dataclass(frozen=True)
class Collecting:
    """Chunk `spec.chunks[len(received)]` is requested next; `received` holds, per chunk already
    collected, what each client then alive sent (a plaintext server may keep it)."""

    NAME: ClassVar[str] = "collecting"
    alive: frozenset[ClientId]
    spec: AggregationSpec
    received: tuple[Mapping[ClientId, bytes], ...]

    @property
    def current(self) -> ChunkSpec:
        return self.spec.chunks[len(self.received)]


ServerState = Idle | Collecting | Aborted


def server_begin(
    config: SessionConfig, state: ServerState, spec: AggregationSpec
) -> tuple[Collecting, dict[ClientId, ChunkRequest]]:
    if isinstance(state, Aborted):
        raise ProtocolError(f"the session was aborted ({state.reason})")
    if not isinstance(state, Idle):
        raise ProtocolError("an aggregation is already running")
    collecting = Collecting(state.alive, spec, ())
    return collecting, requests(config, collecting)


def requests(config: SessionConfig, state: Collecting) -> dict[ClientId, ChunkRequest]:
    spec = state.spec
    request = ChunkRequest(config.session_id, spec.index, spec.bound, state.current)
    return {client: request for client in sorted(state.alive)}


def server_step(
    config: SessionConfig, state: ServerState, replies: dict[ClientId, object]
) -> tuple[ServerState, dict[ClientId, ChunkRequest] | AggregateResult]:
    """Check and keep the replies to the current chunk; the next requests or the result."""
    if not isinstance(state, Collecting):
        raise ProtocolError("no aggregation is running")
    spec, chunk = state.spec, state.current
    received = {
        client: accept(config, state, client, reply, chunk)
        for client, reply in replies.items()
        if not refused(config, state, client, reply)  # dropped, as if it had left
    }
    state = Collecting(state.alive & frozenset(received), spec, (*state.received, received))
    if len(state.received) < len(spec.chunks) and state.alive:
        return state, requests(config, state)
    return Idle(state.alive), finish(config, state)


def refused(config: SessionConfig, state: Collecting, client: ClientId, reply: object) -> bool:
    """True for an `Abort` from a live client naming this session and aggregation (the client
    refused); ProtocolError for any other `Abort`; False for every other reply."""
    if not isinstance(reply, Abort):
        return False
    if client not in state.alive or (reply.session_id, reply.aggregation) != (
        config.session_id,
        state.spec.index,
    ):
        raise ProtocolError(f"client {client} sent an abort for another aggregation")
    return True


def accept(
    config: SessionConfig, state: Collecting, client: ClientId, reply: object, chunk: ChunkSpec
) -> bytes:
    """The packed vector of `client`'s submission for `chunk`; ProtocolError if it is not one."""
    spec = state.spec
    if client not in state.alive:
        raise ProtocolError(f"reply from client {client}, which is not in this aggregation")
    if not isinstance(reply, ChunkSubmission):
        raise ProtocolError(f"client {client} sent {type(reply).__name__}, expected a submission")
    if (
        reply.session_id != config.session_id
        or reply.aggregation != spec.index
        or reply.sender != client
        or reply.chunk_name != chunk.name
    ):
        raise ProtocolError(f"client {client} sent a submission for another chunk or session")
    values = unpack_uint(reply.data, bits_for(spec.bound), chunk.length)
    if values.size and int(values.max()) > spec.bound:
        raise ProtocolError(f"client {client} sent a value above the bound {spec.bound}")
    return reply.data


def finish(config: SessionConfig, state: Collecting) -> AggregateResult:
    """The sums over the clients still alive (every chunk was collected from each of them)."""
    spec = state.spec
    contributors = tuple(sorted(state.alive))
    dtype = sum_dtype(spec.bound * len(config.roster))
    bits = bits_for(spec.bound)
    sums = {}
    for position, chunk in enumerate(spec.chunks):
        total = np.zeros(chunk.length, dtype=dtype)
        for client in contributors:
            data = state.received[position][client]
            total += unpack_uint(data, bits, chunk.length).astype(dtype)
        sums[chunk.name] = total
    return AggregateResult(spec=spec, sums=sums, contributors=contributors)


class PlaintextServer(ServerProtocol):
    """Keeps the current state and advances it with `server_begin` / `server_step`."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._state: ServerState = Idle(frozenset(config.roster))

    @property
    def state(self) -> str:
        return self._state.NAME

    def begin(self, spec: AggregationSpec) -> dict[ClientId, ChunkRequest]:
        self._state, outgoing = server_begin(self.config, self._state, spec)
        return outgoing

    def handle(
        self, replies: dict[ClientId, object]
    ) -> dict[ClientId, ChunkRequest] | AggregateResult:
        """The next requests or the result; `AggregationAborted` (with the `Abort` notice for
        every live client) on a malformed reply. A client's `Abort` drops that client only."""
        before = self._state
        try:
            self._state, outgoing = server_step(self.config, before, replies)
        except ProtocolError as exc:
            self._state = Aborted(str(exc))
            live = before.alive if isinstance(before, Collecting) else frozenset()
            index = before.spec.index if isinstance(before, Collecting) else -1
            notice = abort_message(self.config.session_id, index, ABORT_AGGREGATION, str(exc))
            notices = {client: notice for client in sorted(live)}
            raise AggregationAborted(str(exc), notices) from exc
        return outgoing


register(
    ProtocolInfo(
        name="plaintext",
        description="insecure reference: the server sees every client's mask",
        secure=False,
        make_server=lambda config, rng: PlaintextServer(config),
        make_client=lambda config, client_id, rng, inputs, identity: PlaintextClient(
            config, client_id, inputs
        ),
        option_names=(),
    )
)
