"""The wire format of protocols/additive.md (section 1 codec, section 4 message fields), from the spec.

`decode(wire)` returns `(tag, fields)` with nested records as dicts and tuples as lists, and
checks that re-encoding gives the same bytes (so every length prefix and every minimal integer
is as the spec says). No import from `fedprllm_secure`.
"""

from __future__ import annotations

import struct
from typing import Any

MAGIC, VERSION = b"FPSM", 1

# field types: "i" int, "b" bytes, "s" str, ("t", element) tuple, a list of (name, type) a record
CHUNK = [("name", "s"), ("length", "i"), ("offset", "i")]
SPEC = [("index", "i"), ("chunks", ("t", CHUNK)), ("bound", "i")]
SIGNED_KEYS = [("owner", "i"), ("cipher_public", "b"), ("signature", "b")]
SIGNED_MASK_KEY = [("owner", "i"), ("mask_public", "b"), ("signature", "b")]
SEALED = [("sender", "i"), ("recipient", "i"), ("ciphertext", "b")]
SIGNED_VIEW = [("owner", "i"), ("view", ("t", "i")), ("signature", "b")]
SIGNATURE = [("signer", "i"), ("signature", "b")]
SHARE = [("owner", "i"), ("value", "b")]
HEAD = [("session_id", "b"), ("aggregation", "i")]

MESSAGES: dict[str, list] = {
    "additive/advertise-request": HEAD + [("graph_seed", "b")],
    "additive/advertise-keys": [("session_id", "b"), ("keys", SIGNED_KEYS)],
    "additive/share-keys-request": HEAD + [("spec", SPEC), ("keys", ("t", SIGNED_KEYS))],
    "additive/share-keys": HEAD
    + [
        ("sender", "i"),
        ("mask_key", SIGNED_MASK_KEY),
        ("commitment", "b"),
        ("sealed", ("t", SEALED)),
    ],
    "additive/masked-input-request": HEAD
    + [("chunk_index", "i"), ("mask_keys", ("t", SIGNED_MASK_KEY)), ("sealed", ("t", SEALED))],
    "additive/masked-input": HEAD
    + [("sender", "i"), ("chunk_index", "i"), ("data", "b"), ("view", ("t", SIGNED_VIEW))],
    "additive/consistency-request": HEAD + [("survivors", ("t", "i"))],
    "additive/consistency-signature": HEAD + [("signature", SIGNATURE)],
    "additive/unmask-request": HEAD
    + [
        ("survivors", ("t", "i")),
        ("dead", ("t", "i")),
        ("signatures", ("t", SIGNATURE)),
        ("views", ("t", SIGNED_VIEW)),
    ],
    "additive/unmask-shares": HEAD
    + [("sender", "i"), ("self_mask_shares", ("t", SHARE)), ("key_shares", ("t", SHARE))],
}


def decode(wire: bytes) -> tuple[str, dict[str, Any]]:
    """(tag, fields) of one message; AssertionError unless the bytes are exactly the encoding."""
    reader = _Reader(wire)
    assert reader.take(4) == MAGIC, "bad magic"
    assert reader.take(1)[0] == VERSION, "bad version"
    tag = reader.value("s")
    assert tag in MESSAGES, f"unknown tag {tag!r}"
    fields = reader.value(MESSAGES[tag])
    assert reader.pos == len(wire), "trailing bytes"
    assert encode(tag, fields) == wire, "not the canonical encoding"
    return tag, fields


def encode(tag: str, fields: dict[str, Any]) -> bytes:
    return MAGIC + bytes([VERSION]) + _encode("s", tag) + _encode(MESSAGES[tag], fields)


def _encode(kind: Any, value: Any) -> bytes:
    if kind == "i":  # section 1: (bit_length + 8) // 8 bytes, big-endian two's complement
        size = (value.bit_length() + 8) // 8
        return struct.pack(">I", size) + value.to_bytes(size, "big", signed=True)
    if kind in ("b", "s"):
        raw = value.encode("utf-8") if kind == "s" else value
        return struct.pack(">I", len(raw)) + raw
    if isinstance(kind, tuple):
        return struct.pack(">I", len(value)) + b"".join(_encode(kind[1], v) for v in value)
    return b"".join(_encode(k, value[name]) for name, k in kind)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated"
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def length(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def value(self, kind: Any) -> Any:
        if kind == "i":
            return int.from_bytes(self.take(self.length()), "big", signed=True)
        if kind == "b":
            return self.take(self.length())
        if kind == "s":
            return self.take(self.length()).decode("utf-8")
        if isinstance(kind, tuple):
            return [self.value(kind[1]) for _ in range(self.length())]
        return {name: self.value(k) for name, k in kind}
