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
import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ProtocolError

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
        """Answer one server message; raise ProtocolError (and enter 'aborted') to refuse it."""

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
        """Consume the replies of the last round (absent clients dropped out)."""


# --- client state codec ---------------------------------------------------------------------------
# Tagged JSON: exact for None, bool, int, str, float, bytes, tuple, list, set, dicts with any
# scalar keys, SessionConfig, AggregationSpec and ChunkSpec. Never pickle: a state blob read back
# must not be able to run code.

STATE_MAGIC = b"FPST"
STATE_VERSION = 1
# Bounds checked before a saved state is parsed. Real states are far below both: an `additive`
# client of 64 peers saves ~20 KB at depth 13, a `ckks` client ~0.5 MB (its session config, with
# the public context, ~1 MB) at depth 10. A blob over either is refused unparsed, so a hostile one
# (the session config a Flower server sends is a saved state) cannot exhaust memory or recursion.
MAX_STATE_BYTES = 64 << 20
MAX_STATE_DEPTH = 64

# JSON strings, including an unterminated one at the end: each match consumes its text, so the
# scan is linear whatever the quotes and backslashes. Brackets inside strings are not nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.full(256, -1, dtype=np.int32)
_DEPTH_STEP[[ord("["), ord("{")]] = 1


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
    raise TypeError(f"cannot save a {type(value).__name__} in a client state")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ProtocolError("client state: malformed tagged value")
    ((tag, body),) = value.items()
    if tag == "$b":
        return base64.b64decode(body.encode("ascii"), validate=True)
    if tag == "$t":
        return tuple(_from_json(v) for v in body)
    if tag == "$s":
        return {_from_json(v) for v in body}
    if tag == "$d":
        return {_from_json(k): _from_json(v) for k, v in body}
    if tag == "$cfg":
        sid, roster, options = (_from_json(v) for v in body)
        return SessionConfig(sid, roster, options)
    if tag == "$spec":
        index, bound, chunks = body
        return AggregationSpec(index, _from_json(chunks), bound)
    if tag == "$chunk":
        return ChunkSpec(*body)
    raise ProtocolError(f"client state: unknown tag {tag!r}")


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


def _bracket_depth(brackets: bytes) -> int:
    """The deepest running level of a string of `[]{}` bytes (openers +1, closers -1)."""
    deepest, level = 0, 0
    for start in range(0, len(brackets), 1 << 20):
        steps = _DEPTH_STEP[np.frombuffer(brackets[start : start + (1 << 20)], dtype=np.uint8)]
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def _json_depth(text: bytes) -> int:
    """The deepest nesting of arrays and objects in `text`, counted without parsing it.

    Exact for valid JSON; on invalid JSON never below the depth a parser reaches before it fails
    (up to the first error the tokens agree), so checking it first bounds `json.loads`.
    """
    return _bracket_depth(_JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKET))


def _nested_deeper_than(text: bytes, limit: int) -> bool:
    # Fast path: brackets inside strings counted too can only overstate the depth (saved states
    # rarely have any: base64 has none); strings are stripped only when that bound is over.
    if _bracket_depth(text.translate(None, _NOT_BRACKET)) <= limit:
        return False
    return _json_depth(text) > limit


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
