"""The contract every secure-sum protocol implements.

A protocol is a pair of state machines. The server starts one *aggregation* with `begin(spec)`
and answers every batch of client replies with either the next messages to send or the final
`AggregateResult`. Each client answers each server message with one message (or None). A session
(`SessionConfig`) may run several aggregations in a row (one per decoder block in iterative mode);
each has its own `index`, and protocols that mask must give each index its own PRG counter range.

Vectors travel in chunks (one per prunable layer): the server asks for a chunk, the client reads
it from its `InputProvider` and submits it. Memory per client is O(chunk).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..errors import ProtocolError
from .json_depth import json_depth as _json_depth  # noqa: F401 (tests import it from here)
from .json_depth import nested_deeper_than as _nested_deeper_than
from .messages import Abort

ClientId = int


@dataclass(frozen=True)
class ChunkSpec:
    """One named slice of the aggregated vector (normally one layer's flattened mask)."""

    name: str
    length: int
    offset: int  # index of the chunk's first entry within the aggregation's vector

    def __post_init__(self) -> None:
        if self.length < 0 or self.offset < 0:
            raise ValueError("chunk length and offset must be non-negative")


@dataclass(frozen=True)
class AggregationSpec:
    """What one aggregation sums: the chunks in order and the bound of every client entry."""

    index: int
    chunks: tuple[ChunkSpec, ...]
    bound: int  # every client entry lies in [0, bound]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError("aggregation index must be non-negative")
        if self.bound < 1:
            raise ValueError("bound must be at least 1")
        expected = 0
        names = set()
        for chunk in self.chunks:
            if chunk.offset != expected:
                raise ValueError(
                    f"chunk {chunk.name!r} has offset {chunk.offset}, expected {expected}"
                )
            if chunk.name in names:
                raise ValueError(f"duplicate chunk name {chunk.name!r}")
            names.add(chunk.name)
            expected += chunk.length

    @property
    def total_length(self) -> int:
        return sum(chunk.length for chunk in self.chunks)

    def chunk(self, name: str) -> ChunkSpec:
        for chunk in self.chunks:
            if chunk.name == name:
                return chunk
        raise KeyError(name)

    @classmethod
    def from_lengths(cls, index: int, lengths: Mapping[str, int], bound: int) -> AggregationSpec:
        chunks, offset = [], 0
        for name, length in lengths.items():
            chunks.append(ChunkSpec(name, int(length), offset))
            offset += int(length)
        return cls(index, tuple(chunks), bound)


@dataclass(frozen=True)
class SessionConfig:
    """Fixed for a whole session: its id, the roster of client ids, protocol options."""

    session_id: bytes
    roster: tuple[ClientId, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.session_id) != 32:
            raise ValueError("session_id must be 32 bytes")
        if len(set(self.roster)) != len(self.roster):
            raise ValueError("roster has duplicate client ids")
        if not self.roster:
            raise ValueError("roster is empty")


# Option keys with this prefix are local to one party (e.g. the server's channel to a separate key
# authority): they are not part of what parties agree on and are left out of `config_digest`.
LOCAL_OPTION_PREFIX = "local."

CONFIG_DIGEST_LABEL = b"fedprllm-secure/session-config/v1\x00"


def config_digest(config: SessionConfig) -> bytes:
    """SHA-256 of the canonical encoding of everything the parties of a session agree on.

    Covers the session id, the roster and every option except `LOCAL_OPTION_PREFIX` ones (option
    keys sorted; values through the state codec's tagged JSON, so bytes, ints and nested maps are
    exact). Protocols bind it into every signature and key derivation in place of the bare session
    id: two parties shown different configs (another public key, roster, threshold or cohort)
    derive different bindings, and every cross-party check between them fails.
    """
    options = sorted(
        (str(key), value)
        for key, value in config.options.items()
        if not str(key).startswith(LOCAL_OPTION_PREFIX)
    )
    body = json.dumps(
        {
            "session_id": config.session_id.hex(),
            "roster": list(config.roster),
            "options": [[key, _to_json(value)] for key, value in options],
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(CONFIG_DIGEST_LABEL + body.encode("utf-8")).digest()


@dataclass
class AggregateResult:
    """The only thing the server learns: per-chunk sums over `contributors`."""

    spec: AggregationSpec
    sums: dict[str, np.ndarray]
    contributors: tuple[ClientId, ...]


# Reads the client's vector for one chunk of aggregation `index`: chunk.length integers.
InputProvider = Callable[[int, ChunkSpec], np.ndarray]


def sum_dtype(max_sum: int) -> np.dtype:
    """The smallest unsigned dtype holding every value in [0, max_sum]; never overflows."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_sum <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ProtocolError(f"sums up to {max_sum} do not fit in 64 bits")


def read_checked_input(
    provider: InputProvider, index: int, chunk: ChunkSpec, bound: int
) -> np.ndarray:
    """Call the provider and refuse a vector of the wrong length or outside [0, bound]."""
    vector = np.asarray(provider(index, chunk)).reshape(-1)
    if vector.shape[0] != chunk.length:
        raise ProtocolError(
            f"input for chunk {chunk.name!r} has {vector.shape[0]} entries, expected {chunk.length}"
        )
    if vector.dtype == np.bool_:
        vector = vector.astype(np.uint8)
    if not np.issubdtype(vector.dtype, np.integer):
        raise ProtocolError(f"input for chunk {chunk.name!r} is not integer ({vector.dtype})")
    if vector.size and (int(vector.min()) < 0 or int(vector.max()) > bound):
        raise ProtocolError(f"input for chunk {chunk.name!r} lies outside [0, {bound}]")
    return vector


class ClientRefused(ProtocolError):
    """A client refused a message and is now aborted; `reply` is the `Abort` it sends the server
    (a transport that can deliver it does; the server then drops that client, as if it had left)."""

    def __init__(self, reason: str, reply: Abort) -> None:
        super().__init__(reason)
        self.reply = reply


class AggregationAborted(ProtocolError):
    """The server aborted the aggregation and is now aborted; `notices` is the `Abort` for each
    client it was talking to (a driver that can deliver them does, so every client stops too)."""

    def __init__(self, reason: str, notices: Mapping[ClientId, Abort]) -> None:
        super().__init__(reason)
        self.notices = dict(notices)


class ClientProtocol(ABC):
    """One client's side of one session. `state` names the current round.

    A client whose process does not outlive one message (a Flower ClientApp) saves itself with
    `to_state()` and comes back with `type(client).from_state(data, inputs, rng)`. The bytes hold
    the client's secrets: they must stay on the client's node. Protocols that cannot be saved keep
    the default, which raises NotImplementedError.
    """

    client_id: ClientId

    @property
    @abstractmethod
    def state(self) -> str: ...

    @abstractmethod
    def handle(self, message: Any) -> Any | None:
        """Answer one server message; raise ProtocolError (and enter 'aborted') to refuse it,
        preferably `ClientRefused` carrying the `Abort` to send."""

    def to_state(self) -> bytes:
        """Everything the client needs to resume, except its InputProvider and RandomSource."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def from_state(cls, data: bytes, inputs: InputProvider, rng: Any) -> ClientProtocol:
        """The client saved by `to_state`, reading its vectors from `inputs` and drawing fresh
        randomness from `rng` (a RandomSource). ProtocolError on bytes it did not write."""
        raise NotImplementedError(f"{cls.__name__} cannot be restored")


class ServerProtocol(ABC):
    """The server's side of one session."""

    @property
    @abstractmethod
    def state(self) -> str: ...

    @abstractmethod
    def begin(self, spec: AggregationSpec) -> dict[ClientId, Any]:
        """Start one aggregation; returns the first messages to send, by recipient."""

    @abstractmethod
    def handle(self, replies: dict[ClientId, Any]) -> dict[ClientId, Any] | AggregateResult:
        """Consume the replies of the last round (absent clients dropped out). An `Abort` reply
        drops its sender; raise ProtocolError (preferably `AggregationAborted`) to abort."""


# --- client state codec ---------------------------------------------------------------------------
# Tagged JSON: exact for None, bool, int, str, float, bytes, tuple, list, set, dicts with any
# scalar keys, SessionConfig, AggregationSpec, ChunkSpec and the frozen dataclasses registered
# with `state_type`. Never pickle, never a class path: a state blob read back must not be able to
# run code.

STATE_MAGIC = b"FPST"
STATE_VERSION = 1
# Bounds checked before a saved state is parsed. Real states are far below both: an `additive`
# client of 64 peers saves ~20 KB at depth 24, a `ckks` client ~0.5 MB (its session config, with
# the public context, ~1 MB) at depth 10. A blob over either is refused unparsed, so a hostile one
# (the session config a Flower server sends is a saved state) cannot exhaust memory or recursion.
MAX_STATE_BYTES = 64 << 20
MAX_STATE_DEPTH = 64


_STATE_TYPES: dict[str, type] = {}  # name -> frozen dataclass (the only classes a blob can name)
_STATE_NAMES: dict[type, str] = {}
_T = TypeVar("_T")


def state_type(name: str) -> Callable[[type[_T]], type[_T]]:
    """Register a frozen dataclass for the state codec under `name` (unique; e.g. "additive/...").

    Saved as its registered name and its fields by name; restored only through this registry,
    never by importing a class path, so a blob can build nothing but registered states. Inside a
    registered dataclass every saved set comes back as a frozenset. Field values must themselves
    be encodable (bytes, not key objects). Protocols save a whole state with `save_state`.
    """

    def register(cls: type[_T]) -> type[_T]:
        params = getattr(cls, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise TypeError(f"{cls.__name__} must be a frozen dataclass to be a saved state")
        if _STATE_TYPES.get(name, cls) is not cls or _STATE_NAMES.get(cls, name) != name:
            raise ValueError(f"state type {name!r} registered twice")
        _STATE_TYPES[name] = cls
        _STATE_NAMES[cls] = name
        return cls

    return register


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"$t": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$s": [_to_json(v) for v in sorted(value)]}
    if isinstance(value, Mapping):
        return {"$d": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if isinstance(value, SessionConfig):
        return {
            "$cfg": [_to_json(value.session_id), _to_json(value.roster), _to_json(value.options)]
        }
    if isinstance(value, AggregationSpec):
        return {"$spec": [value.index, value.bound, _to_json(value.chunks)]}
    if isinstance(value, ChunkSpec):
        return {"$chunk": [value.name, value.length, value.offset]}
    if type(value) in _STATE_NAMES:
        names = [f.name for f in dataclasses.fields(value)]
        body = [[n, _to_json(getattr(value, n))] for n in names]
        return {"$dc": [_STATE_NAMES[type(value)], body]}
    raise TypeError(f"cannot save a {type(value).__name__} in a client state")


def _from_json(value: Any, frozen: bool = False) -> Any:
    if isinstance(value, list):
        return [_from_json(v, frozen) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ProtocolError("client state: malformed tagged value")
    ((tag, body),) = value.items()
    if tag == "$b":
        return base64.b64decode(body.encode("ascii"), validate=True)
    if tag == "$t":
        return tuple(_from_json(v, frozen) for v in body)
    if tag == "$s":
        items = {_from_json(v, frozen) for v in body}
        return frozenset(items) if frozen else items
    if tag == "$d":
        return {_from_json(k, frozen): _from_json(v, frozen) for k, v in body}
    if tag == "$cfg":
        sid, roster, options = (_from_json(v) for v in body)
        return SessionConfig(sid, roster, options)
    if tag == "$spec":
        index, bound, chunks = body
        return AggregationSpec(index, _from_json(chunks), bound)
    if tag == "$chunk":
        return ChunkSpec(*body)
    if tag == "$dc":
        return _state_from_json(*body)
    raise ProtocolError(f"client state: unknown tag {tag!r}")


def _state_from_json(name: str, body: list) -> Any:
    """The registered frozen dataclass `name` with exactly its fields; ProtocolError otherwise."""
    cls = _STATE_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"client state: unknown state type {name!r}")
    values = {str(n): _from_json(v, frozen=True) for n, v in body}
    if len(values) != len(body) or set(values) != {f.name for f in dataclasses.fields(cls)}:
        raise ProtocolError(f"client state: the fields of {name!r} do not match its type")
    return cls(**values)


def encode_state(protocol: str, fields: Mapping[str, Any]) -> bytes:
    """Serialize a client's fields under the protocol's name (checked by `decode_state`)."""
    body = json.dumps(
        {"protocol": protocol, "fields": _to_json(dict(fields))}, separators=(",", ":")
    )
    data = STATE_MAGIC + bytes([STATE_VERSION]) + body.encode("utf-8")
    if len(data) > MAX_STATE_BYTES:
        raise ProtocolError(
            f"a {protocol} state of {len(data)} bytes exceeds the {MAX_STATE_BYTES} a restore reads"
        )
    return data


def decode_state(protocol: str, data: bytes) -> dict[str, Any]:
    """The fields saved by `encode_state(protocol, ...)`; ProtocolError on anything else.

    Sizes are bounded before anything is allocated: at most `MAX_STATE_BYTES` bytes, nested at
    most `MAX_STATE_DEPTH` deep.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError("a saved client state must be bytes")
    if len(data) > MAX_STATE_BYTES:
        raise ProtocolError(
            f"saved client state has {len(data)} bytes, more than the {MAX_STATE_BYTES} allowed"
        )
    data = bytes(data)
    if data[:4] != STATE_MAGIC or len(data) < 5 or data[4] != STATE_VERSION:
        raise ProtocolError("not a saved client state of this version")
    if _nested_deeper_than(data[5:], MAX_STATE_DEPTH):
        raise ProtocolError(f"saved client state is nested more than {MAX_STATE_DEPTH} deep")
    try:
        raw = json.loads(data[5:].decode("utf-8"))
        if raw.get("protocol") != protocol:
            raise ProtocolError(
                f"saved client state is of protocol {raw.get('protocol')!r}, not {protocol!r}"
            )
        fields = _from_json(raw["fields"])
    except ProtocolError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        raise ProtocolError(f"saved client state is corrupt: {exc}") from exc
    if not isinstance(fields, dict):
        raise ProtocolError("saved client state is corrupt")
    return fields


def save_state(protocol: str, state: Any) -> bytes:
    """`encode_state` of one registered frozen state (`state_type`): a client's whole state."""
    if type(state) not in _STATE_NAMES:
        raise TypeError(f"{type(state).__name__} is not a registered state type")
    return encode_state(protocol, {"state": state})


def load_state(protocol: str, data: bytes, kind: type[_T] | tuple[type, ...]) -> _T:
    """The state `save_state(protocol, ...)` wrote, refused (ProtocolError) unless an instance
    of `kind` (the protocol's own state types): a blob cannot substitute another protocol's."""
    fields = decode_state(protocol, data)
    state = fields.get("state")
    if set(fields) != {"state"} or not isinstance(state, kind):
        raise ProtocolError(f"saved {protocol} client state holds no {protocol} state")
    return state  # type: ignore[return-value]
