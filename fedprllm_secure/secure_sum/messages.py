"""A versioned, strict bytes codec for protocol messages.

Messages are frozen dataclasses registered with `@message(tag, round_name)`. Field types allowed:
`int` (any size, signed), `bool`, `bytes`, `str`, another dataclass (nested, encoded without a
tag), and `tuple[T, ...]` of those. Encoding:

    b"FPSM" | version (1 byte) | tag (length-prefixed utf-8) | fields in declaration order

where every variable-size item is prefixed by its length as 4 bytes big-endian, an int is its
minimal two's-complement big-endian bytes, a bool is one byte 0/1, a tuple is a 4-byte count then
its items. `decode` accepts exactly what `encode` produces: any other byte string raises
`MessageDecodeError` and nothing else.

Every length and count is checked against the bytes that remain before anything is allocated: a
count is refused unless that many items, each at its smallest encoding, fit in what is left (an
item type that can encode to no bytes, a dataclass without fields, cannot be a tuple's item). Decoding allocates O(message size), whatever the prefixes say. The codec bounds only
the encoding: a large but well-formed value (an int of 2^50, a ChunkSpec of that length) decodes,
and the protocol handler that acts on it must bound it.
"""

from __future__ import annotations

import dataclasses
import struct
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import MessageDecodeError

MAGIC = b"FPSM"
VERSION = 1
MAX_FIELD_BYTES = 1 << 31

_MESSAGES: dict[str, type] = {}
_HINTS: dict[type, list[tuple[str, Any]]] = {}

T = TypeVar("T")


def message(tag: str, round_name: str | None = None) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a message with a unique wire tag.

    `round_name` names the protocol round the message belongs to (dropout plans refer to it).
    """

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if tag in _MESSAGES and _MESSAGES[tag] is not cls:
            raise ValueError(f"message tag {tag!r} registered twice")
        _MESSAGES[tag] = cls
        cls.TAG = tag  # type: ignore[attr-defined]
        cls.ROUND = round_name or tag  # type: ignore[attr-defined]
        return cls

    return register


def tag_of(msg: Any) -> str:
    return type(msg).TAG  # type: ignore[no-any-return]


def round_of(msg: Any) -> str:
    return type(msg).ROUND  # type: ignore[no-any-return]


def round_names(protocol: str) -> list[str]:
    """The round names of a protocol's messages (tags are "<protocol>/<message>")."""
    classes = [cls for tag, cls in _MESSAGES.items() if tag.startswith(protocol + "/")]
    return sorted({cls.ROUND for cls in classes})  # type: ignore[attr-defined]


def _fields(cls: type) -> list[tuple[str, Any]]:
    if cls not in _HINTS:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
    return _HINTS[cls]


_MIN_SIZES: dict[Any, int] = {}


def _min_size(kind: Any) -> int:
    """The fewest bytes an encoded value of `kind` takes."""
    if kind not in _MIN_SIZES:
        if kind is bool:
            size = 1
        elif kind is int:
            size = 5  # length prefix + at least one byte
        elif kind in (bytes, str) or typing.get_origin(kind) is tuple:
            size = 4
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            size = sum(_min_size(field_kind) for _name, field_kind in _fields(kind))
        else:
            raise MessageDecodeError(f"unsupported field type {kind!r}")
        _MIN_SIZES[kind] = size
    return _MIN_SIZES[kind]


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _encode_value(value: Any, kind: Any, out: list[bytes]) -> None:
    if kind is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected bool, got {type(value).__name__}")
        out.append(b"\x01" if value else b"\x00")
    elif kind is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"expected int, got {type(value).__name__}")
        raw = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
        out += [_u32(len(raw)), raw]
    elif kind is bytes:
        raw = bytes(value)
        out += [_u32(len(raw)), raw]
    elif kind is str:
        raw = value.encode("utf-8")
        out += [_u32(len(raw)), raw]
    elif typing.get_origin(kind) is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        if _min_size(item_kind) == 0:
            raise TypeError(f"tuple items of type {item_kind!r} may encode to no bytes")
        out.append(_u32(len(value)))
        for item in value:
            _encode_value(item, item_kind, out)
    elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        for name, field_kind in _fields(kind):
            _encode_value(getattr(value, name), field_kind, out)
    else:
        raise TypeError(f"unsupported field type {kind!r}")


def encode(msg: Any) -> bytes:
    """The wire bytes of a registered message."""
    cls = type(msg)
    if getattr(cls, "TAG", None) not in _MESSAGES:
        raise TypeError(f"{cls.__name__} is not a registered message")
    out: list[bytes] = [MAGIC, bytes([VERSION])]
    _encode_value(cls.TAG, str, out)
    _encode_value(msg, cls, out)
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MessageDecodeError("message is truncated")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def length(self) -> int:
        n = struct.unpack(">I", self.take(4))[0]
        if n > len(self.data) - self.pos:
            raise MessageDecodeError("a length prefix runs past the end of the message")
        return int(n)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def _decode_value(reader: _Reader, kind: Any) -> Any:
    if kind is bool:
        raw = reader.take(1)
        if raw not in (b"\x00", b"\x01"):
            raise MessageDecodeError("a bool field is neither 0 nor 1")
        return raw == b"\x01"
    if kind is int:
        raw = reader.take(reader.length())
        if not raw:
            raise MessageDecodeError("an int field is empty")
        value = int.from_bytes(raw, "big", signed=True)
        if len(raw) != (value.bit_length() + 8) // 8:
            raise MessageDecodeError("an int field is not minimally encoded")
        return value
    if kind is bytes:
        return reader.take(reader.length())
    if kind is str:
        try:
            return reader.take(reader.length()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageDecodeError("a text field is not valid utf-8") from exc
    if typing.get_origin(kind) is tuple:
        (item_kind, _ellipsis) = typing.get_args(kind)
        count = struct.unpack(">I", reader.take(4))[0]
        item_size = _min_size(item_kind)
        if item_size == 0:  # any count would be "valid": the decoder would build them all
            raise MessageDecodeError(f"tuple items of type {item_kind!r} may encode to no bytes")
        if count * item_size > reader.remaining:
            raise MessageDecodeError("a list count exceeds the message size")
        return tuple(_decode_value(reader, item_kind) for _ in range(count))
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        values = {name: _decode_value(reader, field_kind) for name, field_kind in _fields(kind)}
        try:
            return kind(**values)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise MessageDecodeError(f"invalid {kind.__name__}: {exc}") from exc
    raise MessageDecodeError(f"unsupported field type {kind!r}")


def decode(data: bytes, expected: type | tuple[type, ...] | None = None) -> Any:
    """Parse wire bytes; raise MessageDecodeError unless they are exactly one valid message.

    With `expected`, a message of another type is refused too.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageDecodeError("a message must be bytes")
    reader = _Reader(bytes(data))
    if reader.take(4) != MAGIC:
        raise MessageDecodeError("not a fedprllm-secure message (bad magic)")
    version = reader.take(1)[0]
    if version != VERSION:
        raise MessageDecodeError(f"unsupported message version {version}")
    tag = _decode_value(reader, str)
    cls = _MESSAGES.get(tag)
    if cls is None:
        raise MessageDecodeError(f"unknown message type {tag!r}")
    if expected is not None and not issubclass(cls, expected):
        raise MessageDecodeError(f"unexpected message type {tag!r}")
    msg = _decode_value(reader, cls)
    if reader.remaining:
        raise MessageDecodeError("trailing bytes after the message")
    return msg


# --- the abort message, common to every protocol ----------------------------------------------------

ABORT_REFUSED = "refused"  # a client refused a server message (it is now aborted for the session)
ABORT_INPUT = "input"  # a client could not read a valid input vector (it is now aborted)
ABORT_AGGREGATION = "aggregation-aborted"  # the server aborted the aggregation, for everyone
MAX_ABORT_TEXT = 500  # characters of `text` an abort carries; longer reasons are cut


@message("secure-sum/abort", "abort")
@dataclasses.dataclass(frozen=True)
class Abort:
    """One party stops: a client refusing a message (the server drops that client, as if it had
    left: `ClientRefused.reply`), or the server aborting an aggregation (every client stops:
    `AggregationAborted.notices`). `aggregation` is the running index (-1 if none); `code` one of
    the ABORT_* names (receivers act the same on any code); `text` a one-line reason, no secret."""

    session_id: bytes
    aggregation: int
    code: str
    text: str


def abort_message(session_id: bytes, aggregation: int, code: str, text: str) -> Abort:
    """An `Abort` whose text is one line of at most MAX_ABORT_TEXT characters."""
    line = " ".join(str(text).split())
    return Abort(session_id, aggregation, code, line[:MAX_ABORT_TEXT])
